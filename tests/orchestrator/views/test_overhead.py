"""Orchestration overhead and the break-even against solo, on hand-built histories worked out by hand."""

from __future__ import annotations

import pytest

from coordstore.models import Dependency, Run, RunDump, Task, Transition
from orchestrator.views.metrics import compute_metrics
from orchestrator.views.overhead import break_even_task_ms, overhead_line, overhead_metrics, overhead_rows, phase_ms


class History:
    def __init__(self):
        self.rows: list[Transition] = []

    def add(self, ts, entity, eid, frm, to, agent=None, **data):
        self.rows.append(Transition(seq=len(self.rows) + 1, run_id="r", ts_ms=ts, entity=entity, entity_id=eid,
                                    from_state=frm, to_state=to, agent=agent, data=data))

    def phase(self, name, start, end, **data):
        self.add(end, "run", "r", "running", "running", action="phase", phase=name, start_ms=start, end_ms=end, **data)

    def task_done(self, task, agent, start, end):
        self.add(start, "task", task, "pending", "assigned", agent)
        self.add(start, "task", task, "assigned", "working", agent)
        self.add(end, "task", task, "working", "completed", agent)


def dump(task_ids, rows, deps=()):
    return RunDump(run=Run(id="r", status="finished"), tasks=[Task(id=t, status="completed") for t in task_ids],
                   dependencies=list(deps), history=rows)


def two_by_two() -> History:
    """Four 1 s tasks on two agents, two deep: wall 2 s, solo 4 s. Phases: setup 500, spawn 300 and
    a resume's spawn 100, drain 100, no final merge: overhead 1000."""
    h = History()
    h.add(0, "run", "r", None, "running")
    h.phase("setup", -700, -200)
    h.phase("spawn", -200, 100)
    h.task_done("a", "x", 0, 1000)
    h.task_done("b", "y", 0, 1000)
    h.add(1000, "merge", "a", None, "merged", "x", ms=30)
    h.add(1000, "merge", "b", None, "merged", "y", ms=20)
    h.task_done("c", "x", 1000, 2000)
    h.phase("spawn", 1500, 1600, resume=True)
    h.task_done("d", "y", 1000, 2000)
    h.phase("drain", 2000, 2100)
    h.add(2100, "run", "r", "running", "finished")
    return h


def test_phases_add_up_and_the_break_even_is_overhead_over_n_minus_k():
    m = compute_metrics(dump("abcd", two_by_two().rows))
    assert m["wall_clock_ms"] == 2000
    assert (m["setup_ms"], m["spawn_ms"], m["drain_ms"], m["final_merge_ms"]) == (500, 400, 100, 0)
    assert m["orchestration_overhead_ms"] == 1000
    assert m["overhead_share"] == pytest.approx(1000 / 3000, abs=1e-4)
    assert m["solo_estimate_ms"] == 4000
    assert m["speedup_vs_solo"] == pytest.approx(4000 / 3000, abs=1e-4)
    # n = 4 tasks of mean 1000 ms, k = 2000 / 1000 = 2 deep: 1000 / (4 - 2)
    assert m["break_even_task_ms"] == 500.0
    # at that length one agent takes 4 x 500 = 2000 ms, the run 2 x 500 + 1000 = 2000 ms: even
    assert m["merge_ms"] == 50
    assert "(33% of wall+overhead)" in overhead_line(m) and "longer than 0.5s" in overhead_line(m)
    rows = dict(overhead_rows(m))
    assert rows["orchestration overhead"].startswith("1.00 s (setup 0.50, spawn 0.40, drain 0.10, final merge 0.00)")
    assert rows["speedup vs solo / break-even task"] == "1.33x / 0.50 s"


def test_a_chain_never_pays_and_a_run_without_phases_costs_nothing():
    h = History()
    h.task_done("a", "x", 0, 1000)
    h.task_done("b", "x", 1000, 2000)
    h.phase("final_merge", 2000, 2250, branches=1)
    d = dump("ab", h.rows, [Dependency(from_id="a", to_id="b", type="blocks")])
    m = overhead_metrics(d, 2000, {"a": 1000, "b": 1000})
    assert m["final_merge_ms"] == m["orchestration_overhead_ms"] == 250
    assert m["break_even_task_ms"] is None  # n = 2 = k: no shorter than one agent even without overhead
    assert m["speedup_vs_solo"] == pytest.approx(2000 / 2250, abs=1e-4)
    assert "never pays off" in overhead_line(m)
    assert dict(overhead_rows(m))["speedup vs solo / break-even task"] == "0.89x / never pays"

    bare = overhead_metrics(dump("ab", h.rows[:6]), 2000, {"a": 1000, "b": 1000})
    assert bare["orchestration_overhead_ms"] == 0 and bare["overhead_share"] == 0.0
    assert phase_ms(dump("ab", h.rows[:6])) == {"setup": 0, "spawn": 0, "drain": 0, "final_merge": 0}


def test_break_even_edge_cases():
    assert break_even_task_ms(600, 1000, [500, 500, 500, 500]) == pytest.approx(600 / (4 - 2))
    assert break_even_task_ms(600, 0, []) is None  # nothing completed
    assert break_even_task_ms(600, 1000, [0, 0]) is None  # tasks of no length
    assert break_even_task_ms(0, 1000, [1000, 1000]) == 0.0  # no overhead: pays whatever the length
    assert "no completed task" in overhead_line(overhead_metrics(dump("", []), 0, {}))
