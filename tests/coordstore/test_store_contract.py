"""The CoordStore contract (coordstore/base.py docstrings), run over every backend.

Every refused call is checked to change nothing and write no transition (``refused``).
"""

from __future__ import annotations

import pytest

from coordstore.errors import GraphError, InvalidTransition, NotFound, StaleAttempt
from coordstore.models import Run

from conftest import T0, make_graph
from contract_helpers import chain_errors, done, last, ready, refused, rows


# ---------------------------------------------------------------------------- runs
def test_runs_create_get_list_finish(store, clock):
    r1 = store.create_run(Run(id="r1", experiment="e", variant="v", seed=7, config={"k": [1, 2]}))
    assert r1.status == "running" and r1.created_at == T0 and r1.seed == 7
    clock.advance(5)
    store.create_run(Run(id="r2"))
    store.create_run(Run(id="r0", created_at=42))  # an explicit created_at is kept, and is the oldest
    assert store.get_run("r0").created_at == 42
    assert [r.id for r in store.list_runs()] == ["r0", "r1", "r2"]
    assert store.get_run("r1") == r1
    assert rows(store, "r1", entity="run") == [("r1", None, "running")]
    clock.advance(10)
    f = store.finish_run("r1", "finished", reason="all done")
    assert (f.status, f.finished_at, f.reason) == ("finished", T0 + 15, "all done")
    assert store.get_run("r1") == f
    assert rows(store, "r1", entity="run")[-1] == ("r1", "running", "finished")
    n = len(store.history("r1"))
    store.finish_run("r1", "finished")  # same status: no-op
    assert len(store.history("r1")) == n
    assert store.get_run("r2").status == "running"


def test_reopen_run_resumes_only_an_interrupted_run(store, clock, new_run):
    run = new_run(["a"])
    assert store.reopen_run(run) == store.get_run(run)  # running already: a no-op
    assert rows(store, run, entity="run") == [(run, None, "running")]
    clock.advance(5)
    store.finish_run(run, "interrupted", reason="SIGTERM received")
    clock.advance(5)
    r = store.reopen_run(run, reason="resumed")
    assert (r.status, r.finished_at, r.reason) == ("running", None, "resumed") and store.get_run(run) == r
    assert rows(store, run, entity="run")[-2:] == [(run, "running", "interrupted"), (run, "interrupted", "running")]
    assert store.history(run, entity="run")[-1].ts_ms == T0 + 10
    store.finish_run(run, "interrupted")
    store.reopen_run(run, now=T0)  # a resumer's stale clock: the row is raised, the chain holds
    assert store.history(run, entity="run")[-1].ts_ms == T0 + 10 and chain_errors(store.history(run)) == []
    for ended in ("finished", "failed"):
        store.finish_run(run, ended)
        with refused(store, run, InvalidTransition) as e:
            store.reopen_run(run)
        assert f"already {ended}" in str(e.value) and store.get_run(run).status == ended
    with pytest.raises(NotFound):
        store.reopen_run("nope")


def test_run_duplicate_and_missing(store, new_run):
    run = new_run(["a"])
    with refused(store, run, InvalidTransition):
        store.create_run(Run(id=run))
    with pytest.raises(NotFound):
        store.get_run("nope")
    with pytest.raises(NotFound):
        store.finish_run("nope", "finished")
    assert [r.id for r in store.list_runs()] == [run]


# ---------------------------------------------------------------------------- add_graph
INVALID = [
    (["a", "b", "c"], [("a", "blocks", "b"), ("b", "blocks", "c"), ("c", "blocks", "a")], "cycle: a -> b -> c -> a"),
    (["a", "b"], [("a", "blocks", "b"), ("a", "follows", "b")], "cycle: a -> b -> a"),
    (["a"], [("a", "blocks", "ghost")], "'ghost'"),
    (["a", "b", "a"], [], "'a' appears twice"),
    (["p1", "p2", "c"], [("p1", "contains", "c"), ("p2", "contains", "c")], "two parents"),
]


@pytest.mark.parametrize("tasks,deps,needle", INVALID, ids=["cycle", "follows-cycle", "dangling", "dup-id", "two-parents"])
def test_add_graph_invalid_leaves_store_unchanged(store, new_run, tasks, deps, needle):
    run = new_run()
    with refused(store, run, GraphError) as e:
        store.add_graph(run, make_graph(tasks, deps))
    assert needle in str(e.value)
    assert store.list_tasks(run) == [] and store.dependencies(run) == [] and rows(store, run) == []


