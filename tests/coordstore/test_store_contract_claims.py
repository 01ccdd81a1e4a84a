"""The CoordStore contract of claims (coordstore/base.py ``ready_tasks``, ``claim_next``, ``claim``),
run over every backend: the order and tags a claim honours, the rows each attempt writes, and a race
lost for the task the caller saw (``seen``).

Every refused call is checked to change nothing and write no transition (``refused``).
"""

from __future__ import annotations

import pytest

from coordstore.errors import NotFound
from coordstore.models import Task

from conftest import T0
from contract_helpers import chain_errors, claimed, last, ready, refused


ORDER_TASKS = [  # template order c, a, b, d; a blocks e (long), so a leads the critical path
    {"id": "c", "priority": 5, "time_estimate_ms": 100},
    {"id": "a", "priority": 1, "time_estimate_ms": 1000},
    {"id": "b", "priority": 9, "time_estimate_ms": 100},
    {"id": "d", "priority": 5, "time_estimate_ms": 100},
    {"id": "e", "priority": 1, "time_estimate_ms": 5000},
]


@pytest.mark.parametrize(
    "order,expect",
    [("priority", ["b", "c", "d", "a"]), ("critical-path", ["a", "c", "b", "d"]), ("fifo", ["c", "a", "b", "d"])],
)
def test_ready_and_claim_order(store, new_run, order, expect):
    run = new_run(ORDER_TASKS, [("a", "blocks", "e")])
    assert ready(store, run, order=order) == expect
    assert claimed(store, run, 5, order=order) == expect + [None]


def test_needed_tags_all_required(store, new_run):
    run = new_run([{"id": "n1", "priority": 9, "needed_tags": ["py", "db"]}, {"id": "n2", "priority": 1, "needed_tags": ["py"]}, {"id": "free"}])
    assert ready(store, run, agent_tags=["py"]) == ["free", "n2"]
    assert ready(store, run, agent_tags=["db", "py", "x"]) == ["n1", "free", "n2"]
    assert ready(store, run, agent_tags=[]) == ["free"]
    assert ready(store, run) == ["n1", "free", "n2"]
    assert claimed(store, run, 2, agent_tags=["js"]) == ["free", None]
    assert last(store, run, entity="claim").to_state == "empty"
    assert store.claim_next(run, "w", agent_tags=["py"]).id == "n2"


def test_wanted_tags_preferred(store, new_run):
    run = new_run([{"id": "ui", "priority": 9, "wanted_tags": ["ui"]}, {"id": "py", "priority": 1, "wanted_tags": ["py"]}, {"id": "plain", "priority": 5}])
    assert ready(store, run, agent_tags=["py"]) == ["plain", "py", "ui"]
    assert ready(store, run, agent_tags=["ui"]) == ["ui", "plain", "py"]
    assert claimed(store, run, 3, agent_tags=["py"]) == ["plain", "py", "ui"]


def test_best_ready_is_the_first_ready_task(store, new_run):
    run = new_run(ORDER_TASKS + [{"id": "n", "priority": 9, "needed_tags": ["db"]}, {"id": "w", "priority": 0, "wanted_tags": ["py"]}],
                  [("a", "blocks", "e")])
    for order in ("priority", "critical-path", "fifo"):
        for tags in (None, [], ["py"], ["db"], ["db", "py"]):
            first = (ready(store, run, agent_tags=tags, order=order) or [None])[0]
            assert store.best_ready(run, agent_tags=tags, order=order) == first, (order, tags)
    assert claimed(store, run, 7) == ["b", "n", "c", "d", "a", "w", None]
    assert store.best_ready(run) is None
    with pytest.raises(NotFound):
        store.best_ready("no-such-run")


def test_claim_within_container(store, new_run):
    run = new_run(
        ["P", {"id": "p1", "priority": 1}, "p2", {"id": "g", "priority": 9}, "Q", "q1", "loose"],
        [("P", "contains", "p1"), ("P", "contains", "p2"), ("p2", "contains", "g"), ("Q", "contains", "q1")],
    )
    assert claimed(store, run, 3, within="P") == ["g", "p1", None]
    assert claimed(store, run, 1, within="Q") == ["q1"]
    assert claimed(store, run, 2) == ["loose", None]


