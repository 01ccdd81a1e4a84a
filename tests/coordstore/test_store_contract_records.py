"""The CoordStore contract, continued: failure cascades, agents, events, history, snapshots,
several instances. Run over every backend like test_store_contract.py."""

from __future__ import annotations

import pytest

from coordstore import open_store
from coordstore.errors import InvalidTransition, NotFound, StaleAttempt
from coordstore.models import Agent, Event, Run, Transition

from conftest import T0
from contract_helpers import done, last, ready, refused, rows


# ---------------------------------------------------------------------------- failure cascades
CASCADE = (["src", "b", "c", "d", "P", "p1", "e"],
           [("src", "blocks", "b"), ("b", "blocks", "c"), ("d", "follows", "src"), ("src", "blocks", "P"), ("P", "contains", "p1")])


def test_failed_blocker_cancels_transitive_dependents(store, new_run):
    run = new_run(*CASCADE, on_blocker_failure="cancel")
    t = store.claim(run, "src", "w1")
    n = len(store.history(run))
    store.fail(run, "src", "w1", t.attempt, "boom")
    status = {x.id: x.status for x in store.list_tasks(run)}
    assert status == {"src": "failed", "b": "cancelled", "c": "cancelled", "d": "cancelled", "P": "cancelled", "p1": "cancelled", "e": "pending"}
    new = store.history(run, since_seq=n)
    assert sorted((r.entity_id, r.from_state, r.to_state) for r in new) == sorted(
        [("src", "assigned", "failed")] + [(x, "pending", "cancelled") for x in "bcdP"] + [("p1", "pending", "cancelled")])
    for r in new:
        if r.entity_id != "src":
            assert "src" in (r.reason or ""), f"cascade row for {r.entity_id} does not name the blocker: {r.reason!r}"
            assert "src" in store.get_task(run, r.entity_id).reason
    store.requeue(run, "src", "retry")  # dependents cancelled because of src stay cancelled
    assert store.get_task(run, "b").status == "cancelled"
    assert ready(store, run) == ["src", "e"]


def test_cancel_cascades_whatever_the_policy(store, new_run):
    run = new_run(*CASCADE, on_blocker_failure="wait")
    store.cancel(run, "src", "scope cut")
    assert {x.id for x in store.list_tasks(run, status="cancelled")} == {"src", "b", "c", "d", "P", "p1"}


def test_wait_policy_holds_dependents_until_retry_completes(store, new_run):
    run = new_run(*CASCADE, on_blocker_failure="wait")
    t = store.claim(run, "src", "w1")
    store.fail(run, "src", "w1", t.attempt, "boom")
    assert {x.id for x in store.list_tasks(run, status="pending")} == {"b", "c", "d", "P", "p1", "e"}
    assert ready(store, run) == ["e"]
    store.requeue(run, "src", "retry")
    assert ready(store, run) == ["src", "e"]
    t = store.claim(run, "src", "w2")
    assert t.attempt == 2
    store.start(run, "src", "w2", 2)
    store.complete(run, "src", "w2", 2)
    assert ready(store, run) == ["b", "d", "p1", "e"]


# ---------------------------------------------------------------------------- agents
def test_register_heartbeat_status(store, new_run, clock):
    run = new_run(["a"])
    a = store.register_agent(run, Agent(id="w1", kind="sim", tags=["py"], pid=4242), lease_ms=1000)
    assert (a.status, a.registered_at, a.lease_expires, a.tags) == ("registered", T0, T0 + 1000, ["py"])
    row = last(store, run, entity="agent")
    assert (row.entity_id, row.from_state, row.to_state, row.data.get("pid"), row.data.get("kind")) == ("w1", None, "registered", 4242, "sim")
    n = len(store.history(run))
    clock.advance(500)
    h = store.heartbeat(run, "w1", 1000, current_task="a")
    assert (h.lease_expires, h.last_heartbeat, h.current_task) == (T0 + 1500, T0 + 500, "a")
    assert len(store.history(run)) == n
    s = store.set_agent_status(run, "w1", "active", reason="first event", data={"events": 3})
    assert s.status == "active"
    row = last(store, run, entity="agent")
    assert (row.from_state, row.to_state, row.reason, row.data.get("events")) == ("registered", "active", "first event", 3)
    n = len(store.history(run))
    store.set_agent_status(run, "w1", "active", reason="still")
    assert len(store.history(run)) == n
    store.set_agent_status(run, "w1", "dead", reason="crashed")
    clock.advance(100)
    r = store.register_agent(run, Agent(id="w1", kind="sim", pid=4343), lease_ms=1000)  # respawn
    assert (r.status, r.pid, r.lease_expires) == ("registered", 4343, T0 + 600 + 1000)
    assert rows(store, run, entity="agent")[-1] == ("w1", "dead", "registered")
    store.register_agent(run, Agent(id="w0"), lease_ms=1000)
    assert [x.id for x in store.list_agents(run)] == ["w0", "w1"]
    assert store.get_agent(run, "w1") == r