def test_add_graph_rows_order_and_dependencies(store, new_run):
    deps = [("b", "follows", "a"), ("p", "contains", "c"), ("a", "blocks", "c")]
    run = new_run(["b", "a", "p", "c"], deps)
    assert [t.id for t in store.list_tasks(run)] == ["b", "a", "p", "c"]
    assert [(d.from_id, d.type, d.to_id) for d in store.dependencies(run)] == deps
    hist = store.history(run, entity="task")
    assert sorted((r.entity_id, r.from_state, r.to_state, r.reason) for r in hist) == [
        (t, None, "pending", "import") for t in ["a", "b", "c", "p"]
    ]
    t = store.get_task(run, "a")
    assert (t.status, t.attempt, t.owner, t.created_at, t.title) == ("pending", 0, None, T0, "A")


def test_add_graph_existing_ids_refused_all_or_nothing(store, new_run):
    run = new_run(["a", "b"])
    with refused(store, run, InvalidTransition):
        store.add_graph(run, make_graph(["c", "a"]))
    with pytest.raises(NotFound):
        store.add_graph("nope", make_graph(["x"]))


def test_add_graph_keeps_imported_status(store, new_run):
    run = new_run([{"id": "a", "status": "completed"}, "b"], [("a", "blocks", "b")])
    assert store.get_task(run, "a").status == "completed"
    assert ready(store, run) == ["b"]


# ---------------------------------------------------------------------------- readiness
def test_blocks_and_follows_direction(store, new_run):
    # c follows d: d first
    run = new_run(["a", "b", "c", "d"], [("a", "blocks", "b"), ("c", "follows", "d")])
    assert ready(store, run) == ["a", "d"]
    done(store, run, "d")
    assert ready(store, run) == ["a", "c"]
    done(store, run, "a")
    assert ready(store, run) == ["b", "c"]


def test_container_not_work_blocked_by_its_blockers_completes_with_children(store, new_run):
    run = new_run(
        ["x", "p", "c1", "q", "g", "after"],
        [("p", "contains", "c1"), ("p", "contains", "q"), ("q", "contains", "g"), ("x", "blocks", "p"), ("p", "blocks", "after")],
    )
    assert ready(store, run) == ["x"]
    assert store.claim(run, "p", "w") is None  # a container with children is not claimable
    assert last(store, run, entity="claim").to_state == "lost"
    assert store.get_task(run, "p").status == "pending"
    done(store, run, "x")
    assert ready(store, run) == ["c1", "g"]
    done(store, run, "g")
    assert store.get_task(run, "q").status == "completed"  # nested container completes first
    assert store.get_task(run, "p").status == "pending"
    assert ready(store, run) == ["c1"]
    done(store, run, "c1")
    p = store.get_task(run, "p")
    assert p.status == "completed" and p.completed_at is not None
    assert rows(store, run, entity_id="p")[-1] == ("p", "pending", "completed")
    assert ready(store, run) == ["after"]


def test_container_with_failed_child_fails(store, new_run):
    run = new_run(["p", "c1", "c2"], [("p", "contains", "c1"), ("p", "contains", "c2")])
    store.fail(run, "c2", None, None, "broken")
    assert store.get_task(run, "p").status == "pending"
    done(store, run, "c1")
    p = store.get_task(run, "p")
    assert p.status == "failed" and p.reason
    assert rows(store, run, entity_id="p")[-1][2] == "failed"


def test_assign_container_owns_subtree(store, new_run):
    run = new_run(["x", "P", "c1", "c2"], [("P", "contains", "c1"), ("P", "contains", "c2"), ("x", "blocks", "P")])
    p = store.assign(run, "P", "lead", by="coord")  # allowed before its blocker x completed
    assert (p.status, p.owner, p.assigned_by, p.attempt) == ("assigned", "lead", "coord", 1)
    assert store.claim_next(run, "w", within="P") is None  # children still wait for x
    done(store, run, "x")
    for c in ("c1", "c2"):
        t = store.claim_next(run, "w", within="P")
        store.complete(run, t.id, "w", t.attempt)
    assert store.get_task(run, "P").status == "completed"
    assert rows(store, run, entity_id="P")[-1] == ("P", "assigned", "completed")


# ---------------------------------------------------------------------------- transitions


