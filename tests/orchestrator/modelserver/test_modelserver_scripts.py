"""The model server's scripts: ``file`` (errors naming the file and key), ``sim`` (its edits run
for real in a git repository, its faults served over HTTP) and ``replay`` (a real commit
reproduced by running the served tool call); the task named in a prompt found in a graph."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import anthropic
import pytest

from coordstore.errors import InputError
from coordstore.models import Task
from gitfixtures import GIT_ID, git, make_repo, write
from modelserver_helpers import BASH, after_tools, anth, is_transport_error, script_file
from orchestrator.modelserver import ModelServer, session_url
from orchestrator.modelserver.scripts import FileScript
from orchestrator.modelserver.tasksource import GraphTasks


# ---------------------------------------------------------------- file scripts
def test_file_script_errors_name_the_file_and_key(tmp_path):
    bad = [({"turns": [{"bash": 3}]}, "turns.0.bash"),
           ([{"text": "x", "fault": {"kind": "flood"}}], "turns.0.fault.kind"),
           ([{"txt": "x"}], "turns.0.txt"),
           ([{"fault": {"kind": "rate_limit", "retry_after": -1}}], "turns.0.fault.retry_after"),
           ([], "non-empty list")]
    for i, (data, where) in enumerate(bad):
        p = script_file(tmp_path, data, f"bad{i}.json")
        with pytest.raises(InputError) as e:
            FileScript.load(p)
        assert str(p) in str(e.value) and where in str(e.value), str(e.value)
    (tmp_path / "broken.yaml").write_text("- [unclosed\n")
    with pytest.raises(InputError, match="broken.yaml: not valid YAML"):
        FileScript.load(tmp_path / "broken.yaml")
    with pytest.raises(InputError, match="not sim, replay, nor an existing script file"):
        ModelServer(str(tmp_path / "missing.yaml"))


def test_fault_only_turn_attaches_to_the_next(tmp_path):
    s = FileScript.from_data([{"fault": "rate_limit"}, {"bash": "a"}, "end", {"fault": "hang"}], "x")
    assert [(t.fault.kind if t.fault else None, [c.input["command"] for c in t.tool_calls], t.text) for t in s.turns] == \
        [("rate_limit", ["a"], ""), (None, [], "end"), ("hang", [], "Done.")]


# ---------------------------------------------------------------- sim and replay against real git
def run_conversation(c: anthropic.Anthropic, cwd: Path, limit: int = 30) -> list:
    """Drive a conversation the way an agent CLI does: run every Bash call in ``cwd``, send the results."""
    msgs: list[dict] = [{"role": "user", "content": "Do the task."}]
    replies = []
    for _ in range(limit):
        m = c.messages.create(model="m", max_tokens=100, messages=msgs, tools=BASH)
        replies.append(m)
        if m.stop_reason != "tool_use":
            return replies
        results = []
        for b in m.content:
            if b.type == "tool_use":
                p = subprocess.run(["bash", "-c", b.input["command"]], cwd=cwd, capture_output=True, text=True, env={**os.environ, **GIT_ID})
                results.append({"type": "tool_result", "tool_use_id": b.id, "content": (p.stdout + p.stderr) or "(no output)",
                                "is_error": p.returncode != 0})
        msgs += [{"role": "assistant", "content": [b.model_dump(include={"type", "id", "name", "input", "text"}) for b in m.content]},
                 {"role": "user", "content": results}]
    raise AssertionError(f"no end after {limit} turns")


def test_sim_script_makes_the_sim_kinds_edits_with_its_tokens(serve, tmp_path):
    from agents.kinds.simplan import SimOptions, edit_text, make_plan

    repo = make_repo(tmp_path / "repo", {"src/a.py": "x = 1\n# orch-slot: t1\n", "README.md": "hi\n"})
    task = Task(id="t1", title="Add the thing", file_scope=["src/a.py", "docs/"], time_estimate_ms=120_000)
    srv = serve("sim")
    base = session_url(srv.url, task=task, seed=7, attempt=1, worktree=str(repo))
    replies = run_conversation(anth(srv, base=base), repo)
    plan = make_plan(task, 7, 1, 1.0, SimOptions())
    assert len(replies) == len(plan.steps) + 1 and replies[-1].stop_reason == "end_turn"
    new_a, _ = edit_text("x = 1\n# orch-slot: t1\n", "src/a.py", task, plan.digest)
    assert (repo / "src/a.py").read_text() == new_a and "# task t1: Add the thing [sim" in new_a
    docs = list((repo / "docs").iterdir())
    assert [p.name for p in docs] == ["t1.md"] and docs[0].read_text() == edit_text(None, "docs/t1.md", task, plan.digest)[0]
    served = [r for r in srv.requests if r["tool_calls"]]
    assert [(r["usage"]["in"], r["usage"]["out"], r["usage"]["cached"], r["usage"]["thinking"]) for r in served] == \
        [s.tokens for s in plan.steps]
    assert {r["session"] for r in srv.requests} == {"t1.1"} and {r["task"] for r in srv.requests} == {"t1"}


def test_sim_faults_become_http_faults(serve, tmp_path):
    """The sim plan's rate limit is served as one 429 with its retry-after, and p_stall as a hang."""
    from agents.kinds.simplan import SimOptions, make_plan

    task = Task(id="t9", title="x", time_estimate_ms=300_000, meta={"sim": {"p_rate_limit": 1.0, "retry_after_s": 4}})
    plan = make_plan(task, 1, 1, 0.5, SimOptions(p_rate_limit=1.0, retry_after_s=4))
    srv = serve("sim")
    c = anth(srv, base=session_url(srv.url, task=task, seed=1, attempt=1, time_scale=0.5, worktree=str(tmp_path)))
    k = plan.rate_limit_step
    with pytest.raises(anthropic.RateLimitError) as e:
        c.messages.create(model="m", max_tokens=10, messages=after_tools(k), tools=BASH)
    assert e.value.response.headers["retry-after"] == "2"  # 4 agent seconds x time scale 0.5
    assert c.messages.create(model="m", max_tokens=10, messages=after_tools(k), tools=BASH).stop_reason == "tool_use"

    stall = Task(id="t8", title="y", time_estimate_ms=300_000, meta={"sim": {"p_stall": 1.0}})
    c2 = anth(srv, base=session_url(srv.url, task=stall, seed=1, worktree=str(tmp_path)), timeout=0.5)
    splan = make_plan(stall, 1, 1, 1.0, SimOptions(p_stall=1.0))
    with pytest.raises(Exception) as e2:
        c2.messages.create(model="m", max_tokens=10, messages=after_tools(splan.fault_step), tools=BASH)
    assert is_transport_error(e2.value)
    assert srv.requests[-1]["fault"] == "hang"


