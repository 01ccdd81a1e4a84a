"""A graph that grows during a run (coordstore/base.py ``add_tasks``, ``link``, ``unlink``; rules in
coordstore/growth.py), run over every backend: readiness follows at once, refusals change nothing,
history names the author and its chains hold, and growth races claims in real processes."""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
from collections import Counter

import pytest

from coordstore import open_store
from coordstore.errors import GraphError, InvalidTransition, NotFound
from coordstore.models import Dependency, Run, Task

from conftest import make_graph
from contract_helpers import chain_errors, claimed, done, ready, refused

CTX = mp.get_context("fork")  # the parent closes its store before forking; children open their own
JOIN_TIMEOUT_S = 120
IDLE_SLEEP_S = 0.005


def tasks(*ids: str, **fields) -> list[Task]:
    return [Task(id=t, title=t.upper(), **fields) for t in ids]


def dep(a: str, b: str, kind: str = "blocks") -> Dependency:
    return Dependency(from_id=a, to_id=b, type=kind)


def test_subtree_under_a_pending_leaf_makes_it_a_container(store, new_run):
    run = new_run(["p", "q"])
    got = store.add_tasks(run, tasks("c1", "c2"), [dep("c1", "c2")], parent="p", by="planner")
    assert [(t.id, t.status) for t in got] == [("c1", "pending"), ("c2", "pending")]
    assert [t.id for t in store.list_tasks(run, parent="p")] == ["c1", "c2"]
    assert ready(store, run) == ["q", "c1"]  # p is a container now: not work
    assert claimed(store, run, 1, within="p") == ["c1"]
    assert store.claim(run, "p", "w") is None
    store.start(run, "c1", "w", 1)
    store.complete(run, "c1", "w", 1)
    assert store.get_task(run, "p").status == "pending"  # c2 still open
    assert claimed(store, run, 3) == ["q", "c2", None]  # never p
    store.start(run, "c2", "w", 1)
    store.complete(run, "c2", "w", 1)
    assert store.get_task(run, "p").status == "completed"  # the usual container cascade
    assert chain_errors(store.history(run)) == []


def test_added_tasks_rows_name_the_author(store, new_run):
    run = new_run(["p"])
    store.add_tasks(run, tasks("c"), parent="p", by="planner")
    first = store.history(run, entity_id="c")[0]
    assert (first.from_state, first.to_state, first.agent, first.reason) == (None, "pending", "planner", "added")
    assert first.data["created_by"] == "planner"
    linked = store.history(run, entity_id="p")[-1]
    assert (linked.from_state, linked.to_state, linked.agent) == ("pending", "pending", "planner")
    assert linked.data == {"action": "linked", "from": "p", "to": "c", "type": "contains", "by": "planner"}
    assert chain_errors(store.history(run)) == []


def test_added_blockers_stop_an_existing_task_being_ready(store, new_run):
    run = new_run(["a", "b"])
    store.add_tasks(run, tasks("x", "y"), [dep("x", "b"), dep("y", "x"), dep("a", "y")], by="planner")
    assert ready(store, run) == ["a"]
    done(store, run, "a")
    assert ready(store, run) == ["y"]
    done(store, run, "y")
    done(store, run, "x")
    assert ready(store, run) == ["b"]
    assert chain_errors(store.history(run)) == []


def test_link_and_unlink_change_readiness(store, new_run):
    run = new_run(["a", "b", "c"])
    store.link(run, "a", "b", by="lead")
    assert ready(store, run) == ["a", "c"]
    store.link(run, "c", "a", type="follows", by="lead")  # c follows a: a blocks c too
    assert ready(store, run) == ["a"]
    row = store.history(run, entity_id="c")[-1]
    assert (row.from_state, row.to_state, row.data["action"], row.agent) == ("pending", "pending", "linked", "lead")
    store.unlink(run, "a", "b", by="lead")
    assert ready(store, run) == ["a", "b"]
    assert store.history(run, entity_id="b")[-1].data["action"] == "unlinked"
    assert store.dependencies(run) == [dep("c", "a", "follows")]
    done(store, run, "a")
    assert ready(store, run) == ["b", "c"]
    store.link(run, "a", "b")  # a completed blocker: b stays ready
    assert ready(store, run) == ["b", "c"]
    assert chain_errors(store.history(run)) == []


def test_a_cycle_is_refused_named_and_nothing_changes(store, new_run):
    run = new_run(["a", "b"], [("a", "blocks", "b")])
    before = store.dump_run(run)
    with pytest.raises(GraphError, match=r"cycle: a -> b -> a"):
        store.link(run, "b", "a")
    with pytest.raises(GraphError, match=r"cycle: a -> b -> x -> a"):
        store.add_tasks(run, tasks("x"), [dep("b", "x"), dep("x", "a")], by="planner")
    with pytest.raises(GraphError, match="no task 'ghost'"):
        store.add_tasks(run, tasks("x"), [dep("ghost", "x")])
    with pytest.raises(GraphError, match="file_scope"):
        store.add_tasks(run, tasks("x", file_scope=["../outside"]))
    assert store.dump_run(run) == before


