"""The load of a variant's workers (orchestrator/views/load.py and the metrics that use it): the
lower bound and utilization over every worker, and starved time, on histories worked out by hand:
a real store driven with explicit times on every backend, and hand-made histories."""

from __future__ import annotations

import pytest

from coordstore.models import Agent, Dependency, Run, RunDump, Task, Transition
from orchestrator.views.load import gaps, merged, overlap_ms
from orchestrator.views.metrics import compute_metrics

from conftest import T0, make_graph


def test_interval_arithmetic():
    assert merged([(5, 9), (0, 2), (1, 3), (9, 10), (4, 4)]) == [(0, 3), (5, 10)]
    assert gaps([(0, 3), (5, 10)], 1, 8) == [(3, 5)]
    assert gaps([], 1, 8) == [(1, 8)] and gaps([(0, 9)], 1, 8) == []
    assert gaps([(2, 3)], 0, 10) == [(0, 2), (3, 10)]
    assert overlap_ms([(0, 3), (5, 10)], [(2, 6), (8, 20)]) == 1 + 1 + 2


def do(store, run, agent, start, done, claimed=None):
    """``agent`` claims the next task at ``claimed`` (default: ``start``), works from ``start``,
    completes at ``done`` (times after T0)."""
    t = store.claim_next(run, agent, now=T0 + (start if claimed is None else claimed))
    store.start(run, t.id, agent, t.attempt, now=T0 + start)
    store.complete(run, t.id, agent, t.attempt, now=T0 + done)
    return t.id


def test_a_chain_starves_the_second_worker_for_all_but_the_hand_overs(store):
    """a -> b -> c, all done by x; y never gets a task; the coordinator is no worker.
    x: a 0-100, b claimed 110 and worked 120-320, c claimed and worked 330-400."""
    store.create_run(Run(id="r"))
    store.add_graph("r", make_graph(["a", "b", "c"], [("a", "blocks", "b"), ("b", "blocks", "c")]), now=T0)
    for aid, role in (("x", "worker"), ("y", "worker"), ("coord", "coordinator")):
        store.register_agent("r", Agent(id=aid, role=role), lease_ms=60_000, now=T0)
    assert [do(store, "r", "x", 0, 100), do(store, "r", "x", 120, 320, claimed=110), do(store, "r", "x", 330, 400)] == [
        "a", "b", "c"]
    m = compute_metrics(store.dump_run("r"))
    assert m["wall_clock_ms"] == 400 and m["workers"] == 2
    assert m["lower_bound_ms"] == 370  # the chain itself: 100 + 200 + 70 (370 / 2 workers is less)
    # y ran nothing and still counts: utilization 0, idle the whole wall clock
    assert m["utilization"] == {"mean": pytest.approx((370 / 400) / 2, abs=1e-4), "x": 0.925, "y": 0.0}
    assert m["busy_ms"] == {"x": 370, "y": 0} and m["idle_ms"] == {"x": 30, "y": 400}
    assert m["tasks_per_agent"] == {"x": 3, "y": 0} and m["gini_tasks"] == 0.5
    # ready and unowned: b from a's completion (100) to its claim (110), c from 320 to 330
    assert m["idle_with_work_ms"] == {"x": 20, "y": 20}
    assert m["starved_ms"] == {"x": 0, "y": 380} and m["starved_total_ms"] == 380
    # per worker: busy + held without working (b assigned 110-120) + starved + idle with work = wall
    assert 370 + 10 + 0 + 20 == 400 == 0 + 0 + 380 + 20


class History:
    def __init__(self):
        self.rows: list[Transition] = []

    def add(self, ts, eid, frm, to, agent=None, entity="task", **data):
        self.rows.append(Transition(seq=len(self.rows) + 1, run_id="r", ts_ms=ts, entity=entity, entity_id=eid,
                                    from_state=frm, to_state=to, agent=agent, data=data))

    def work(self, task, agent, assigned, started, ended, to="completed"):
        self.add(assigned, task, "pending", "assigned", agent, by=agent)
        self.add(started, task, "assigned", "working", agent)
        self.add(ended, task, "working", to, agent)


