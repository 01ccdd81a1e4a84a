"""Run-scoped tokens: made at setup, private, kept across a resume, and who each one stands for."""

from __future__ import annotations

import json

import pytest

from coordstore.errors import InputError

from coordfixtures import agent_run
from orchestrator.coordination.tokens import TokenBook, TokenRefused, bearer, ensure_tokens, read_tokens, token_file
from orchestrator.rundir import AgentSpec

pytestmark = pytest.mark.usefixtures("no_git_identity")


def test_setup_makes_one_private_token_per_agent_and_a_resume_keeps_them(tmp_path):
    spec, paths = agent_run(tmp_path)
    f = token_file(paths)
    assert f.stat().st_mode & 0o777 == 0o600
    first = read_tokens(paths)
    assert sorted(first) == ["coordinator", "w1", "w2"] and len(set(first.values())) == 3
    assert all(t.startswith("orch.r1.") and len(t) > 30 for t in first.values())
    assert ensure_tokens(paths, spec) == first  # a resume: the same tokens
    grown = spec.model_copy(update={"agents": [*spec.agents, AgentSpec(id="w3")]})
    again = ensure_tokens(paths, grown)
    assert {k: again[k] for k in first} == first and again["w3"].startswith("orch.r1.")
    assert json.loads(f.read_text())["tokens"] == again and f.stat().st_mode & 0o777 == 0o600


def test_a_damaged_token_file_is_named_and_left_alone(tmp_path):
    spec, paths = agent_run(tmp_path)
    token_file(paths).write_text('{"tokens": ["not", "a", "map"]}')
    with pytest.raises(InputError, match="coordination.json: key 'tokens' must map agent ids to token strings"):
        ensure_tokens(paths, spec)
    assert token_file(paths).read_text() == '{"tokens": ["not", "a", "map"]}'


def test_who_a_token_stands_for():
    book = TokenBook("r1", {"w1": "orch.r1.secret-one", "w2": "orch.r1.secret-two"})
    assert book.agent_of("orch.r1.secret-two") == "w2"
    for token, why in [(None, "no token"), ("", "no token"), ("secret-one", "not an orch coordination token"),
                       ("orch.r2.secret-one", "the token belongs to run r2, not r1"),
                       ("orch.r1.secret-three", "the token is not one of run r1's")]:
        with pytest.raises(TokenRefused, match=why):
            book.agent_of(token)
    dotted = TokenBook("exp.v.r1", {"w1": "orch.exp.v.r1.s"})  # run ids may hold dots
    assert dotted.agent_of("orch.exp.v.r1.s") == "w1"


def test_bearer_headers():
    assert bearer("Bearer abc") == "abc" and bearer("bearer  abc ") == "abc"
    assert bearer(None) is None and bearer("Basic abc") is None and bearer("Bearer") is None