def test_replay_script_reproduces_a_real_commit(serve, tmp_path):
    repo = make_repo(tmp_path / "repo", {"a.py": "one\ntwo\nthree\n", "gone.txt": "bye\n", "keep.txt": "k\n"})
    write(repo, {"a.py": "one\n2\nthree\nfour\n", "gone.txt": None, "new/b.bin": bytes(range(256)),
                 "noeol.txt": "no newline at the end", "ORCH_EOF.txt": "ORCH_EOF\n"})
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "the change\n\nwith a body")
    target = git(repo, "rev-parse", "HEAD")
    wt = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "--detach", str(wt), "HEAD^")
    srv = serve("replay")
    base = session_url(srv.url, task={"id": "r1", "title": "the change", "meta": {"commit": target}}, worktree=str(wt))
    replies = run_conversation(anth(srv, base=base), wt)
    assert [r.stop_reason for r in replies] == ["tool_use", "end_turn"]
    assert "git apply" in replies[0].content[1].input["command"]
    git(wt, "add", "-A")
    assert git(wt, "write-tree") == git(repo, "rev-parse", f"{target}^{{tree}}")


def test_replay_with_commit_keeps_author_and_message(serve, tmp_path):
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    write(repo, {"a.txt": "b\n"})
    git(repo, "add", "-A")
    subprocess.run(["git", "commit", "-q", "-m", "orig msg\n\n  indented  \n"], cwd=repo, check=True, capture_output=True,
                   env={**os.environ, **GIT_ID, "GIT_AUTHOR_NAME": "Ada L", "GIT_AUTHOR_EMAIL": "ada@x", "GIT_AUTHOR_DATE": "1700000000 +0200"})
    target = git(repo, "rev-parse", "HEAD")
    wt = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "--detach", str(wt), "HEAD^")
    srv = serve("replay", script_options={"commit": True})
    run_conversation(anth(srv, base=session_url(srv.url, task={"id": "r1", "meta": {"commit": target}}, worktree=str(wt))), wt)
    fmt = "%an|%ae|%ad|%B"
    assert git(wt, "log", "-1", "--date=raw", f"--format={fmt}") == git(repo, "log", "-1", "--date=raw", f"--format={fmt}", target)
    assert git(wt, "rev-parse", "HEAD^{tree}") == git(repo, "rev-parse", f"{target}^{{tree}}")


def test_replay_without_a_task_is_a_clear_400(serve):
    srv = serve("replay")
    with pytest.raises(anthropic.BadRequestError, match="carries no task"):
        anth(srv).messages.create(model="m", max_tokens=10, messages=after_tools(0), tools=BASH)
    assert srv.requests[0]["status"] == 400


def test_task_named_in_the_prompt_is_found_in_a_graph(serve, tmp_path):
    """No context in the URL: the task comes from orch's prompt line and the template."""
    tpl = tmp_path / "graph.json"
    tpl.write_text(json.dumps({"format": "orch-graph", "version": 1, "tasks": [
        {"id": "t1", "title": "first", "file_scope": ["x.md"], "time_estimate_ms": 30_000}], "dependencies": []}))
    repo = make_repo(tmp_path / "repo", {"x.md": "# doc\n"})
    srv = serve("sim", tasks=GraphTasks(tpl))
    prompt = "You are w1, a coding agent.\n\nTask t1: first\n\nDo it.\nCWD: ignored"
    m = anth(srv).messages.create(model="m", max_tokens=10, tools=BASH, system=f"CWD: {repo}",
                                  messages=[{"role": "user", "content": prompt}])
    assert m.stop_reason == "tool_use" and "x.md" in m.content[0].input["command"]
    assert (srv.requests[0]["session"], srv.requests[0]["task"]) == ("t1.1", "t1")