def test_reap_expired_requeues_tasks(store, new_run, clock):
    run = new_run(["a", "b", "c"])
    store.register_agent(run, Agent(id="w1"), lease_ms=1000)
    store.register_agent(run, Agent(id="w2"), lease_ms=5000)
    store.register_agent(run, Agent(id="w3"), lease_ms=1000)
    store.set_agent_status(run, "w3", "stopped")
    ta = store.claim(run, "a", "w1")
    tb = store.claim(run, "b", "w1")
    store.start(run, "b", "w1", tb.attempt)
    store.claim(run, "c", "w2")
    assert store.reap_expired(run, now=T0 + 999) == []
    n = len(store.history(run))
    assert sorted(store.reap_expired(run, now=T0 + 2000)) == ["a", "b"]
    new = store.history(run, since_seq=n)
    assert sorted((r.entity, r.entity_id, r.from_state, r.to_state) for r in new) == [
        ("agent", "w1", "registered", "dead"), ("task", "a", "assigned", "pending"), ("task", "b", "working", "pending")]
    assert [r.reason for r in new if r.entity == "agent"] == ["lease expired"]
    assert [r.reason for r in new if r.entity == "task"] == ["lease expired: agent w1"] * 2  # the supervisor counts these
    assert {(t.id, t.status, t.owner) for t in store.list_tasks(run)} == {("a", "pending", None), ("b", "pending", None), ("c", "assigned", "w2")}
    assert {a.id: a.status for a in store.list_agents(run)} == {"w1": "dead", "w2": "registered", "w3": "stopped"}
    assert store.reap_expired(run, now=T0 + 3000) == []
    t = store.claim(run, "a", "w2")
    assert t.attempt == ta.attempt + 1
    with refused(store, run, StaleAttempt):
        store.complete(run, "a", "w1", ta.attempt)


# ---------------------------------------------------------------------------- events
def ev(agent, seq, ts, type="step", **data):
    return Event(agent=agent, seq=seq, ts_ms=ts, type=type, task="a", data=data)


def test_events_append_dedup_read(store, new_run):
    run = new_run(["a"])
    n = len(store.history(run))
    assert store.last_event_seq(run, "w1") == -1
    assert store.append_events(run, [ev("w1", 0, 10, "started"), ev("w1", 1, 20, tool="edit"), ev("w1", 2, 30)]) == 3
    assert store.append_events(run, [ev("w1", 1, 20), ev("w1", 2, 30), ev("w1", 3, 40, nested={"k": [1, 2]})]) == 1
    assert store.append_events(run, [ev("w2", 0, 15), ev("w2", 1, 35)]) == 2
    assert store.append_events(run, []) == 0
    w1 = store.read_events(run, agent="w1")
    assert [e.seq for e in w1] == [0, 1, 2, 3]
    assert w1[1].data == {"tool": "edit"} and w1[3].data == {"nested": {"k": [1, 2]}} and w1[0].type == "started"
    assert [e.seq for e in store.read_events(run, agent="w1", since_seq=1)] == [2, 3]
    assert [e.seq for e in store.read_events(run, agent="w1", since_seq=0, limit=2)] == [1, 2]
    assert [(e.agent, e.seq) for e in store.read_events(run)] == [
        ("w1", 0), ("w2", 0), ("w1", 1), ("w1", 2), ("w2", 1), ("w1", 3)]
    assert store.last_event_seq(run, "w1") == 3 and store.last_event_seq(run, "w2") == 1
    assert len(store.history(run)) == n  # events are not transitions


# ---------------------------------------------------------------------------- history
def busy_run(store, new_run, clock):
    run = new_run(["a", "b", "c"], [("a", "blocks", "b")])
    store.register_agent(run, Agent(id="w1"), lease_ms=10_000)
    for tid, agent in (("a", "w1"), ("c", "w2")):
        clock.advance(10)
        done(store, run, tid, agent)
    store.claim(run, "b", "w1")
    store.claim_next(run, "w2")
    store.fail(run, "b", None, None, "x")
    return run


def test_history_seq_gap_free_per_run_and_filters(store, new_run, clock):
    run = busy_run(store, new_run, clock)
    store.create_run(Run(id="other"))
    store.record(Transition(run_id="other", ts_ms=1, entity="merge", entity_id="m", to_state="merged"))
    h = store.history(run)
    assert [r.seq for r in h] == list(range(1, len(h) + 1)) and len(h) > 10
    assert [r.seq for r in store.history("other")] == [1, 2]
    assert all(r.run_id == run for r in h)
    for kw in ({"entity": "task"}, {"entity": "claim"}, {"entity_id": "a"}, {"agent": "w2"}, {"entity": "task", "agent": "w1"}):
        want = [r for r in h if all(getattr(r, k) == v for k, v in kw.items())]
        assert want and store.history(run, **kw) == want, kw
    assert store.history(run, since_seq=5) == h[5:]
    assert store.history(run, since_seq=len(h)) == []


