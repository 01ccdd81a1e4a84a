"""Every loop on one fake clock, stepped without a real sleep: the run loop (its tick cadence and
the lease it reaps), a runner working a sim task of minutes, and the dispatching policies' waits.

Assertions are on the fake clock's values and on the outcomes, never on how fast anything ran:
a wait that still slept for real would make these tests run for minutes, not fail them.
"""

from __future__ import annotations

import pytest

from agents.config import RunnerConfig
from agents.events import EventWriter
from agents.policies import AGAIN, WAIT, PolicyEnv
from agents.policies.dispatch import HybridLead, PushCoordinator
from agents.pulse import Pulse
from agents.runner import Runner
from coordstore import open_store
from coordstore.clock import wall_clock_ms
from coordstore.models import Agent, Run
from orchestrator.runs.launch import RunRequest, plan_runs
from orchestrator.runs.loop import TICK_S, Orchestrator
from orchestrator.runs.prepare import prepare_run

from conftest import FakeClock, make_graph
from contract_helpers import chain_errors
from runfixtures import task, write_experiment

pytestmark = pytest.mark.usefixtures("no_git_identity")
LEASE_MS = 5_000
TICK_MS = round(TICK_S * 1000)


def prepared_run(tmp_path):
    """A prepared one-agent run (store, graph, worktree), no process started."""
    exp = write_experiment(tmp_path, [task("t1", ["f1.txt"], est_ms=60_000)], [], {"policy": "pull", "agents": 1, "kind": "sim"},
                           supervision={"lease_ms": LEASE_MS, "stall_after_ms": 600_000,
                                        "respawn_backoff_ms": 600_000, "respawn_backoff_max_ms": 600_000})
    [plan] = plan_runs(RunRequest(variant="v", experiment=exp, repo=None, results=tmp_path / "results"))
    prepare_run(*plan)
    return plan[0], plan[1]


def test_the_run_loop_ticks_on_its_clock_and_reaps_a_runner_whose_lease_ran_out(tmp_path):
    spec, paths = prepared_run(tmp_path)
    clock = FakeClock(wall_clock_ms())  # after the rows prepare_run wrote on the real clock
    orch = Orchestrator(spec, paths, wall=clock, clock=clock)
    run, store = spec.run_id, orch.store
    try:
        # a runner the orchestrator did not spawn (another host): only its lease and events tell
        agent = spec.agents[0].id
        store.register_agent(run, Agent(id=agent, kind="sim"), lease_ms=LEASE_MS)
        t = store.claim(run, "t1", agent)
        store.start(run, "t1", agent, t.attempt)
        events = EventWriter(paths.events_of(agent), agent, clock=clock)
        events.started(kind="sim")
        assert orch.step() is False  # the first step judges at once
        for _ in range(4):  # it renews its lease every second: alive, whatever process we cannot see
            clock.advance(1_000)
            store.heartbeat(run, agent, LEASE_MS, current_task="t1")
            events.heartbeat(task="t1")
            orch.step()
        assert store.get_agent(run, agent).status == "active"
        last_beat = clock.now
        clock.advance(LEASE_MS)  # its host is gone: no beat since; the lease ends exactly now
        orch.step()
        assert store.get_agent(run, agent).status == "active"
        clock.advance(1)  # the lease ran out, but the supervisor judges once per tick
        orch.step()
        assert store.get_agent(run, agent).status == "active"
        clock.advance(TICK_MS - 1)
        orch.step()
        rows = store.history(run)
        assert store.get_agent(run, agent).status == "killed"
        requeue = next(r for r in rows if r.entity == "task" and r.to_state == "pending" and r.from_state == "working")
        assert requeue.reason == f"lease expired: agent {agent}" and requeue.data["previous"] == agent
        assert requeue.ts_ms == last_beat + LEASE_MS + TICK_MS  # the fake clock's time, in the store
        path = [(r.to_state, r.reason) for r in rows if r.entity == "agent" and r.entity_id == agent]
        assert path[-2:] == [("dead", "lease expired"), ("killed", "dead: lease expired (no local process)")]
        task_rows = [r for r in rows if r.entity == "task" and r.entity_id == "t1"]
        assert [r.to_state for r in task_rows].count("pending") == 2  # imported, then requeued once
        assert store.get_task(run, "t1").attempt == 1  # the next claim makes it 2
        assert chain_errors(rows) == []
        assert clock.slept == []  # a step never waits
    finally:
        orch.close()


