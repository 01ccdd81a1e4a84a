"""Metrics on hand-built histories whose answers can be worked out by hand."""

from __future__ import annotations

import pytest

from coordstore.models import Dependency, Event, Run, RunDump, Task, Transition
from orchestrator.views.metrics import compute_metrics, gini


class History:
    """Builds transition rows in order, the way a store would record them."""

    def __init__(self):
        self.rows: list[Transition] = []

    def add(self, ts, entity, eid, frm, to, agent=None, **data):
        self.rows.append(Transition(seq=len(self.rows) + 1, run_id="r", ts_ms=ts, entity=entity, entity_id=eid,
                                    from_state=frm, to_state=to, agent=agent, data=data))

    def task_done(self, task, agent, assigned, started, completed, by=None):
        self.add(assigned, "task", task, "pending", "assigned", agent, by=by or agent)
        self.add(started, "task", task, "assigned", "working", agent)
        self.add(completed, "task", task, "working", "completed", agent)


def dump(tasks, deps, rows, events=()):
    final = {}
    for r in rows:
        if r.entity == "task":
            final[r.entity_id] = r.to_state
    ts = [Task(id=t, time_estimate_ms=e, points=1, status=final.get(t, "pending")) for t, e in tasks]
    return RunDump(run=Run(id="r"), tasks=ts, dependencies=deps, history=rows, events=list(events))


def test_gini_by_hand():
    assert gini([1, 1, 1, 1]) == 0
    # two agents, 0 and 4 tasks: sum|xi-xj| = 8, 2 n^2 mean = 2*4*2 = 16 -> 0.5
    assert gini([0, 4]) == pytest.approx(0.5)
    # 1, 2, 3: pairs |1-2|+|1-3|+|2-3| twice = 8; 2*9*2 = 36 -> 0.2222
    assert gini([1, 2, 3]) == pytest.approx(8 / 36)
    assert gini([5]) == 0


def test_chain_and_parallel_known_answers():
    # a -> b chain on agent x; c in parallel on agent y. Durations a=100, b=200, c=100.
    h = History()
    h.task_done("a", "x", 0, 0, 100)
    h.add(0, "claim", "a", None, "won", "x")
    h.add(0, "claim", "c", None, "won", "y")
    h.task_done("c", "y", 0, 0, 100)
    h.add(110, "claim", "b", None, "lost", "y")  # y lost the race for b
    h.add(110, "claim", "b", None, "won", "x")
    h.task_done("b", "x", 110, 120, 320)
    m = compute_metrics(dump([("a", 100), ("b", 200), ("c", 100)], [Dependency(from_id="a", to_id="b", type="blocks")], h.rows))
    assert m["wall_clock_ms"] == 320
    # critical path a+b = 300 over actual durations; total 400 / 2 agents = 200 -> bound 300
    assert m["lower_bound_ms"] == 300
    assert m["efficiency"] == pytest.approx(300 / 320, abs=1e-4)
    assert m["tasks_completed"] == 3 and m["completion_rate"] == 1.0
    # (no agent rows: waits count from the first assignment at 0)
    # b was ready at 100 and assigned at 110: queue waits 0, 0, 10 -> mean 3.333
    assert m["queue_wait_ms"] == pytest.approx(10 / 3, abs=1e-3)
    # pickups: 0, 0, 10
    assert m["pickup_latency_ms"] == pytest.approx(10 / 3, abs=1e-3)
    assert m["busy_ms"] == {"x": 300, "y": 100}
    assert m["idle_ms"] == {"x": 20, "y": 220}
    assert m["utilization"]["x"] == pytest.approx(300 / 320, abs=1e-4)
    assert m["tasks_per_agent"] == {"x": 2, "y": 1}
    assert m["gini_tasks"] == pytest.approx(gini([2, 1]), abs=1e-4)
    assert m["claim_attempts"] == 4 and m["claim_conflicts"] == 1
    assert m["claim_contention"] == 0.25
    assert m["dispatch_latency_ms"] is None  # nobody pushed
    assert m["rework_rate"] == 0
    # blocking: only b was blocked, for 100 of its 320 ms to completion; a, c: 0 of 100 each
    assert m["blocking_ratio"] == pytest.approx(100 / 520, abs=1e-4)


def test_rework_requeue_dispatch_and_tokens():
    h = History()
    for a in ("coord", "x", "y"):
        h.add(0, "agent", a, None, "registered", a)
    # the coordinator pushes t1 to x at 50 although x and t1 were both free at 0: dispatch 50
    h.add(50, "task", "t1", "pending", "assigned", "x", by="coord")
    h.add(60, "task", "t1", "assigned", "working", "x")
    h.add(100, "agent", "x", "active", "stalled", "x")
    h.add(110, "task", "t1", "working", "pending", None, previous="x")  # requeued
    h.add(120, "task", "t1", "pending", "assigned", "y", by="coord")
    h.add(125, "task", "t1", "assigned", "working", "y")
    h.add(225, "task", "t1", "working", "completed", "y")
    h.add(230, "merge", "orch/r/y", None, "conflict", "y")
    events = [Event(agent="y", seq=0, ts_ms=200, type="tokens", data={"in": 100, "out": 20, "cached": 5, "thinking": 1, "cost_usd": 0.5})]
    m = compute_metrics(dump([("t1", 100)], [], h.rows, events))
    assert m["rework_rate"] == 1.0  # one task, two working periods
    assert m["retries"] == 1 and m["reassignments"] == 1 and m["stalls"] == 1
    assert m["merge_conflicts"] == 1
    # dispatch: first 50 (task and x free since 0); second: t1 back to pending at 110, pushed at 120 -> 10
    assert m["dispatch_latency_ms"] == pytest.approx(30)
    assert m["tokens"] == {"in": 100, "out": 20, "cached": 5, "thinking": 1, "image": 0, "audio": 0, "slot6": 0, "slot7": 0,
                           "total": 126, "billable": 121}
    assert m["cost_usd"] == 0.5 and m["cost_per_completed_task"] == 0.5
    # wall clock runs from the first start (60) to the last completion (225)
    assert m["wall_clock_ms"] == 165


def test_lower_bound_on_known_critical_path():
    # diamond a -> (b, c) -> d with b long: critical path a+b+d = 10+50+10 = 70; total 90 / 3 agents = 30
    h = History()
    h.task_done("a", "p", 0, 0, 10)
    h.task_done("b", "p", 10, 10, 60)
    h.task_done("c", "q", 10, 10, 30)
    h.task_done("d", "q", 60, 60, 70)
    h.task_done("e", "r", 0, 0, 1)
    deps = [Dependency(from_id=a, to_id=b, type="blocks") for a, b in [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]]
    m = compute_metrics(dump([(t, 1) for t in "abcde"], deps, h.rows))
    assert m["lower_bound_ms"] == 70
    assert m["wall_clock_ms"] == 70 and m["efficiency"] == 1.0