# ---------------------------------------------------------------------------- claims and transitions
def test_claim_next_won_and_empty_rows(store, new_run, clock):
    run = new_run(["a"])
    clock.advance(7)
    t = store.claim_next(run, "w1")
    assert (t.id, t.status, t.owner, t.assigned_by, t.attempt, t.claimed_at) == ("a", "assigned", "w1", "w1", 1, T0 + 7)
    claim = store.history(run, entity="claim")
    assert [(r.entity_id, r.to_state, r.agent) for r in claim] == [("a", "won", "w1")]
    row = last(store, run, entity="task")
    assert (row.entity_id, row.from_state, row.to_state, row.agent, row.data.get("by"), row.ts_ms) == ("a", "pending", "assigned", "w1", "w1", T0 + 7)
    assert store.claim_next(run, "w2") is None
    r = last(store, run, entity="claim")
    assert (r.entity_id, r.to_state, r.agent) == ("", "empty", "w2")
    assert store.get_task(run, "a") == t


def test_claim_named_won_lost_notfound(store, new_run):
    run = new_run(["a", "b"], [("a", "blocks", "b")])
    assert store.claim(run, "b", "w1") is None  # blocked
    assert store.claim(run, "a", "w1").owner == "w1"
    assert store.claim(run, "a", "w2") is None  # taken
    assert [(r.entity_id, r.to_state, r.agent) for r in store.history(run, entity="claim")] == [
        ("b", "lost", "w1"), ("a", "won", "w1"), ("a", "lost", "w2")]
    with refused(store, run, NotFound):
        store.claim(run, "ghost", "w1")
    with pytest.raises(NotFound):
        store.claim_next("no-run", "w1")


def _claim_rows(store, run):
    return [(r.entity_id, r.to_state, r.agent, r.data.get("status"), r.data.get("took"))
            for r in store.history(run, entity="claim")]


# with tags the SQLite store picks in Python, without them in one statement: both paths
@pytest.mark.parametrize("tags", [None, ["py"]], ids=["no-tags", "tags"])
def test_claim_next_seen_taken_by_another_writes_lost_then_won(store, new_run, tags):
    run = new_run([{"id": "a", "priority": 2}, {"id": "b", "priority": 1}])
    seen = store.ready_tasks(run, agent_tags=tags)[0].id  # w1 looks: a is best
    assert store.claim_next(run, "w2", agent_tags=tags).id == seen == "a"  # w2 takes it first
    assert store.claim_next(run, "w1", agent_tags=tags, seen=seen).id == "b"
    assert _claim_rows(store, run) == [("a", "won", "w2", None, None), ("a", "lost", "w1", "assigned", "b"),
                                       ("b", "won", "w1", None, None)]
    h = store.history(run)
    lost = next(r for r in h if r.to_state == "lost")
    assert lost.from_state is None and [(r.entity, r.to_state) for r in h if r.seq > lost.seq] == [
        ("claim", "won"), ("task", "assigned")]  # the lost row comes first, in the same step
    assert chain_errors(h) == []


def test_claim_next_seen_available_writes_only_won(store, new_run):
    run = new_run([{"id": "a", "priority": 9}, "b"])
    assert store.claim_next(run, "w1", seen="a").id == "a"
    assert _claim_rows(store, run) == [("a", "won", "w1", None, None)]


def test_claim_next_seen_taken_and_nothing_left_is_lost_not_empty(store, new_run):
    run = new_run(["a"])
    assert store.claim_next(run, "w2").id == "a"
    assert store.claim_next(run, "w1", seen="a") is None
    assert _claim_rows(store, run) == [("a", "won", "w2", None, None), ("a", "lost", "w1", "assigned", None)]
    assert store.claim_next(run, "w1") is None  # seen=None: a look at an empty queue, as before
    assert _claim_rows(store, run)[-1] == ("", "empty", "w1", None, None)