def test_record_idempotent_by_key(store, new_run):
    run = new_run(["a"])
    n = len(store.history(run))
    t = Transition(run_id=run, ts_ms=T0 + 123, entity="merge", entity_id="orch/r/w1", from_state=None, to_state="merged",
                   agent="w1", reason="ff", data={"sha": "abc"}, key="merge:a:1")
    r = store.record(t)
    assert r.seq == n + 1 and r.model_dump(exclude={"seq"}) == t.model_dump(exclude={"seq"})
    assert store.record(t) is None
    assert store.record(t.model_copy(update={"ts_ms": 999})) is None
    plain = t.model_copy(update={"key": None})
    assert store.record(plain).seq == n + 2 and store.record(plain).seq == n + 3
    # each merge row goes on from the merge's last state, not from what the caller says
    assert [(m.from_state, m.to_state) for m in store.history(run, entity="merge")] == [(None, "merged"), ("merged", "merged"), ("merged", "merged")]
    assert store.history(run)[-3] == r


# ---------------------------------------------------------------------------- snapshot
def test_dump_load_round_trip(store, new_run, clock, other_store_url):
    run = busy_run(store, new_run, clock)
    store.add_usage(run, "a", tokens_in=5, cost_usd=0.1, tokens_image=6, tokens_audio=7, metric_6=8, metric_7=9)
    store.append_events(run, [ev("w1", 0, 5, "started"), ev("w1", 1, 6, x=[1, "y"]), ev("w2", 0, 4)])
    store.record(Transition(run_id=run, ts_ms=77, entity="merge", entity_id="m", to_state="conflict", data={"paths": ["f"]}, key="k1"))
    store.finish_run(run, "finished")
    d = store.dump_run(run)
    assert [t.id for t in d.tasks] == ["a", "b", "c"] and [r.seq for r in d.history] == list(range(1, len(d.history) + 1))
    with refused(store, run, InvalidTransition):
        store.load_run(d)
    with open_store(other_store_url, clock=clock) as other:
        other.load_run(d)
        assert other.dump_run(run) == d
        assert other.get_task(run, "a").metrics[4:] == [6, 7, 8, 9]  # the later slots travel too
        keyed = next(r for r in d.history if r.key == "k1")
        assert other.record(keyed) is None  # idempotency keys survive the trip
        # both stores go on identically
        for s in (store, other):
            s.note(run, "run", run, "checked", now=T0 + 88)
        assert other.dump_run(run) == store.dump_run(run)
        assert other.history(run)[-1].seq == len(d.history) + 1


def test_missing_run_is_not_found(store, new_run):
    new_run(["a"])
    calls = {
        "list_tasks": lambda: store.list_tasks("nope"),
        "ready_tasks": lambda: store.ready_tasks("nope"),
        "dependencies": lambda: store.dependencies("nope"),
        "register_agent": lambda: store.register_agent("nope", Agent(id="w1"), lease_ms=10),
        "list_agents": lambda: store.list_agents("nope"),
        "reap_expired": lambda: store.reap_expired("nope"),
        "append_events": lambda: store.append_events("nope", [ev("w1", 0, 1)]),
        "record": lambda: store.record(Transition(run_id="nope", ts_ms=1, entity="run", entity_id="nope", to_state="x")),
        "dump_run": lambda: store.dump_run("nope"),
    }
    for name, call in calls.items():
        with pytest.raises(NotFound):
            call()
            pytest.fail(f"{name} on a missing run did not raise NotFound")
    assert [r.id for r in store.list_runs()] == ["r"]


# ---------------------------------------------------------------------------- several instances
def test_two_instances_see_each_other(store, new_run, store_url, clock):
    run = new_run(["a", "b", "c"], [("a", "blocks", "c")])
    with open_store(store_url, clock=clock) as other:
        assert other.claim_next(run, "w2").id == "a"
        assert store.claim_next(run, "w1").id == "b"  # not a: the other instance took it
        assert store.claim(run, "a", "w1") is None
        store.start(run, "b", "w1", 1)
        other.start(run, "a", "w2", 1)
        other.complete(run, "a", "w2", 1)
        assert ready(store, run) == ["c"]
        assert other.get_task(run, "b").status == "working"
        assert store.history(run) == other.history(run)
        assert [r.seq for r in store.history(run)] == list(range(1, len(store.history(run)) + 1))


def test_state_survives_reopen(store, new_run, store_url, clock):
    run = busy_run(store, new_run, clock)
    store.append_events(run, [ev("w1", 0, 5)])
    before = store.dump_run(run)
    store.close()
    store.close()  # idempotent
    with open_store(store_url, clock=clock) as again:
        assert again.dump_run(run) == before
        assert again.claim_next(run, "w9") is None
        assert again.history(run)[-1].seq == len(before.history) + 1
