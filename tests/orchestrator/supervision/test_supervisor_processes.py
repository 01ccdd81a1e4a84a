"""The supervisor against real processes: test programs (tests/progs) spawned in their own process
groups, observed through orchestrator/supervision/procs.py and their events directory, judged and
killed on a real SQLite store -- no survivor, the verdicts and evidence in the history."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import psutil

from coordstore import open_store
from coordstore.models import Agent, Run, Task, TaskGraph
from orchestrator.supervision.procs import spawn
from orchestrator.supervision.supervisor import Supervisor
from orchestrator.supervision.verdicts import AgentObservation, SupervisionConfig

from fixtures_path import PROGS, REPO_ROOT

RUN = "r1"


class ProcController:
    """A small real controller: spawned test programs, their event files, their logs."""

    def __init__(self, root: Path, store, argv: dict[str, list[str]], grace_s: float):
        self.root, self.store, self.argv, self.grace_s = root, store, argv, grace_s
        self.procs: dict = {}
        self.first_seq: dict[str, int] = {}
        self.calls: list[tuple] = []
        for agent in argv:
            self._spawn(agent)

    def _events(self, agent: str) -> Path:
        return self.root / "events" / agent

    def _spawn(self, agent: str) -> None:
        files = sorted(self._events(agent).glob("*.json")) if self._events(agent).is_dir() else []
        self.first_seq[agent] = len(files)  # only the new process's events count
        env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
        argv = [sys.executable, *self.argv[agent][:1], str(self._events(agent)), agent, *self.argv[agent][1:]]
        self.procs[agent] = spawn(argv, agent, env, self.root, self.root / "logs")

    def agents(self) -> list[str]:
        return list(self.argv)

    def observe(self, agent: str, now: int) -> AgentObservation:
        events = []
        for f in sorted(self._events(agent).glob("*.json")):  # final names only (temp names start with ".")
            e = json.loads(f.read_text())
            if e["seq"] >= self.first_seq[agent]:
                events.append(e)
        proc = self.procs[agent]
        stats = proc.stats()
        owned = self.store.list_tasks(RUN, status="working", owner=agent)
        return AgentObservation(
            agent=agent,
            alive=proc.alive(),
            exit_code=proc.returncode,
            last_event_ms=max((e["ts_ms"] for e in events), default=None),
            ctx_switches=stats.ctx_voluntary if stats else 0,
            cpu_s=stats.cpu_s if stats else 0.0,
            log_bytes=sum(p.stat().st_size for p in (self.root / "logs").glob(f"{agent}.*")),
            recent_steps=tuple(f"{e['data']['name']}:{e['data']['digest']}" for e in events if e["type"] == "step")[-32:],
            current_task=(owned[0].id, owned[0].attempt) if owned else None,
        )

    def kill(self, agent: str) -> None:
        self.calls.append(("kill", agent))
        self.procs[agent].stop(grace_s=self.grace_s)

    def respawn(self, agent: str, kind: str | None) -> None:
        self.calls.append(("respawn", agent, kind))
        self._spawn(agent)

    def degrade(self, keep: str) -> None:
        self.calls.append(("degrade", keep))

    def avoid(self, task_id: str, agent: str) -> None:
        self.calls.append(("avoid", task_id, agent))

    def stop_all(self) -> None:
        for p in self.procs.values():
            p.stop(grace_s=0.2)


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_real_silent_and_looping_processes_are_judged_and_killed(tmp_path):
    store = open_store(f"sqlite://{tmp_path / 'orch.db'}")
    store.create_run(Run(id=RUN))
    store.add_graph(RUN, TaskGraph(tasks=[Task(id="t1"), Task(id="t2")]))
    for agent, task in (("w1", "t1"), ("w2", "t2")):
        store.register_agent(RUN, Agent(id=agent, kind="test"), lease_ms=10**9)
        t = store.claim(RUN, task, agent)
        store.start(RUN, task, agent, t.attempt)
    cfg = SupervisionConfig(stall_after_ms=1_500, loop_repeats=4, kill_grace_s=0.5, respawn_backoff_ms=600_000, respawn_backoff_max_ms=600_000)
    argv = {
        "w1": [str(PROGS / "silent.py"), "--task", "t1", "--ignore-term"],  # only SIGKILL stops it
        "w2": [str(PROGS / "looper.py"), "--task", "t2", "--interval", "0.05"],
    }
    ctl = ProcController(tmp_path, store, argv, cfg.kill_grace_s)
    procs = dict(ctl.procs)
    sup = Supervisor(store, RUN, cfg, ctl)
    seen: dict[str, list[str]] = {"w1": [], "w2": []}
    try:
        deadline = time.monotonic() + 30  # a safety net against a hang, not a speed target
        while time.monotonic() < deadline and not all(sup.slots.get(a) and sup.slots[a].down for a in ("w1", "w2")):
            for v in sup.tick(time.time_ns() // 1_000_000):
                seen[v.agent].append(v.kind)
            time.sleep(0.05)
    finally:
        ctl.stop_all()

    assert seen["w1"][-1] == "stalled" and set(seen["w1"][:-1]) == {"active"}
    assert seen["w2"][-1] == "looping" and set(seen["w2"][:-1]) <= {"active"}
    assert ("kill", "w1") in ctl.calls and ("kill", "w2") in ctl.calls
    # no survivor: the processes and their whole groups are gone (the SIGTERM-ignoring one too)
    for agent, proc in procs.items():
        assert not proc.alive(), agent
        assert group_gone(proc.pid), agent
        assert not psutil.pid_exists(proc.pid) or psutil.Process(proc.pid).create_time() != proc.create_time
    assert procs["w1"].returncode == -9  # it ignored SIGTERM: the grace ran out, SIGKILL came
    # the verdicts and the actions are in the history, with the evidence
    stalled = [r for r in store.history(RUN, entity="agent", entity_id="w1") if r.to_state == "stalled"]
    assert len(stalled) == 1 and stalled[0].data["silent_ms"] >= 1_500 and stalled[0].data["log_bytes"] > 0
    looping = [r for r in store.history(RUN, entity="agent", entity_id="w2") if r.to_state == "looping"]
    assert len(looping) == 1 and looping[0].data["step"].startswith("read_file:")
    assert [(t.status, t.reason) for t in store.list_tasks(RUN)] == [("pending", "stalled"), ("pending", "looping")]
    store.close()