def test_claim_next_seen_inside_a_container(store, new_run):
    run = new_run(["P", "p1", "p2", "loose"], [("P", "contains", "p1"), ("P", "contains", "p2")])
    assert store.claim_next(run, "w2", within="P").id == "p1"
    assert store.claim_next(run, "w1", within="P", seen="p1").id == "p2"
    assert store.claim_next(run, "w1", within="P", seen="p2") is None  # w1 itself took p2: still lost
    assert _claim_rows(store, run)[1:] == [("p1", "lost", "w1", "assigned", "p2"), ("p2", "won", "w1", None, None),
                                           ("p2", "lost", "w1", "assigned", None)]


def test_claim_next_seen_still_ready_is_no_lost_race(store, new_run):
    run = new_run([{"id": "a", "priority": 1}])
    store.add_tasks(run, [Task(id="b", title="B", priority=9)])  # turns ready between the look and the claim
    assert store.claim_next(run, "w1", seen="a").id == "b"
    assert store.claim_next(run, "w1", agent_tags=[], seen="a").id == "a"
    assert store.claim_next(run, "w1", seen=None) is None
    assert [r[:2] for r in _claim_rows(store, run)] == [("b", "won"), ("a", "won"), ("", "empty")]


def test_claim_next_seen_unknown_is_refused(store, new_run):
    run = new_run(["a"])
    with refused(store, run, NotFound):
        store.claim_next(run, "w1", seen="ghost")
    with refused(store, run, NotFound):
        store.claim_next(run, "w1", agent_tags=["py"], seen="ghost")


def test_count_tasks_counts_what_list_tasks_lists(store, new_run):
    run = new_run(["a", "b", "c"], [("a", "blocks", "b")])
    store.claim_next(run, "w")
    for status in (None, "pending", ["pending", "assigned"], ("completed",)):
        assert store.count_tasks(run, status=status) == len(store.list_tasks(run, status=status)), status
    assert store.count_tasks(run, status="assigned") == 1 and store.count_tasks(run, status=[]) == 0
    with pytest.raises(NotFound):
        store.count_tasks("no-such-run")


# ---------------------------------------------------------------------------- idempotency keys
def test_a_claim_retried_with_its_key_returns_the_same_task_and_writes_nothing(store, new_run):
    run = new_run(["a", "b", "c"])
    first = store.claim_next(run, "w1", key="k1")
    won = [r for r in store.history(run) if r.entity == "claim" and r.to_state == "won"]
    assert first.id == "a" and [(r.entity_id, r.key) for r in won] == [("a", "k1")]
    before = store.history(run)
    again = store.claim_next(run, "w1", key="k1")  # the response was lost: the caller asks again
    assert (again.id, again.owner, again.attempt) == ("a", "w1", 1)
    assert store.history(run) == before  # nothing written
    assert store.claim_next(run, "w1", key="k2").id == "b"  # a new key claims anew
    named = store.claim(run, "c", "w2", key="k3")
    assert named.id == "c" and store.claim(run, "c", "w2", key="k3").id == "c"
    assert store.claim(run, "b", "w2", key="k3").id == "c"  # a key names its claim, whatever is asked
    assert [r.key for r in store.history(run) if r.entity == "claim" and r.to_state == "won"] == ["k1", "k2", "k3"]


def test_a_keyed_claim_no_longer_held_replays_as_none(store, new_run):
    run = new_run(["a", "b"])
    t = store.claim_next(run, "w1", key="k1")
    store.start(run, t.id, "w1", t.attempt)
    store.complete(run, t.id, "w1", t.attempt)
    before = store.history(run)
    assert store.claim_next(run, "w1", key="k1") is None  # its task is done: nothing to resume, nothing taken
    assert store.claim_next(run, "w2", key="k1") is None  # another agent's key replays as not its own
    assert store.history(run) == before and store.get_task(run, "b").status == "pending"
