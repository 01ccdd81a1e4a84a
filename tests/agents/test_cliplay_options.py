"""What a CLI agent in an agent-driven variant is told and how its options read: the kind options
split between the CLI and its role, the role script per role, the role prompt, which shell steps
are waits, and the session URL and environment the CLI is given."""

from __future__ import annotations

import json

import pytest

from coordstore.errors import AgentError
from fixtures_path import PROGS

from agents.clis.base import MODEL_SERVER_ENV
from agents.clis.roleprompt import role_prompt
from agents.clis.serverurl import split_path
from agents.config import RunnerConfig
from agents.kinds import PLAYERS, preflight_player, resolve_player
from agents.clis.base import sleeps_only
from agents.kinds.cliplay import CliPlayer
from agents.kinds.clirole import CliRole

FAKE = {"binary": str(PROGS / "fakerole" / "claude"), "check_key": False}


@pytest.mark.parametrize("kind", ["claude", "codex", "gemini", "opencode"])
def test_the_cli_kinds_play_roles_as_long_lived_sessions(kind):
    assert issubclass(resolve_player(kind), CliPlayer) and resolve_player(kind).kind == kind
    assert PLAYERS["aider"].endswith("cliexec:AiderPlayer")


def test_kind_options_split_between_the_cli_and_its_role():
    opts = {**FAKE, "model": "m", "permission_mode": "acceptEdits", "decompose": {"over_points": 3},
            "poll_s": 1, "poll_max_s": 2, "faults": [{"turn": 2, "kind": "hang"}], "loop_on_claim": True, "max_respawns": 1}
    r = CliRole.build("claude", "pull", "worker", opts, tags=["py"])
    assert r.cli_options == {**FAKE, "model": "m", "permission_mode": "acceptEdits"}
    assert r.script == "decomposer" and r.max_respawns == 1  # a worker that decomposes
    # what rides to the role script: all but the player's own keys, with the policy and the tags
    assert r.options == {"policy": "pull", "tags": ["py"], "decompose": {"over_points": 3}, "poll_s": 1, "poll_max_s": 2,
                         "faults": [{"turn": 2, "kind": "hang"}], "loop_on_claim": True}
    preflight_player("claude", "pull", "worker", opts)  # CliConfig takes the CLI's half without complaint


@pytest.mark.parametrize("policy,role,script", [("push", "coordinator", "coordinator"), ("push", "worker", "worker"),
                                               ("pull", "worker", "worker"), ("hybrid", "lead", "lead"),
                                               ("hybrid", "worker", "worker")])
def test_each_role_has_its_script(policy, role, script):
    assert CliRole.build("codex", policy, role, {}).script == script
    assert CliRole.build("codex", policy, role, {"script": "decomposer"}).script == "decomposer"  # an override


@pytest.mark.parametrize("policy,role,options,words", [
    ("pull", "worker", {"turn_s": 3}, "kind_options.turn_s: is not an option of this kind in agent-driven variants"),
    ("pull", "worker", {"sandbox": "x"}, "kind_options.sandbox: is not an option"),  # codex's, not claude's
    ("pull", "worker", {"script": "boss"}, "kind_options.script: 'boss' is not one of coordinator, worker"),
    ("pull", "worker", {"poll_s": 10}, "poll_max_s=4.0: must be >= poll_s (10.0)"),
    ("pull", "worker", {"decompose": {"parts": [1, 2]}}, "decompose.parts"),
    ("pull", "worker", {"faults": [{"kind": "hang"}]}, "kind_options.faults: must be a list of mappings"),
    ("pull", "worker", {"loop_on_claim": "yes"}, "kind_options.loop_on_claim: 'yes' must be true or false"),
    ("pull", "worker", {"max_respawns": -1}, "kind_options.max_respawns: -1 must be an integer >= 0"),
    ("pull", "worker", {"timeout_s": 0}, "kind_options.timeout_s: 0 must be a positive number"),  # the CLI's own check
    ("relay", "specialist", {}, "kind claude plays no specialist under policy relay"),
    ("pull", "lead", {}, "kind claude plays no lead under policy pull"),
])
def test_bad_options_and_roles_without_a_script_are_one_line_naming_them(policy, role, options, words):
    with pytest.raises(AgentError) as e:
        preflight_player("claude", policy, role, {**FAKE, **options})
    assert words in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("policy,role", [("push", "coordinator"), ("pull", "worker"), ("hybrid", "worker"), ("hybrid", "lead")])