def dump(tasks, rows, agents=(), deps=()):
    final = {}
    for r in rows:
        if r.entity == "task":
            final[r.entity_id] = r.to_state
    return RunDump(run=Run(id="r"), tasks=[Task(id=t, status=final.get(t, "pending"), needed_tags=tags)
                                           for t, tags in tasks],
                   dependencies=[Dependency(from_id=a, to_id=b, type=k) for a, k, b in deps],
                   agents=[Agent(id=a, role=role) for a, role in agents], history=rows)


def test_one_busy_worker_of_three_bounds_the_run_by_all_three():
    """Four independent tasks of 100 ms done one after another by x; y and z do nothing. The old
    bound divided by the agents that ran a task (400 / 1 = 400, efficiency 1.0): a starving policy
    looked perfect. Over the three workers: 400 / 3."""
    h = History()
    for i in range(4):
        h.work(f"t{i}", "x", 100 * i, 100 * i, 100 * (i + 1))
    m = compute_metrics(dump([(f"t{i}", []) for i in range(4)], h.rows, agents=[("x", "worker"), ("y", "worker"),
                                                                                ("z", "solo"), ("lead", "lead")]))
    assert m["workers"] == 3 and m["wall_clock_ms"] == 400
    assert m["lower_bound_ms"] == pytest.approx(400 / 3, abs=1e-3)
    assert m["efficiency"] == pytest.approx(1 / 3, abs=1e-4)
    assert m["utilization"]["mean"] == pytest.approx(1 / 3, abs=1e-4) and m["utilization"]["z"] == 0.0
    # tasks waited until 300 (t3 was claimed then): y and z idle with work; after that nothing was left
    assert m["idle_with_work_ms"] == {"x": 0, "y": 300, "z": 300}
    assert m["starved_ms"] == {"x": 0, "y": 100, "z": 100} and m["starved_total_ms"] == 200


def test_a_requeued_task_is_waiting_work_again_and_tags_are_ignored():
    """t needs a tag nobody has (it still counts as work waiting); u is requeued from x at 50 and
    claimed again by y at 80. History without import rows: tasks are pending from its start (0)."""
    h = History()
    h.add(0, "u", "pending", "assigned", "x", by="x")
    h.add(10, "u", "assigned", "working", "x")
    h.add(50, "u", "working", "pending", None, previous="x")  # requeued (a stall)
    h.work("u", "y", 80, 90, 190)
    m = compute_metrics(dump([("t", ["gpu"]), ("u", [])], h.rows, agents=[("x", "worker"), ("y", "worker")]))
    # wall clock: first start 10, last completion 190; t waits (ready, unowned) the whole window
    assert m["wall_clock_ms"] == 180
    assert m["starved_ms"] == {"x": 0, "y": 0}
    # x holds u 10-50, then nothing: 140 idle with t waiting; y holds u 80-190: 70 idle before
    assert m["idle_with_work_ms"] == {"x": 140, "y": 70}


def test_waiting_work_starts_when_the_last_blocker_completes_and_ends_at_the_claim():
    """b blocked by a (done by x 0-100); b claimed by x only at 150. y: starved while a ran, idle
    with work 100-150, starved while b runs."""
    h = History()
    h.add(0, "a", None, "pending", None)
    h.add(0, "b", None, "pending", None)
    h.work("a", "x", 0, 0, 100)
    h.work("b", "x", 150, 150, 200)
    m = compute_metrics(dump([("a", []), ("b", [])], h.rows, agents=[("x", "worker"), ("y", "worker")],
                             deps=[("a", "blocks", "b")]))
    assert m["idle_with_work_ms"] == {"x": 50, "y": 50}
    assert m["starved_ms"] == {"x": 0, "y": 150} and m["starved_total_ms"] == 150


def test_no_completed_work_means_no_window_and_no_starvation():
    h = History()
    h.add(0, "a", "pending", "assigned", "x", by="x")
    m = compute_metrics(dump([("a", [])], h.rows, agents=[("x", "worker")]))
    assert m["wall_clock_ms"] == 0 and m["starved_ms"] == {"x": 0} and m["idle_with_work_ms"] == {"x": 0}
    assert m["workers"] == 1 and m["lower_bound_ms"] == 0.0