def test_refusals_change_nothing(store, new_run):
    run = new_run(["a", "b", "p", "w1"])
    assert store.claim(run, "w1", "w") is not None
    with refused(store, run, InvalidTransition) as e:
        store.add_tasks(run, tasks("c", "a", "b"))
    assert "already exist: a, b" in str(e.value)
    with refused(store, run, InvalidTransition) as e:
        store.add_tasks(run, tasks("c"), parent="w1")
    assert "task 'w1' is assigned; children can be added under a pending task or an open container" in str(e.value)
    with refused(store, run, InvalidTransition) as e:
        store.link(run, "a", "w1")
    assert "task 'w1' is assigned; only a pending task can gain a blocker" in str(e.value)
    with refused(store, run, NotFound):
        store.add_tasks(run, tasks("c"), parent="nope")
    with refused(store, run, NotFound):
        store.link(run, "a", "nope")
    with refused(store, run, NotFound) as e:
        store.unlink(run, "a", "b")
    assert "no dependency a -blocks-> b" in str(e.value)
    with refused(store, run, InvalidTransition):
        store.link(run, "a", "b", type="contains")
    with refused(store, run, InvalidTransition):
        store.add_tasks(run, tasks("c"), [dep("p", "a", "contains")])  # existing tasks keep their place
    store.link(run, "a", "b")
    with refused(store, run, InvalidTransition):
        store.link(run, "a", "b")
    store.fail(run, "a", None, None, "broken")
    with refused(store, run, InvalidTransition) as e:
        store.link(run, "a", "p")
    assert "task 'a' is failed; it can block nothing new" in str(e.value)


def test_children_under_an_open_container_not_a_closed_one(store, new_run):
    run = new_run(["p", "c1"], [("p", "contains", "c1")])
    store.assign(run, "p", "lead", by="orch")  # hybrid: p's owner owns the subtree
    store.add_tasks(run, tasks("c2"), parent="p", by="lead")
    done(store, run, "c1")
    assert store.get_task(run, "p").status == "assigned"
    done(store, run, "c2")
    assert store.get_task(run, "p").status == "completed"
    with refused(store, run, InvalidTransition):
        store.add_tasks(run, tasks("c3"), parent="p")
    assert chain_errors(store.history(run)) == []


def test_another_process_sees_the_grown_graph(store, store_url, new_run):
    run = new_run(["a", "b", "p"])
    with open_store(store_url) as other:
        other.dump_run(run)  # caught up before the changes below
        store.add_tasks(run, tasks("c"), [dep("a", "c")], parent="p", by="planner")
        store.link(run, "a", "b")
        store.unlink(run, "a", "b")
        assert other.dump_run(run) == store.dump_run(run)
        assert ready(other, run) == ["a", "b"]


# ---------------------------------------------------------------------------- growth under claims
PARENTS, ADDS, CLAIMERS = 4, 25, 4


def _adder(url, run, i, barrier, out):
    with open_store(url) as store:
        barrier.wait()
        for n in range(ADDS):
            deps = [dep(f"p{i}-{n - 1}", f"p{i}-{n}")] if n % 2 else []  # every other one waits on the one before
            store.add_tasks(run, tasks(f"p{i}-{n}"), deps, parent=f"p{i}", by=f"adder{i}")
        out.put(("adder", i, []))


def _claimer(url, run, i, barrier, adders_done, out):
    with open_store(url) as store:
        barrier.wait()
        done_ids = []
        while True:
            t = store.claim_next(run, f"w{i}", agent_tags=[])  # the holds need a tag: never taken here
            if t is None:
                if adders_done.is_set() and not store.ready_tasks(run, agent_tags=[]):
                    break
                time.sleep(IDLE_SLEEP_S)
                continue
            store.start(run, t.id, f"w{i}", t.attempt)
            store.complete(run, t.id, f"w{i}", t.attempt)
            done_ids.append(t.id)
        out.put(("claimer", i, done_ids))


def test_growth_storm_every_added_task_completed_once(store_url):
    run = "storm"
    holds = [{"id": f"hold{i}", "title": "hold", "needed_tags": ["hold"]} for i in range(PARENTS)]
    with open_store(store_url) as store:
        store.create_run(Run(id=run))
        store.add_graph(run, make_graph([f"p{i}" for i in range(PARENTS)] + holds,
                                        [(f"p{i}", "contains", f"hold{i}") for i in range(PARENTS)]))
    barrier, adders_done, out = CTX.Barrier(PARENTS + CLAIMERS), CTX.Event(), CTX.Queue()
    adders = [CTX.Process(target=_adder, args=(store_url, run, i, barrier, out)) for i in range(PARENTS)]
    claimers = [CTX.Process(target=_claimer, args=(store_url, run, i, barrier, adders_done, out))
                for i in range(CLAIMERS)]
    for p in adders + claimers:
        p.start()
    results, deadline = [], time.monotonic() + JOIN_TIMEOUT_S
    try:
        while len(results) < PARENTS + CLAIMERS:
            results.append(out.get(timeout=max(0.1, deadline - time.monotonic())))
            if sum(kind == "adder" for kind, _, _ in results) == PARENTS:
                adders_done.set()
    except queue.Empty:
        raise AssertionError(f"only {len(results)} workers reported within {JOIN_TIMEOUT_S}s") from None
    finally:
        for p in adders + claimers:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in adders + claimers)
    added = {f"p{i}-{n}" for i in range(PARENTS) for n in range(ADDS)}
    completions = Counter(t for kind, _, ids in results if kind == "claimer" for t in ids)
    assert set(completions) == added and set(completions.values()) == {1}
    with open_store(store_url) as store:
        for i in range(PARENTS):
            assert store.get_task(run, f"p{i}").status == "pending"  # its hold is open
            done(store, run, f"hold{i}")
        assert {t.status for t in store.list_tasks(run)} == {"completed"}
        hist = store.history(run)
        assert chain_errors(hist) == []
        assert Counter(r.entity_id for r in hist if r.entity == "task" and r.to_state == "completed"
                       and r.from_state != "completed") == Counter({t: 1 for t in added | {f"p{i}" for i in range(PARENTS)}
                                                                    | {f"hold{i}" for i in range(PARENTS)}})
        assert {r.data["created_by"] for r in hist if r.reason == "added"} == {f"adder{i}" for i in range(PARENTS)}
