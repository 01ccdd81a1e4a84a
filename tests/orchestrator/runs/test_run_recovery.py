"""Supervision end to end: `orch run` in its own process, sim runners stopped and killed from here.

A runner is SIGSTOPped while it works (alive, silent: stalled) or SIGKILLed (dead); the
supervisor must catch it on the run's time scale, kill it, requeue its task and respawn it, and
the store's history must stay one valid chain per entity through all of it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from coordstore import open_store
from gitfixtures import make_repo

from conftest import wait_for
from contract_helpers import chain_errors
from runfixtures import task, write_experiment

# fast respawns; the stall window is each test's own business
QUICK_LADDER = {"kill_grace_s": 0.5, "respawn_backoff_ms": 100, "respawn_backoff_max_ms": 400}
SCALE = 0.02  # an estimated minute of sim work runs in 1.2 s


@pytest.fixture(autouse=True)
def _no_identity(no_git_identity):
    """Agent commits must carry their own identity (conftest's fixture)."""


class LiveRun:
    """An `orch run` subprocess and a look into its store; stops whatever is left on exit."""

    def __init__(self, tmp_path: Path, exp: Path, repo: Path):
        self.results = tmp_path / "results"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "run", "--variant", "v", "--experiment", str(exp),
             "--repo", str(repo), "--results", str(self.results), "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        spec = json.loads(wait_for(self._spec_text, timeout=60))
        self.run_id = spec["run_id"]
        self.store = open_store(spec["store_url"])
        self.stopped: list[int] = []

    def _spec_text(self) -> str | None:
        assert self.proc.poll() is None, self.proc.stderr.read().decode()
        found = list(self.results.glob("t/v/*/run.json"))
        return found[0].read_text() if found else None

    def working(self) -> dict[str, str]:
        """agent -> the task it is working on, now."""
        try:
            return {t.owner: t.id for t in self.store.list_tasks(self.run_id, status="working")}
        except Exception:  # the run's row is not written yet
            return {}

    def signal_worker(self, sig: int, avoid: set[str]) -> tuple[str, str]:
        """Send ``sig`` to a runner caught working on a task (not one of ``avoid``); returns
        (agent, task). A runner that finished its task between the look and a SIGSTOP is let go."""
        while True:
            agent, tid = wait_for(lambda: next(((a, t) for a, t in self.working().items() if a not in avoid), None))
            pid = self.store.get_agent(self.run_id, agent).pid
            os.kill(pid, sig)
            if sig == signal.SIGSTOP:
                self.stopped.append(pid)
                if self.working().get(agent) != tid:  # it moved on just before it stopped: try again
                    os.kill(pid, signal.SIGCONT)
                    continue
            return agent, tid

    def task_rows(self, tid: str):
        return self.store.history(self.run_id, entity="task", entity_id=tid)

    def finish(self, timeout: float = 120) -> int:
        self.proc.wait(timeout=timeout)
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for a in self.store.list_agents(self.run_id):  # runners live in their own groups
            if a.pid and psutil.pid_exists(a.pid) and psutil.Process(a.pid).create_time() == a.create_time:
                os.kill(a.pid, signal.SIGCONT)
                os.killpg(a.pid, signal.SIGKILL)
        self.store.close()


@contextmanager
def live_run(tmp_path: Path, n_tasks: int, agents: int, supervision: dict):
    repo = make_repo(tmp_path / "repo", {"README": "x\n"})
    tasks = [task(f"t{i}", [f"f{i}.txt"], est_ms=60_000) for i in range(n_tasks)]
    exp = write_experiment(tmp_path, tasks, [], {"policy": "pull", "agents": agents, "kind": "sim"},
                           time_scale=SCALE, supervision=supervision)
    run = LiveRun(tmp_path, exp, repo)
    try:
        yield run
    finally:
        run.close()


def test_a_stopped_sim_runner_is_judged_stalled_on_the_runs_time_scale(tmp_path):
    # the default stall window, 120 s of agent time, is 2.4 s here: the 5 s floor applies
    with live_run(tmp_path, n_tasks=6, agents=2, supervision=QUICK_LADDER) as run:
        agent, tid = run.signal_worker(signal.SIGSTOP, avoid=set())
        # generous bound, not a speed target: before, the supervisor waited 120 s of wall clock
        requeue = wait_for(lambda: next((r for r in run.task_rows(tid) if r.to_state == "pending" and r.reason == "stalled"), None), timeout=30)
        assert requeue.data["previous"] == agent
        assert run.finish() == 0
        stalled = [r for r in run.store.history(run.run_id, entity="agent", entity_id=agent) if r.to_state == "stalled"]
        assert stalled and stalled[0].data["limit_ms"] == 5_000 and stalled[0].data["task"] == tid
        assert {t.status for t in run.store.list_tasks(run.run_id)} == {"completed"}


def test_histories_stay_chains_through_a_stall_a_crash_and_respawns(tmp_path):
    with live_run(tmp_path, n_tasks=10, agents=3, supervision={**QUICK_LADDER, "stall_after_ms": 1_500}) as run:
        stopped, _ = run.signal_worker(signal.SIGSTOP, avoid=set())
        crashed, _ = run.signal_worker(signal.SIGKILL, avoid={stopped})
        assert run.finish() == 0
        dump = run.store.dump_run(run.run_id)
    assert {t.status for t in dump.tasks} == {"completed"}
    assert chain_errors(dump.history) == []
    assert [r.seq for r in dump.history] == list(range(1, len(dump.history) + 1))
    for agent, verdict in ((stopped, "stalled"), (crashed, "dead")):
        path = [(r.from_state, r.to_state) for r in dump.history if r.entity == "agent" and r.entity_id == agent]
        i = next(k for k, (_, to) in enumerate(path) if to == verdict)
        assert path[i + 1:i + 3] == [(verdict, "killed"), ("killed", "registered")], path
        respawned = [r for r in dump.history if r.entity_id == agent and r.data.get("action") == "respawned"]
        assert respawned and (respawned[0].from_state, respawned[0].to_state) == ("registered", "registered")


def test_a_stopped_runner_whose_lease_runs_out_is_reaped_by_the_supervisor(tmp_path):
    # the lease (3 s) runs out long before the stall window (600 s of agent time: 12 s here)
    supervision = {**QUICK_LADDER, "lease_ms": 3_000, "stall_after_ms": 600_000}
    with live_run(tmp_path, n_tasks=6, agents=2, supervision=supervision) as run:
        agent, tid = run.signal_worker(signal.SIGSTOP, avoid=set())
        # generous bound, not a speed target
        requeue = wait_for(lambda: next((r for r in run.task_rows(tid) if r.to_state == "pending" and r.from_state == "working"),
                                        None), timeout=60)
        assert requeue.reason == f"lease expired: agent {agent}" and requeue.data["previous"] == agent
        assert run.finish() == 0
        dump = run.store.dump_run(run.run_id)
    assert {t.status for t in dump.tasks} == {"completed"}
    assert chain_errors(dump.history) == []
    path = [(r.from_state, r.to_state, r.reason) for r in dump.history if r.entity == "agent" and r.entity_id == agent]
    i = next(k for k, (_, to, _) in enumerate(path) if to == "dead")
    # reaped by the store, then the ladder: its stopped process is killed and a new runner registers
    assert path[i][2] == "lease expired"
    assert path[i + 1] == ("dead", "killed", "dead: lease expired (process stopped)")
    assert path[i + 2][:2] == ("killed", "registered")
    assert "stalled" not in [to for _, to, _ in path]
    # one requeue of that attempt, one new attempt after it
    rows = [r for r in dump.history if r.entity == "task" and r.entity_id == tid]
    assert sum(r.to_state == "pending" and r.from_state == "working" for r in rows) == 1
    assert [r.data["attempt"] for r in rows if r.to_state == "working"] == [1, 2]