def test_assign_and_reassign(store, new_run):
    run = new_run(["a", "b", "c"], [("b", "blocks", "c")])
    t = store.assign(run, "a", "w1", by="coord")
    assert (t.status, t.owner, t.assigned_by, t.attempt) == ("assigned", "w1", "coord", 1)
    row = last(store, run, entity="task")
    assert (row.from_state, row.to_state, row.agent, row.data.get("by")) == ("pending", "assigned", "w1", "coord")
    t = store.assign(run, "a", "w2", by="coord")
    assert (t.owner, t.attempt) == ("w2", 2)
    row = last(store, run, entity="task")
    assert (row.from_state, row.to_state, row.agent, row.data.get("previous")) == ("assigned", "assigned", "w2", "w1")
    with refused(store, run, InvalidTransition):
        store.assign(run, "c", "w1", by="coord")  # not ready
    store.start(run, "a", "w2", 2)
    with refused(store, run, InvalidTransition):
        store.assign(run, "a", "w1", by="coord")  # already working
    store.complete(run, "a", "w2", 2)
    with refused(store, run, InvalidTransition):
        store.assign(run, "a", "w1", by="coord")
    with refused(store, run, NotFound):
        store.assign(run, "ghost", "w1", by="coord")


def test_start_complete(store, new_run, clock):
    run = new_run(["a", "b"])
    t = store.claim(run, "a", "w1")
    with refused(store, run, StaleAttempt):
        store.start(run, "a", "w2", t.attempt)
    with refused(store, run, StaleAttempt):
        store.start(run, "a", "w1", t.attempt + 1)
    clock.advance(3)
    s = store.start(run, "a", "w1", t.attempt)
    assert (s.status, s.started_at) == ("working", T0 + 3)
    assert rows(store, run, entity_id="a")[-1] == ("a", "assigned", "working")
    assert last(store, run, entity="task").agent == "w1"
    with refused(store, run, InvalidTransition):
        store.start(run, "a", "w1", t.attempt)
    with refused(store, run, StaleAttempt):
        store.complete(run, "a", "w2", t.attempt)
    clock.advance(4)
    c = store.complete(run, "a", "w1", t.attempt, data={"sha": "abc123"})
    assert (c.status, c.completed_by, c.completed_at, c.owner) == ("completed", "w1", T0 + 7, "w1")
    row = last(store, run, entity="task")
    assert (row.from_state, row.to_state, row.agent, row.data.get("sha")) == ("working", "completed", "w1", "abc123")
    with refused(store, run, InvalidTransition):
        store.complete(run, "a", "w1", t.attempt)
    b = store.claim(run, "b", "w1")  # complete straight from assigned
    assert store.complete(run, "b", "w1", b.attempt).status == "completed"
    assert rows(store, run, entity_id="b")[-1] == ("b", "assigned", "completed")
    with refused(store, run, (InvalidTransition, StaleAttempt)):
        store.start(run, "b", "w1", b.attempt)


def test_fail(store, new_run):
    run = new_run(["a", "b", "c"])
    t = store.claim(run, "a", "w1")
    with refused(store, run, StaleAttempt):
        store.fail(run, "a", "w2", t.attempt, "not mine")
    f = store.fail(run, "a", "w1", t.attempt, "tests fail")
    assert (f.status, f.reason) == ("failed", "tests fail")
    row = last(store, run, entity="task")
    assert (row.entity_id, row.from_state, row.to_state, row.reason) == ("a", "assigned", "failed", "tests fail")
    t = store.claim(run, "b", "w1")
    store.start(run, "b", "w1", t.attempt)
    assert store.fail(run, "b", None, None, "supervisor: stalled").status == "failed"  # by the orchestrator
    assert rows(store, run, entity_id="b")[-1] == ("b", "working", "failed")
    assert store.fail(run, "c", None, None, "dropped").status == "failed"  # pending, by the orchestrator
    with refused(store, run, InvalidTransition):
        store.fail(run, "c", None, None, "again")


def test_requeue(store, new_run):
    run = new_run(["a", "b"])
    t = store.claim(run, "a", "w1")
    r = store.requeue(run, "a", "stalled", by="supervisor")
    assert (r.status, r.owner, r.attempt, r.reason) == ("pending", None, 1, "stalled")
    row = last(store, run, entity="task")
    assert (row.from_state, row.to_state, row.reason, row.data.get("previous")) == ("assigned", "pending", "stalled", "w1")
    t = store.claim(run, "a", "w2")
    assert t.attempt == 2
    store.start(run, "a", "w2", 2)
    assert store.requeue(run, "a", "crash").status == "pending"
    assert rows(store, run, entity_id="a")[-1] == ("a", "working", "pending")
    store.fail(run, "a", None, None, "x")
    assert store.requeue(run, "a", "retry").status == "pending"
    with refused(store, run, InvalidTransition):
        store.requeue(run, "b", "pending already")
    done(store, run, "b")
    with refused(store, run, InvalidTransition):
        store.requeue(run, "b", "completed")


