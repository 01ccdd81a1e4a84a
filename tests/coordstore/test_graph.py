"""Unit tests of coordstore/graph.py: edge meaning, containers, validation messages, estimates."""

from __future__ import annotations

import pytest

from coordstore import graph
from coordstore.errors import GraphError, InputError
from coordstore.models import Dependency, Task, TaskGraph

from conftest import make_graph


def ix_of(tasks, deps=()):
    return graph.validate(make_graph(tasks, deps))


def test_blocks_edge_points_from_blocker_to_blocked():
    ix = ix_of(["a", "b"], [("a", "blocks", "b")])
    assert ix.blockers["b"] == {"a"}
    assert ix.dependents["a"] == {"b"}
    assert graph.is_ready("a", ix, {"a": "pending", "b": "pending"})
    assert not graph.is_ready("b", ix, {"a": "pending", "b": "pending"})
    assert graph.is_ready("b", ix, {"a": "completed", "b": "pending"})


def test_follows_edge_means_to_completes_first():
    # {from: a, to: b, follows}: a follows b, so b runs first
    d = Dependency(from_id="a", to_id="b", type="follows")
    assert d.start_edge == ("b", "a")
    ix = ix_of(["a", "b"], [("a", "follows", "b")])
    assert ix.blockers["a"] == {"b"}
    assert "b" not in ix.blockers
    assert graph.is_ready("b", ix, {"a": "pending", "b": "pending"})
    assert not graph.is_ready("a", ix, {"a": "pending", "b": "pending"})
    assert graph.is_ready("a", ix, {"a": "pending", "b": "completed"})


def test_contains_edge_is_not_a_start_edge():
    d = Dependency(from_id="p", to_id="c", type="contains")
    assert d.start_edge is None
    ix = ix_of(["p", "c"], [("p", "contains", "c")])
    assert ix.parent == {"c": "p"}
    assert ix.children["p"] == ["c"]
    assert ix.is_container("p") and not ix.is_container("c")
    # a container is never ready work, a childless task is
    assert not graph.is_ready("p", ix, {"p": "pending", "c": "pending"})
    assert graph.is_ready("c", ix, {"p": "pending", "c": "pending"})
    assert graph.work_ids(ix) == ["c"]


def test_container_blockers_block_every_descendant():
    ix = ix_of(
        ["x", "p", "q", "g", "y", "other"],
        [("p", "contains", "q"), ("q", "contains", "g"), ("x", "blocks", "p"), ("y", "blocks", "g")],
    )
    assert ix.ancestors("g") == ["q", "p"]
    assert sorted(ix.descendants("p")) == ["g", "q"]
    assert ix.effective_blockers("g") == {"x", "y"}
    assert ix.effective_blockers("q") == {"x"}
    assert ix.effective_blockers("other") == set()
    status = {t: "pending" for t in ix.order} | {"y": "completed"}
    assert not graph.is_ready("g", ix, status)  # x (blocker of grandparent p) not done
    status["x"] = "completed"
    assert graph.is_ready("g", ix, status)
    assert ("x", "g") in ix.effective_blocker_pairs()


def test_failed_blocker_does_not_make_ready():
    ix = ix_of(["a", "b"], [("a", "blocks", "b")])
    for st in ("failed", "cancelled", "working", "assigned"):
        assert not graph.is_ready("b", ix, {"a": st, "b": "pending"}), st
    assert not graph.is_ready("a", ix, {"a": "assigned", "b": "pending"})


def test_two_parents_refused_naming_both():
    with pytest.raises(GraphError) as e:
        ix_of(["p1", "p2", "c"], [("p1", "contains", "c"), ("p2", "contains", "c")])
    msg = str(e.value)
    assert "'c'" in msg and "'p1'" in msg and "'p2'" in msg and "two parents" in msg


def test_same_containment_twice_is_one_parent():
    ix = ix_of(["p", "c"], [("p", "contains", "c"), ("p", "contains", "c")])
    assert ix.children["p"] == ["c"]


def test_dangling_edge_names_missing_task():
    with pytest.raises(GraphError, match="no task 'ghost'"):
        ix_of(["a"], [("a", "blocks", "ghost")])


def test_duplicate_ids_named():
    with pytest.raises(GraphError, match="'a' appears twice"):
        ix_of(["a", "b", "a"])


def test_file_scope_leaving_the_repository_is_refused_naming_task_and_entry():
    bad = Task(id="b", file_scope=["src/ok.py", "../../etc/passwd", ".git/hooks/pre-commit"])
    with pytest.raises(GraphError) as e:
        graph.validate(TaskGraph(tasks=[Task(id="a", file_scope=["src/"]), bad]))
    assert str(e.value) == ("task 'b': file_scope entry '../../etc/passwd' leads out through '..': it must be a path "
                            "within the repository's work tree (and 1 more unsafe entry)")


