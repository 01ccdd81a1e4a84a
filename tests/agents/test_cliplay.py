"""A real CLI as ONE long-lived session per agent in agent-driven variants (``agents.kinds.cliplay``),
driven by the runner's own loop (``agents.driven``) against the real coordination server process,
on a prepared run with a real git repository and store. The CLI is a fake ``claude``
(tests/progs/fakerole) that prints claude's stream-json and makes real MCP calls with the agent's
token; it is a real process with real children (its ``sleep`` waits)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from coordfixtures import ServerProcess, agent_run, tokens
from conftest import wait_for
from coordstore import open_store
from coordstore.errors import AgentError
from fixtures_path import PROGS, REPO_ROOT
from gitfixtures import git

from agents.config import MCP_TOKEN_ENV, MCP_URL_ENV, RunnerConfig
from agents.driven import drive
from agents.events import EventWriter, highest_seq
from agents.pulse import Pulse

pytestmark = pytest.mark.usefixtures("no_git_identity")

FAKE_CLAUDE = PROGS / "fakerole" / "claude"
WORK = {"a", "b", "c", "box.1", "box.2"}  # coordfixtures.small_graph's work tasks
DEADLINE_S = 60.0


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """The fake CLI's bookkeeping: its sessions' log; ``plan(**behaviours)`` sets what each agent's
    sessions do."""
    state = tmp_path / "fakerole"
    state.mkdir()
    monkeypatch.setenv("FAKEROLE_STATE", str(state))
    monkeypatch.setenv("FAKEROLE_LOG", str(state / "sessions.jsonl"))
    monkeypatch.setenv("FAKEROLE_POLL_S", "0.05")

    class Fake:
        @staticmethod
        def plan(**behaviours):
            monkeypatch.setenv("FAKEROLE_PLAN", json.dumps(behaviours))

        @staticmethod
        def sessions() -> list[dict]:
            log = state / "sessions.jsonl"
            return [json.loads(ln) for ln in log.read_text().splitlines()] if log.exists() else []

    return Fake


@pytest.fixture
def world(tmp_path):
    spec, paths = agent_run(tmp_path, workers=2, policy="pull")
    server = ServerProcess(paths.root)
    yield spec, paths, server
    server.stop()


def cli_config(spec, paths, agent: str, **options) -> RunnerConfig:
    return RunnerConfig(store_url=spec.store_url, run_id=spec.run_id, agent_id=agent, events_dir=str(paths.events_of(agent)),
                        role="worker", kind="claude", kind_options={"binary": str(FAKE_CLAUDE), "check_key": False, **options},
                        policy="pull", coordination="agents", worktree=str(paths.worktree_of(agent)), repo=spec.repo,
                        merged_ref=f"refs/heads/{spec.merged_branch}", seed=spec.seed, time_scale=1.0, heartbeat_ms=200)


def events_of(paths, agent: str) -> list[dict]:
    d = paths.events_of(agent)
    return [json.loads((d / f"{i:010d}.json").read_text()) for i in range(highest_seq(d) + 1)]


def play(world, agent: str = "w1", **options):
    """Drive ``agent`` (a claude pull worker) until the run is over; the run's dump and its events.
    A run that does not end within ``DEADLINE_S`` is failed (the loop then ends: the test fails)."""
    spec, paths, server = world
    cfg = cli_config(spec, paths, agent, **options)
    events = EventWriter(cfg.events_dir, agent)

    def give_up():
        with open_store(spec.store_url) as s:
            s.finish_run(spec.run_id, "failed", reason="the test's deadline")

    timer = threading.Timer(DEADLINE_S, give_up)
    timer.start()
    try:
        with open_store(spec.store_url) as store:
            pulse = Pulse(store, spec.run_id, agent, events, cfg.heartbeat_ms, cfg.lease_ms)
            drive(cfg, store, events, pulse, env={MCP_URL_ENV: server.url, MCP_TOKEN_ENV: tokens(paths)[agent]})
            dump = store.dump_run(spec.run_id)
    finally:
        timer.cancel()
    assert dump.run.status == "running", "the run did not end within the test's deadline"
    return dump, events_of(paths, agent)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_one_cli_process_plays_the_whole_run_through_the_tools(world, fake):
    dump, evs = play(world)
    [session] = fake.sessions()  # one process for every task
    assert {t.id: (t.status, t.completed_by) for t in dump.tasks if t.id in WORK} == {t: ("completed", "w1") for t in WORK}
    assert gone(session["pid"])
    # its prompt: the role's default instruction, who it is, how to use orch's tools
    prompt = session["prompt"]
    assert "You are a worker in a swarm" in prompt and "agent w1 in orch run r1: role worker, policy pull" in prompt
    assert "connect with worker_id=w1" in prompt and "status=completed" in prompt and "The run is over." in prompt
    assert session["cwd"] == str(world[1].worktree_of("w1")) and session["base_url"] is None  # no model server here
    # orch's server configured the CLI's own way (claude: --mcp-config), the token only in its environment
    argv = session["argv"]
    assert "--mcp-config" in argv and "--strict-mcp-config" in argv
    assert json.loads(argv[argv.index("--mcp-config") + 1])["mcpServers"]["orch"]["url"] == world[2].url
    assert tokens(world[1])["w1"] not in " ".join(argv)
    # what it called is what the server recorded, and each call is a step named by the tool's bare name
    rows = [r.entity_id for r in dump.history if r.entity == "tool" and r.agent == "w1"]
    steps = [e for e in evs if e["type"] == "step"]
    tool_steps = [e["data"]["name"] for e in steps if e["data"].get("tool")]
    assert rows[0] == "connect" and rows[-1] == "disconnect"  # the runner says goodbye for it
    assert tool_steps == rows[:-1]
    assert rows.count("claim") == len(WORK)
    # reads and sleeps are polls; what changes something is not
    for e in steps:
        name, poll = e["data"]["name"], e["data"].get("poll")
        assert poll is (True if name in ("list_tasks", "list_agents", "get", "Bash") else None), e
    claims = [e for e in steps if e["data"]["name"] == "claim"]
    assert {e["task"] for e in claims} == WORK  # a call about a task is the task's event
    # its own output is its proof of life: the runner wrote no heartbeat while it ran
    assert not [e for e in evs if e["type"] == "heartbeat"]
    [spent] = [e for e in evs if e["type"] == "tokens"]
    assert spent["data"]["in"] == 100 * (len(rows) - 1 + sum(e["data"]["name"] == "Bash" for e in steps))
    merged = git(world[0].repo, "ls-tree", "--name-only", f"refs/heads/{world[0].merged_branch}").split()
    assert {f"work-{t}.txt" for t in WORK} <= set(merged)


def test_a_cli_that_exits_early_is_respawned_and_its_task_given_back(world, fake):
    fake.plan(w1=["crash-after-claim", "play"])
    dump, evs = play(world)
    first, second = fake.sessions()
    assert first["pid"] != second["pid"] and gone(first["pid"]) and gone(second["pid"])
    assert {t.id: t.status for t in dump.tasks if t.id in WORK} == {t: "completed" for t in WORK}
    # the task the crashed session held went back to pending, by the agent, saying why
    back = [r for r in dump.history if r.entity == "task" and r.from_state == "working" and r.to_state == "pending"]
    assert len(back) == 1 and back[0].agent == "w1" and "claude session ended" in back[0].reason
    assert "exited 3" in back[0].reason
    said = [e["data"]["msg"] for e in evs if e["type"] == "log"]
    assert any("ended before the run was over" in m and "starting session 2 (respawn 1 of 5)" in m for m in said)
    # its half-done work was dropped, not merged
    merged = git(world[0].repo, "ls-tree", "--name-only", f"refs/heads/{world[0].merged_branch}").split()
    assert not [f for f in merged if f.startswith("half-")]


def test_a_cli_that_keeps_exiting_ends_the_agent_after_max_respawns(world, fake):
    fake.plan(w1=["exit-early"])
    with pytest.raises(AgentError, match=r"claude CLI ended 3 times before the run was over \(max_respawns 2\)"):
        play(world, max_respawns=2)
    sessions = fake.sessions()
    assert len(sessions) == 3 and all(gone(s["pid"]) for s in sessions)


def test_sigterm_to_the_runner_leaves_no_cli_process_behind(world, fake, tmp_path):
    """A silent CLI (alive, printing nothing, a child sleeping): the supervisor's SIGTERM to the
    runner ends the CLI and its children too."""
    spec, paths, server = world
    fake.plan(w1=["hang"])
    cfg = cli_config(spec, paths, "w1")
    cfg_file = tmp_path / "w1.json"
    cfg.write(cfg_file)
    env = {**os.environ, MCP_URL_ENV: server.url, MCP_TOKEN_ENV: tokens(paths)["w1"],
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    runner = subprocess.Popen([sys.executable, "-m", "agents.runner", "--config", str(cfg_file)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: fake.sessions(), timeout=30)
        pid = fake.sessions()[0]["pid"]
        wait_for(lambda: psutil.Process(pid).children(), timeout=10)  # its `sleep 1000`
        child = psutil.Process(pid).children()[0].pid
        time.sleep(0.5)
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=15) == 143
    finally:
        if runner.poll() is None:
            runner.kill()
    assert gone(pid) and gone(child)
    # while it hung, nothing was said for it: silence the supervisor can see
    evs = events_of(paths, "w1")
    assert not [e for e in evs if e["type"] in ("step", "heartbeat")]
