"""Real CLI agent kinds: the ``command`` kind and its presets claude, codex, aider, gemini, opencode.

- (how each preset calls its CLI, argv and flags against the installed CLI: ``test_agent_cli_argv.py``)
- (their parsers, on streams recorded from the real CLIs: ``test_agent_cli_parsers.py``)
- the kind running fake CLIs (``tests/progs/fakecli/``, which replay those recordings and perform
  their tool calls) as real processes in a real git worktree, with a real store behind the pulse
- preflight: missing executable, missing credentials, bad options -- before any worktree exists
- ``orch run`` end to end with a fake ``claude`` on PATH: pull, two agents, a tiny graph
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from agents.clis import PRESETS
from agents.events import EventWriter
from agents.kinds import KindContext, resolve_kind
from agents.kinds import preflight
from agents.pulse import Pulse
from coordstore import open_store
from coordstore.errors import AgentError
from coordstore.models import Agent, Run, Task
from fixtures_path import PROGS

from clikit import git, isolated, make_repo  # noqa: F401 (isolated: an autouse fixture)

FAKECLI = PROGS / "fakecli"


def fake_path(monkeypatch) -> None:
    monkeypatch.setenv("PATH", os.pathsep.join([str(FAKECLI), os.environ["PATH"]]))


# ---------------------------------------------------------------------------------------- the kind
@pytest.fixture
def world(tmp_path, monkeypatch):
    """A git worktree, a real store with a registered agent, an event writer and a pulse."""
    fake_path(monkeypatch)
    log = tmp_path / "fakecli.jsonl"
    state = tmp_path / "fakestate"
    state.mkdir()
    monkeypatch.setenv("FAKECLI_LOG", str(log))
    monkeypatch.setenv("FAKECLI_STATE", str(state))
    repo = make_repo(tmp_path / "repo")
    store = open_store(f"sqlite://{tmp_path / 'orch.db'}")
    store.create_run(Run(id="r", experiment="e", variant="v"))
    store.register_agent("r", Agent(id="w1"), lease_ms=30_000)
    events = EventWriter(tmp_path / "events" / "w1", "w1")
    pulse = Pulse(store, "r", "w1", events, heartbeat_ms=100, lease_ms=30_000)
    pulse.current_task = "t1"  # as the runner sets it while a task runs
    identity = {"GIT_AUTHOR_NAME": "w1", "GIT_AUTHOR_EMAIL": "w1@orch", "GIT_COMMITTER_NAME": "w1", "GIT_COMMITTER_EMAIL": "w1@orch"}
    ctx = KindContext("r", "w1", repo, 0, 1.0, 1, events, pulse, identity)

    class World:
        pass

    w = World()
    w.repo, w.ctx, w.store, w.log, w.events_dir = repo, ctx, store, log, tmp_path / "events" / "w1"
    w.calls = lambda: [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    w.events = lambda: [json.loads(p.read_text()) for p in sorted(w.events_dir.glob("*.json"))]
    yield w
    store.close()


TASK = Task(id="t1", title="Add a greeting", description="Write hello into a file.", file_scope=["hello-t1.txt"],
            needed_tags=["backend"])
EXPECTED = {  # preset -> (text written by the tool call, step names, tokens in/out/cached, cost)
    "claude": ("hello from claude", ["Bash"], (3003, 83, 1000), 0.027465),
    "codex": ("hello from codex", ["exec"], (1801, 77, 1200), 0.0),
    "gemini": ("hello from gemini", ["run_shell_command"], (2403, 93, 300), 0.0),
    "opencode": ("hello from claude", ["bash"], (3003, 83, 1000), 0.011004),
    "aider": ("hello from aider", ["edit"], (2300, 57, 0), 0.0064),
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_kind_runs_the_cli_in_the_worktree(world, name):
    kind = resolve_kind(name)({"check_key": False, "model": "m1"})
    result = kind.run(TASK, world.ctx)
    text, steps, (tin, tout, cached), cost = EXPECTED[name]
    assert result.ok, result.reason
    assert (world.repo / "hello-t1.txt").read_text() == text + "\n"
    evs = world.events()
    assert [e["data"]["name"] for e in evs if e["type"] == "step"] == steps
    tok = [e["data"] for e in evs if e["type"] == "tokens"]
    assert (sum(t["in"] for t in tok), sum(t["out"] for t in tok), sum(t["cached"] for t in tok)) == (tin, tout, cached)
    assert all(e["task"] == "t1" for e in evs)
    assert (result.tokens["in"], result.tokens["out"], result.tokens["cached"]) == (tin, tout, cached)
    assert result.tokens["cost_usd"] == pytest.approx(cost)
    assert result.data["cli"] == name and result.data["exit"] == 0
    [call] = world.calls()
    assert call["cwd"] == str(world.repo) and call["env"]["ORCH_TASK_ID"] == "t1" and call["env"]["ORCH_AGENT_ID"] == "w1"
    # the prompt: on stdin (opencode), in a file (aider), or an argument
    prompt = {"opencode": call["stdin"], "aider": call["message_file"]}.get(name) or next(a for a in call["argv"] if "Add a greeting" in a)
    for part in ("Task t1: Add a greeting", "Write hello into a file.", "- hello-t1.txt", "backend", "w1", "Do not commit"):
        assert part in prompt, (part, prompt)
    assert not list(world.repo.glob(".aider*"))  # the CLI's own caches are not left for the commit


def test_aider_gets_the_file_scope_and_a_scratch_dir_outside_the_worktree(world):
    resolve_kind("aider")({"check_key": False, "prompt_template": "Do {task_id}: {title} [{files}] as {role}"}).run(TASK, world.ctx)
    [call] = world.calls()
    argv = call["argv"]
    assert argv[argv.index("--file") + 1] == "hello-t1.txt"
    assert call["message_file"] == "Do t1: Add a greeting [hello-t1.txt] as worker"
    scratch = Path(argv[argv.index("--message-file") + 1]).parent
    assert Path(argv[argv.index("--chat-history-file") + 1]).parent == scratch
    assert world.repo not in scratch.parents and not scratch.exists()  # private, and removed afterwards


def test_prompt_template_fields(world):
    resolve_kind("claude")({"check_key": False, "prompt_template": "Do {task_id}: {title} [{files}] as {role}"}).run(TASK, world.ctx)
    [call] = world.calls()
    assert call["argv"][1] == "Do t1: Add a greeting [hello-t1.txt] as worker"


def test_auth_error_fails_the_task_with_the_clis_words(world, monkeypatch):
    monkeypatch.setenv("FAKECLI_SCENARIO", "autherror")
    result = resolve_kind("claude")({"check_key": False}).run(TASK, world.ctx)
    assert not result.ok and result.reason == "claude: success: Invalid API key · Fix external API key"
    assert [e["data"]["msg"] for e in world.events() if e["type"] == "error"] == [result.reason]


def test_rate_limit_give_up_is_waited_out_and_run_again(world, monkeypatch):
    monkeypatch.setenv("FAKECLI_SCENARIO", "ratelimit-giveup,edit")
    result = resolve_kind("claude")({"check_key": False, "rate_limit_max_wait_s": 0.2}).run(TASK, world.ctx)
    assert result.ok, result.reason
    assert result.data["rate_limit_reruns"] == 1 and len(world.calls()) == 2
    waits = [e["data"]["retry_after"] for e in world.events() if e["type"] == "rate_limited"]
    assert len(waits) == 3 and waits[-1] == 0.2  # two retried by claude, then orch's own wait (capped)
    assert (world.repo / "hello-t1.txt").exists()


def test_rate_limit_reruns_are_bounded(world, monkeypatch):
    monkeypatch.setenv("FAKECLI_SCENARIO", "ratelimit-giveup")
    result = resolve_kind("codex")({"check_key": False, "rate_limit_max_wait_s": 0.05, "rate_limit_retries": 1}).run(TASK, world.ctx)
    assert not result.ok and "429" in result.reason and len(world.calls()) == 2


def test_generic_command_kind_with_placeholders(world):
    kind = resolve_kind("command")({"argv": ["sh", "-c", 'printf "%s|%s" "$1" "$2" > out.txt', "sh", "{task_id}", "{model}"],
                                    "model": "mX"})
    result = kind.run(TASK, world.ctx)
    assert result.ok and (world.repo / "out.txt").read_text() == "t1|mX"
    assert result.data["cli"] == "sh" and result.tokens["in"] == 0


def test_generic_command_kind_can_reuse_a_parser(world):
    fake = str(FAKECLI / "claude")
    result = resolve_kind("command")({"argv": [fake, "-p", "{prompt}"], "parser": "claude"}).run(TASK, world.ctx)
    assert result.ok and result.tokens["cost_usd"] == pytest.approx(0.027465)


def test_failing_command_reports_exit_and_stderr(world):
    result = resolve_kind("command")({"argv": ["sh", "-c", "echo broken tool >&2; exit 3"]}).run(TASK, world.ctx)
    assert not result.ok and result.reason == "sh exited 3: broken tool"


def test_timeout_kills_the_cli_and_its_children(world):
    import psutil

    pidfile = world.repo / "child.pid"
    kind = resolve_kind("command")({"argv": ["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], "timeout_s": 0.5})
    t0 = time.monotonic()
    result = kind.run(TASK, world.ctx)
    assert not result.ok and result.reason == "sh timed out after 0.5s"
    assert time.monotonic() - t0 < 10
    child = int(pidfile.read_text())
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    assert any("did not finish" in e["data"]["msg"] for e in world.events() if e["type"] == "error")


def test_usd_per_mtok_prices_tokens_of_clis_without_cost(world):
    result = resolve_kind("codex")({"check_key": False, "usd_per_mtok": {"in": 2.0, "out": 8.0, "cached": 0.5}}).run(TASK, world.ctx)
    assert result.tokens["cost_usd"] == pytest.approx((1801 * 2.0 + 77 * 8.0 + 1200 * 0.5) / 1e6)


# ---------------------------------------------------------------------------------------- preflight
def test_preflight_missing_cli(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    expected = "agent kind 'claude': the 'claude' executable is not on PATH; install it with: npm install -g @anthropic-ai/claude-code"
    with pytest.raises(AgentError, match=re.escape(expected)):
        preflight("claude", {})


def test_preflight_missing_key_and_where_it_may_come_from(monkeypatch, tmp_path):
    fake_path(monkeypatch)
    with pytest.raises(AgentError, match=r"no credentials for claude: set one of ANTHROPIC_API_KEY"):
        preflight("claude", {})
    preflight("claude", {"env": {"ANTHROPIC_API_KEY": "k", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9"}})
    preflight("claude", {"check_key": False})
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    preflight("codex", {})
    monkeypatch.delenv("OPENAI_API_KEY")
    login = Path(os.environ["HOME"]) / ".codex" / "auth.json"  # a `codex login` counts too
    login.parent.mkdir()
    login.write_text("{}")
    preflight("codex", {})


@pytest.mark.parametrize("kind,options,message", [
    ("claude", {"permision_mode": "x"}, "kind_options.permision_mode: is not an option of this kind"),
    ("claude", {"bare": "yes"}, "kind_options.bare: 'yes' must be true or false"),
    ("codex", {"timeout_s": 0}, "kind_options.timeout_s: 0 must be a positive number"),
    ("codex", {"timeout_s": float("inf")}, "kind_options.timeout_s: inf must be a positive number"),
    ("aider", {"usd_per_mtok": {"in": float("nan")}}, "kind_options.usd_per_mtok: must map some of in, out, cached, thinking"),
    ("command", {}, "kind_options.argv: the command kind needs argv"),
    ("command", {"argv": ["x"], "parser": "json"}, "kind_options.parser: output parser 'json' is unknown"),
    ("command", {"argv": ["x"], "preset": "cursor"}, "kind_options.preset: 'cursor' is not one of"),
    ("command", {"argv": ["x"], "preset": "claude"}, "kind_options.argv: give either argv or preset, not both"),
    ("gemini", {"prompt_template": "{nope}"}, "kind_options.prompt_template: unknown field {nope}"),
    ("aider", {"usd_per_mtok": {"input": 1}}, "kind_options.usd_per_mtok: must map some of in, out, cached, thinking"),
    ("nosuch", {}, "agent kind 'nosuch' is unknown"),
])
def test_preflight_bad_options(monkeypatch, kind, options, message):
    fake_path(monkeypatch)
    with pytest.raises(AgentError, match=re.escape(message)):
        preflight(kind, {"check_key": False, **options} if kind in PRESETS else options)


def test_preflight_leaves_other_kinds_alone():
    preflight("sim", {"anything": 1})  # sim reports its unknown options itself
    preflight("some_module:SomeKind", {})  # importable only where the runner runs


def test_plan_runs_refuses_before_anything_is_made(tmp_path, monkeypatch):
    from orchestrator.runs.launch import RunRequest, plan_runs

    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no claude anywhere
    exp = write_experiment(tmp_path, [{"id": "a", "title": "A"}], [], agents=1)
    with pytest.raises(AgentError, match=r"variant 'v', agent w1: agent kind 'claude': the 'claude' executable is not on PATH"):
        plan_runs(RunRequest(variant="v", experiment=exp, results=tmp_path / "results"))
    assert not (tmp_path / "results").exists()


# ---------------------------------------------------------------------------------------- end to end
def write_experiment(tmp_path: Path, tasks, deps, agents: int) -> Path:
    tpl = tmp_path / "graph.json"
    tpl.write_text(json.dumps({"format": "orch-graph", "version": 1, "tasks": tasks,
                               "dependencies": [{"from_id": a, "to_id": b, "type": k} for a, b, k in deps]}))
    exp = {"experiment": {"id": "cli"}, "template": str(tpl),
           "execution": {"runs": 1, "seed": 1, "timeout_s": 90},
           "variants": [{"name": "v", "policy": "pull", "agents": agents, "kind": "claude",
                         "kind_options": {"env": {"ANTHROPIC_BASE_URL": "http://127.0.0.1:9"}}}]}
    f = tmp_path / "exp.yaml"
    f.write_text(yaml.safe_dump(exp))
    return f


def test_orch_run_with_a_fake_claude_end_to_end(tmp_path, monkeypatch):
    fake_path(monkeypatch)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-fake")
    monkeypatch.setenv("FAKECLI_LOG", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("FAKECLI_DELAY", "0.05")
    repo = make_repo(tmp_path / "repo")
    tasks = [{"id": f"t{i}", "title": f"greet {i}", "description": "say hello", "file_scope": [f"hello-t{i}.txt"]} for i in (1, 2, 3)]
    exp = write_experiment(tmp_path, tasks, [("t1", "t3", "blocks")], agents=2)
    r = subprocess.run([sys.executable, "-m", "orchestrator", "run", "--variant", "v", "--experiment", str(exp), "--repo", str(repo),
                        "--results", str(tmp_path / "results"), "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)["runs"][0]
    assert out["status"] == "finished"
    spec = json.loads((Path(out["run_dir"]) / "run.json").read_text())
    with open_store(spec["store_url"]) as s:
        dump = s.dump_run(spec["run_id"])
    assert sorted((t.id, t.status) for t in dump.tasks) == [("t1", "completed"), ("t2", "completed"), ("t3", "completed")]
    merged = out["merged_branch"]
    for t in dump.tasks:
        assert git(repo, "show", f"{merged}:hello-{t.id}.txt") == "hello from claude\n"
        assert t.tokens_in == 3003 and t.tokens_out == 83 and t.tokens_cached == 1000
        assert t.cost_usd == pytest.approx(0.027465)
        # one commit per task on its agent's branch, authored by the agent
        log = git(repo, "log", "--format=%an|%s", f"{spec['base']}..orch/{spec['run_id']}/{t.completed_by}")
        assert f"{t.completed_by}|task {t.id}: greet {t.id[1:]}" in log.splitlines()
    tokens = [e for e in dump.events if e.type == "tokens"]
    assert sorted(e.task for e in tokens) == ["t1", "t2", "t3"]
    assert all(e.data["cost_usd"] == pytest.approx(0.027465) for e in tokens)
    steps = [e for e in dump.events if e.type == "step" and e.data["name"] == "Bash"]
    assert sorted(e.task for e in steps) == ["t1", "t2", "t3"]
    calls = [json.loads(x) for x in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert len(calls) == 3 and all(c["argv"][:1] == ["-p"] and "--bare" in c["argv"] for c in calls)
    assert all(Path(c["cwd"]).parent.name == "worktrees" for c in calls)  # each ran in its agent's worktree
    assert git(repo, "status", "--porcelain") == ""  # the user's checkout untouched


def test_a_failure_reason_carries_no_terminal_escapes():
    """opencode colours its errors even into a pipe; a reason is read in summaries and `orch status`."""
    from agents.kinds import output_tail

    coloured = "\x1b[91m\x1b[1mError: \x1b[0mUnexpected error\n\x1b]0;title\x07Failed query: CREATE TABLE x\n"
    assert output_tail(coloured) == "Error: Unexpected error\nFailed query: CREATE TABLE x"