def test_aider_only_executes_assigned_tasks(policy, role, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    with pytest.raises(AgentError) as e:
        preflight_player("aider", policy, role, {"binary": str(PROGS / "fakecli" / "aider")})
    assert f"kind aider cannot play {role} under policy {policy}" in str(e.value) and "no tool calls" in str(e.value)
    preflight_player("aider", "push", "worker", {"binary": str(PROGS / "fakecli" / "aider"), "poll_s": 1})
    with pytest.raises(AgentError, match="kind_options.script: is not an option"):
        preflight_player("aider", "push", "worker", {"binary": str(PROGS / "fakecli" / "aider"), "script": "worker"})


def test_the_role_prompt_is_the_instruction_then_who_and_how():
    own = role_prompt(agent="boss", run="r9", role="coordinator", policy="push", instruction="Assign by tags.",
                      works=False)
    assert own.startswith("Assign by tags.\n\n") and "agent boss in orch run r9: role coordinator, policy push" in own
    assert "claim task=" not in own and "private scratch directory" in own  # a dispatcher works no task
    default = role_prompt(agent="w2", run="r9", role="worker", policy="push", tags=["py", "ui"])
    assert "The coordinator assigns tasks to you" in default and "Your tags: py, ui." in default
    assert "claim task=<id>" in default and "update task=<id> status=completed" in default
    split = role_prompt(agent="w2", run="r9", role="worker", policy="pull", script="decomposer")
    assert "create_tree parent=<task>" in split


@pytest.mark.parametrize("args,poll", [
    ({"command": "sleep 2"}, True), ({"command": "sleep 0.5"}, True), ("sleep 1", True),
    ("bash -lc 'sleep 2'", True), ("/bin/bash -lc \"sleep 4\"", True), (["bash", "-lc", "sleep 1"], True),
    (["sleep", "3"], True), ({"command": "sleep 2 && rm -rf x"}, False), ({"command": "echo sleep 2"}, False),
    ({"command": "sleep"}, False), ({"file_path": "sleep 2"}, False), (None, False),
])
def test_a_shell_step_that_only_sleeps_is_a_wait(args, poll):
    assert sleeps_only(args) is poll


class _Client:
    url, token = "http://127.0.0.1:9/mcp", "tok"


def test_the_cli_is_pointed_at_a_role_session_of_the_runs_model_server(tmp_path, monkeypatch):
    monkeypatch.setenv(MODEL_SERVER_ENV, "http://127.0.0.1:5555")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "the-runs-key")
    cfg = RunnerConfig(store_url="sqlite://x", run_id="r7", agent_id="coordinator", events_dir=str(tmp_path / "ev"),
                       role="coordinator", kind="claude", kind_options={**FAKE, "poll_s": 1, "faults": [{"turn": 1, "kind": "hang"}]},
                       policy="push", coordination="agents", seed=3, time_scale=1.0, tags=["lead"])
    player = resolve_player("claude")(cfg, _Client(), events=None, pulse=None)
    try:
        env = player._served(2)
        ctx, rest = split_path(env["ANTHROPIC_BASE_URL"].removeprefix("http://127.0.0.1:5555"))
        assert rest == "/" and env[MODEL_SERVER_ENV] == env["ANTHROPIC_BASE_URL"] == env["GOOGLE_GEMINI_BASE_URL"]
        assert env["OPENAI_BASE_URL"] == env["ANTHROPIC_BASE_URL"] + "/v1" and env["ANTHROPIC_API_KEY"] == "the-runs-key"
        assert (ctx.script, ctx.agent, ctx.run, ctx.seed, ctx.worktree) == ("coordinator", "coordinator", "r7", 3, None)
        assert ctx.session.startswith("coordinator.2.")
        assert ctx.options == {"policy": "push", "tags": ["lead"], "poll_s": 1, "faults": [{"turn": 1, "kind": "hang"}]}
        assert json.loads(env["OPENCODE_CONFIG_CONTENT"])["provider"]["orch"]["options"]["baseURL"].startswith(
            env["ANTHROPIC_BASE_URL"])
    finally:
        player.close()
    monkeypatch.delenv(MODEL_SERVER_ENV)
    player = resolve_player("claude")(cfg, _Client(), events=None, pulse=None)
    assert player._served(1) == {}  # no model server: the CLI's own configuration stands
    player.close()