def test_a_runner_works_minutes_of_sim_time_on_a_fake_clock(local):
    g = make_graph([{"id": "a", "time_estimate_ms": 120_000, "file_scope": ["a.txt"]},
                    {"id": "b", "time_estimate_ms": 120_000, "file_scope": ["b.txt"]}])
    run = local(g, time_scale=1.0)  # an estimated minute is a minute of the runner's time
    cfg = RunnerConfig.load(run.add_agent("w1", heartbeat_ms=5_000))
    clock = FakeClock(wall_clock_ms())
    start = clock.now
    with open_store(run.store_url, clock=clock) as store:
        runner = Runner(cfg, store=store, clock=clock, wall=clock)
        assert runner.run() == 0
        rows = store.history(run.run_id, entity="task")
        beat = store.get_agent(run.run_id, "w1").last_heartbeat
    durations = []
    for tid in ("a", "b"):
        mine = {r.to_state: r for r in rows if r.entity_id == tid}
        planned = mine["completed"].data["sim"]["duration_ms"]
        took = mine["completed"].ts_ms - mine["working"].ts_ms
        assert planned <= took <= planned + 100, (tid, planned, took)  # the kind's pace, on the fake clock
        durations.append(planned)
    assert clock.now - start >= sum(durations) > 60_000
    assert max(clock.slept) <= 250  # every wait went through the pulse's naps, beating when due
    assert beat >= start + sum(durations) - 5_000  # leases renewed in the fake time
    assert all(e["ts_ms"] >= start for e in run.events("w1"))  # events stamped on it too


def dispatch_env(store, clock: FakeClock, tmp_path, role: str, options: dict) -> PolicyEnv:
    events = EventWriter(tmp_path / "ev" / role, role, clock=clock)
    pulse = Pulse(store, "r", role, events, heartbeat_ms=1_000, lease_ms=60_000, clock=clock)
    return PolicyEnv(store, "r", role, role, None, options, pulse, events)


def test_push_coordinators_thinking_time_passes_on_the_fake_clock(tmp_path):
    clock = FakeClock()
    with open_store(f"sqlite://{tmp_path / 'o.db'}", clock=clock) as store:
        store.create_run(Run(id="r"))
        store.add_graph("r", make_graph(["t1", "t2"]))
        for a, role in (("w1", "worker"), ("w2", "worker"), ("coordinator", "coordinator")):
            store.register_agent("r", Agent(id=a, role=role), lease_ms=60_000)
        coord = PushCoordinator(dispatch_env(store, clock, tmp_path, "coordinator", {"dispatch_latency_ms": 30_000}))
        start = clock.now
        assert coord.next() == AGAIN
        assigned = [r for r in store.history("r", entity="task") if r.to_state == "assigned"]
        # each decision costs 30 s of the coordinator's time, before its assignment
        assert [r.ts_ms - start for r in assigned] == [30_000, 60_000]
        assert clock.now - start == 60_000
        assert store.get_agent("r", "coordinator").last_heartbeat == clock.now  # it beat while thinking


def test_hybrid_lead_settles_on_the_fake_clock(tmp_path):
    clock = FakeClock()
    with open_store(f"sqlite://{tmp_path / 'o.db'}", clock=clock) as store:
        store.create_run(Run(id="r"))
        store.add_graph("r", make_graph(["A", "a1", "B", "b1"], [("A", "contains", "a1"), ("B", "contains", "b1")]))
        for a, role in (("w1", "worker"), ("w2", "worker"), ("lead", "lead")):
            store.register_agent("r", Agent(id=a, role=role), lease_ms=60_000)
        lead = HybridLead(dispatch_env(store, clock, tmp_path, "lead", {"settle_ms": 10_000}))
        assert lead.next() == WAIT and not lead.settled  # the workers were just seen
        clock.advance(9_999)
        assert lead.next() == WAIT and not lead.settled
        clock.advance(1)
        lead.next()
        assert lead.settled
        assert {t.id: t.owner for t in store.list_tasks("r") if t.id in ("A", "B")} == {"A": "w1", "B": "w2"}