def test_cancel(store, new_run):
    run = new_run(["a", "b", "c"])
    assert store.cancel(run, "a", "not needed").status == "cancelled"
    assert last(store, run, entity="task").reason == "not needed"
    store.claim(run, "b", "w1")
    assert store.cancel(run, "b", "scope cut", by="coord").status == "cancelled"
    assert rows(store, run, entity_id="b")[-1] == ("b", "assigned", "cancelled")
    for tid in ("a", "b"):
        with refused(store, run, InvalidTransition):
            store.cancel(run, tid, "again")
    done(store, run, "c")
    with refused(store, run, InvalidTransition):
        store.cancel(run, "c", "too late")


def test_stale_attempt_late_write_refused(store, new_run):
    run = new_run(["a"])
    old = store.claim(run, "a", "w1")
    store.start(run, "a", "w1", old.attempt)
    store.requeue(run, "a", "stalled")
    new = store.claim(run, "a", "w2")
    assert new.attempt == old.attempt + 1
    for call in (
        lambda: store.complete(run, "a", "w1", old.attempt),
        lambda: store.fail(run, "a", "w1", old.attempt, "late"),
        lambda: store.start(run, "a", "w1", old.attempt),
    ):
        with refused(store, run, StaleAttempt):
            call()
    store.requeue(run, "a", "again")
    same = store.claim(run, "a", "w1")  # the same agent, a newer attempt
    with refused(store, run, StaleAttempt):
        store.complete(run, "a", "w1", old.attempt)
    assert store.complete(run, "a", "w1", same.attempt).status == "completed"


def test_not_found(store, new_run):
    run = new_run(["a"])
    calls = [
        lambda: store.get_task(run, "ghost"),
        lambda: store.get_task("no-run", "a"),
        lambda: store.start(run, "ghost", "w", 1),
        lambda: store.complete(run, "ghost", "w", 1),
        lambda: store.fail(run, "ghost", None, None, "x"),
        lambda: store.requeue(run, "ghost", "x"),
        lambda: store.cancel(run, "ghost", "x"),
        lambda: store.get_agent(run, "ghost"),
        lambda: store.heartbeat(run, "ghost", 1000),
        lambda: store.set_agent_status(run, "ghost", "active"),
    ]
    for call in calls:
        with refused(store, run, NotFound):
            call()


def test_list_tasks_filters_and_usage(store, new_run):
    run = new_run(["P", "a", "b", "c"], [("P", "contains", "a"), ("P", "contains", "b")])
    store.claim(run, "a", "w1")
    store.claim(run, "c", "w2")
    assert [t.id for t in store.list_tasks(run, status="assigned")] == ["a", "c"]
    assert [t.id for t in store.list_tasks(run, status=["pending", "assigned"])] == ["P", "a", "b", "c"]
    assert [t.id for t in store.list_tasks(run, owner="w2")] == ["c"]
    assert [t.id for t in store.list_tasks(run, parent="P")] == ["a", "b"]
    assert [t.id for t in store.list_tasks(run, status="pending", parent="P")] == ["b"]
    assert store.list_tasks(run, status=[]) == []  # no status asked, none listed (on every backend)
    n = len(store.history(run))
    store.add_usage(run, "a", tokens_in=10, tokens_out=5, cost_usd=0.25)
    store.add_usage(run, "a", tokens_in=1, tokens_cached=7, tokens_thinking=3, cost_usd=0.5)
    a = store.get_task(run, "a")
    assert (a.tokens_in, a.tokens_out, a.tokens_cached, a.tokens_thinking, a.cost_usd) == (11, 5, 7, 3, 0.75)
    assert len(store.history(run)) == n


def test_usage_adds_all_eight_metric_slots(store, new_run):
    run = new_run(["a", "b"])
    store.add_usage(run, "a", 1, 2, 3, 4, 0.5, tokens_image=5, tokens_audio=6, metric_6=7, metric_7=8)
    store.add_usage(run, "a", tokens_in=10, tokens_audio=60, metric_7=80, cost_usd=0.25)
    a = store.get_task(run, "a")
    assert a.metrics == [11, 2, 3, 4, 5, 66, 7, 88] and a.cost_usd == 0.75
    assert [t.metrics for t in store.list_tasks(run)] == [[11, 2, 3, 4, 5, 66, 7, 88], [0] * 8]  # b untouched
    assert [t.metrics for t in store.dump_run(run).tasks] == [[11, 2, 3, 4, 5, 66, 7, 88], [0] * 8]
    with refused(store, run, NotFound):
        store.add_usage(run, "nope", tokens_image=1)
