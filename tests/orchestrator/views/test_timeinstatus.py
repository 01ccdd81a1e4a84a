"""Time per status and per agent on a hand-built history whose answers are worked out by hand."""

from __future__ import annotations

from coordstore.models import Dependency, Run, RunDump, Task, Transition
from orchestrator.views.metrics import compute_metrics
from orchestrator.views.timeinstatus import breakdown, by_task, periods, run_end_ms, time_in_status


def rows() -> list[Transition]:
    out: list[Transition] = []

    def add(ts, eid, frm, to, agent=None, entity="task", **data):
        out.append(Transition(seq=len(out) + 1, run_id="r", ts_ms=ts, entity=entity, entity_id=eid, from_state=frm,
                              to_state=to, agent=agent, data=data))

    for t in ("p", "a", "b"):
        add(0, t, None, "pending")
    # a: pending 100, assigned 50 (x), working 200 (x), a note in the middle cuts nothing
    add(100, "a", "pending", "assigned", "x", by="x")
    add(100, "a", None, "won", "x", entity="claim")
    add(150, "a", "assigned", "working", "x")
    add(200, "a", "working", "working", "x", action="handoff")
    add(350, "a", "working", "completed", "x")
    # b: y has it 20 + 80, a requeue; x has it 40 + 100, it fails (50), a requeue, pending to the end
    add(100, "b", "pending", "assigned", "y", by="coord")
    add(120, "b", "assigned", "working", "y")
    add(200, "b", "working", "pending", None)
    add(260, "b", "pending", "assigned", "x")
    add(300, "b", "assigned", "working", "x")
    add(400, "b", "working", "failed", "x")
    add(450, "b", "failed", "pending", None)
    add(500, "p", "pending", "working", "x")  # the container: never in the run's sums
    add(1000, "r", "running", "interrupted", entity="run")
    return out


def run_dump(status="interrupted", finished_at=1000) -> RunDump:
    tasks = [Task(id="p"), Task(id="a", status="completed"), Task(id="b")]
    deps = [Dependency(from_id="p", to_id="a", type="contains"), Dependency(from_id="p", to_id="b", type="contains")]
    return RunDump(run=Run(id="r", status=status, finished_at=finished_at), tasks=tasks, dependencies=deps, history=rows())


def test_each_task_by_status_and_by_owner():
    per_task = by_task(periods(rows(), 1000))
    a = breakdown(per_task["a"])
    assert a["time_in_status_ms"] == {"pending": 100, "assigned": 50, "working": 200, "failed": 0}
    assert a["time_by_agent_ms"] == {"x": {"assigned": 50, "working": 200}}
    b = breakdown(per_task["b"])
    # pending 0-100, 200-260 and 450 to the run's end at 1000: 100 + 60 + 550
    assert b["time_in_status_ms"] == {"pending": 710, "assigned": 60, "working": 180, "failed": 50}
    assert b["time_by_agent_ms"] == {"x": {"assigned": 40, "working": 100}, "y": {"assigned": 20, "working": 80}}


def test_the_run_sums_its_work_tasks_in_the_metrics():
    m = time_in_status(run_dump())
    assert m["time_in_status_ms"] == {"pending": 810, "assigned": 110, "working": 380, "failed": 50}
    assert m["time_by_agent_ms"] == {"x": {"assigned": 90, "working": 300}, "y": {"assigned": 20, "working": 80}}
    full = compute_metrics(run_dump())
    assert full["time_in_status_ms"] == m["time_in_status_ms"] and full["time_by_agent_ms"] == m["time_by_agent_ms"]


def test_the_run_end_closes_open_periods():
    hist = rows()
    assert run_end_ms(Run(id="r", status="interrupted", finished_at=1000), hist) == 1000
    assert run_end_ms(Run(id="r", status="running"), hist, now=1500) == 1500  # live: now
    assert run_end_ms(Run(id="r", status="running"), hist) == 1000  # no clock given: the last row
    live = time_in_status(run_dump(status="running", finished_at=None))
    assert live["time_in_status_ms"]["pending"] == 810  # b's last period runs to the last row