def test_self_edge_is_a_named_cycle():
    with pytest.raises(GraphError, match=r"cycle: a -> a"):
        ix_of(["a"], [("a", "follows", "a")])


def test_cycle_named_in_order():
    with pytest.raises(GraphError) as e:
        ix_of(["a", "b", "c"], [("a", "blocks", "b"), ("b", "blocks", "c"), ("c", "blocks", "a")])
    assert str(e.value) == "cycle: a -> b -> c -> a"
    assert isinstance(e.value, InputError)


def test_follows_and_blocks_in_opposite_directions_cycle():
    # a blocks b, and a follows b (b before a): a deadlock
    with pytest.raises(GraphError, match="cycle"):
        ix_of(["a", "b"], [("a", "blocks", "b"), ("a", "follows", "b")])
    # the same meaning written twice is fine
    ix = ix_of(["a", "b"], [("a", "blocks", "b"), ("b", "follows", "a")])
    assert ix.blockers["b"] == {"a"}


def test_container_blocking_its_own_child_is_a_cycle():
    # p must complete before c starts, but p completes only after its child c
    with pytest.raises(GraphError) as e:
        ix_of(["p", "c"], [("p", "contains", "c"), ("p", "blocks", "c")])
    assert "p" in str(e.value) and "c" in str(e.value)


def test_blocker_of_container_inside_that_container_is_a_cycle():
    # c1 blocks p, so c1 also blocks p's descendants, c1 included: c1 -> c1
    with pytest.raises(GraphError, match="cycle"):
        ix_of(["p", "c1"], [("p", "contains", "c1"), ("c1", "blocks", "p")])


def test_estimate_fallback():
    assert graph.estimate_ms(Task(id="a", time_estimate_ms=1234, points=9)) == 1234
    assert graph.estimate_ms(Task(id="a", time_estimate_ms=0)) == 0
    assert graph.estimate_ms(Task(id="a", points=1.5)) == int(1.5 * graph.DEFAULT_MS_PER_POINT)
    assert graph.estimate_ms(Task(id="a")) == graph.DEFAULT_ESTIMATE_MS


def test_critical_path_known_answer():
    ix = ix_of(
        [
            {"id": "a", "time_estimate_ms": 1000},
            {"id": "b", "time_estimate_ms": 2000},
            {"id": "c", "time_estimate_ms": 2500},
            {"id": "d", "points": 0.01},  # 600 ms
        ],
        [("a", "blocks", "b"), ("d", "follows", "b")],
    )
    length, path = graph.critical_path(ix)
    assert (length, path) == (3600.0, ["a", "b", "d"])
    tails = graph.tail_lengths(ix)
    assert tails == {"a": 3600.0, "b": 2600.0, "c": 2500.0, "d": 600.0}
    # actual durations override estimates
    assert graph.critical_path(ix, {"c": 10_000})[0] == 10_000.0


def test_critical_path_through_container_leaves():
    # x blocks container p: both leaves of p wait for x; p's tail is its best leaf
    ix = ix_of(
        [
            {"id": "x", "time_estimate_ms": 100},
            {"id": "p", "time_estimate_ms": 99_999},  # a container's own estimate is not work
            {"id": "c1", "time_estimate_ms": 10},
            {"id": "c2", "time_estimate_ms": 50},
            {"id": "z", "time_estimate_ms": 5},
        ],
        [("p", "contains", "c1"), ("p", "contains", "c2"), ("x", "blocks", "p"), ("p", "blocks", "z")],
    )
    length, path = graph.critical_path(ix)
    assert length == 155.0 and path == ["x", "c2", "z"]
    assert graph.tail_lengths(ix)["p"] == 55.0


def test_critical_path_empty_graph():
    assert graph.critical_path(ix_of([])) == (0.0, [])


def test_deep_chain_does_not_recurse():
    n = 5000
    ids = [f"t{i}" for i in range(n)]
    ix = ix_of([{"id": t, "time_estimate_ms": 1} for t in ids], [(ids[i], "blocks", ids[i + 1]) for i in range(n - 1)])
    assert graph.critical_path(ix)[0] == float(n)


def test_tag_routing():
    t = Task(id="a", needed_tags=["py", "db"], wanted_tags=["ui", "fast"])
    assert graph.tags_fit(t, None)
    assert graph.tags_fit(t, ["db", "py", "x"])
    assert not graph.tags_fit(t, ["py"])
    assert not graph.tags_fit(t, [])
    assert graph.wanted_score(t, ["fast"]) == 1
    assert graph.wanted_score(t, ["py", "db"]) == 0
    assert graph.wanted_score(Task(id="b"), ["anything"]) == 1
