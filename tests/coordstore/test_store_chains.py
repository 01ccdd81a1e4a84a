"""The CoordStore contract on history chains (coordstore/chains.py), run over every backend.

Every task, agent, run and merge has a history where each row goes on from the previous one, in
states of its kind and in time order, whoever writes and whatever ``now`` they pass.
"""

from __future__ import annotations

import pytest

from coordstore.errors import InvalidTransition, NotFound
from coordstore.models import Agent, Transition

from conftest import T0
from contract_helpers import chain_errors, refused, rows


def merge_row(run: str, task: str, state: str, ts: int, **kw) -> Transition:
    # as the runner writes it: from "pending" whatever the merge's history says
    return Transition(run_id=run, ts_ms=ts, entity="merge", entity_id=task, from_state="pending", to_state=state, **kw)


def test_chains_hold_through_kill_respawn_reap_and_stale_clocks(store, new_run, clock):
    run = new_run(["a", "b", "P", "p1"], [("a", "blocks", "b"), ("P", "contains", "p1")])
    for w in ("w1", "w2"):
        store.register_agent(run, Agent(id=w), lease_ms=1_000)
    t = store.claim(run, "a", "w1")
    store.start(run, "a", "w1", t.attempt)
    clock.advance(100)
    store.set_agent_status(run, "w1", "active")
    tick = clock.now - 60  # a supervisor's tick: its now was taken before the rows above were written
    store.set_agent_status(run, "w1", "stalled", now=tick)
    store.set_agent_status(run, "w1", "killed", reason="stalled: silent", data={"failures": 1}, now=tick)
    store.requeue(run, "a", "stalled", by="supervisor", now=tick)
    clock.advance(10)
    store.register_agent(run, Agent(id="w1", pid=42), lease_ms=1_000)  # the respawned runner
    store.note(run, "agent", "w1", "respawned", reason="respawn after stalled", data={"failures": 1}, now=tick)
    t = store.claim(run, "a", "w1")
    store.start(run, "a", "w1", t.attempt)
    store.record(merge_row(run, "a", "conflict", tick))
    store.record(merge_row(run, "a", "merged", tick))
    store.complete(run, "a", "w1", t.attempt, now=tick)
    store.assign(run, "P", "w2", by="lead", now=tick)
    store.note(run, "task", "p1", "handoff", agent="w2", data={"from": "w1"})
    reaped_at = clock.now + 5_000
    store.reap_expired(run, now=reaped_at)  # both leases ran out
    store.note(run, "run", run, "degraded", reason="circuit open", key="degrade", now=tick)
    store.finish_run(run, "finished", now=tick)

    history = store.history(run)
    assert chain_errors(history) == []
    assert rows(store, run, entity="agent", entity_id="w1") == [
        ("w1", None, "registered"), ("w1", "registered", "active"), ("w1", "active", "stalled"),
        ("w1", "stalled", "killed"), ("w1", "killed", "registered"), ("w1", "registered", "registered"),
        ("w1", "registered", "dead")]
    assert [(r.from_state, r.to_state) for r in history if r.entity == "merge"] == [(None, "conflict"), ("conflict", "merged")]
    # a stale now is raised to the latest row's time; the records changed with it carry that time
    assert all(r.ts_ms == T0 + 100 for r in history if r.to_state in ("stalled", "killed"))
    assert store.get_task(run, "a").completed_at == T0 + 110
    assert store.get_run(run).finished_at == history[-1].ts_ms == reaped_at


def test_note_repeats_the_status_and_marks_the_action(store, new_run, clock):
    run = new_run(["a"])
    store.register_agent(run, Agent(id="w1"), lease_ms=1_000)
    store.set_agent_status(run, "w1", "killed")
    n = store.note(run, "agent", "w1", "respawn-failed", reason="cannot run", agent="w1", data={"due": 5}, key="k1")
    assert (n.entity, n.entity_id, n.from_state, n.to_state, n.reason, n.agent) == ("agent", "w1", "killed", "killed", "cannot run", "w1")
    assert n.data == {"due": 5, "action": "respawn-failed"} and n.is_note and n.ts_ms == T0
    assert store.history(run)[-1] == n
    assert store.note(run, "agent", "w1", "respawn-failed", key="k1") is None  # idempotent by key
    assert store.get_agent(run, "w1").status == "killed"
    store.claim(run, "a", "w1")
    assert store.note(run, "task", "a", "handoff").from_state == "assigned"
    assert store.note(run, "run", run, "degraded").to_state == "running"
    assert chain_errors(store.history(run)) == []
    with refused(store, run, NotFound):
        store.note(run, "task", "ghost", "x")
    with refused(store, run, NotFound):
        store.note(run, "agent", "ghost", "x")
    with refused(store, run, InvalidTransition):
        store.note(run, "merge", "a", "x")
    with refused(store, run, InvalidTransition):
        store.note(run, "run", "another-run", "x")
    with pytest.raises(NotFound):
        store.note("nope", "run", "nope", "x")


def test_record_refuses_rows_that_would_break_a_chain(store, new_run):
    run = new_run(["a"])
    store.register_agent(run, Agent(id="w1"), lease_ms=1_000)
    for entity, eid, to in (("agent", "w1", "killed"), ("task", "a", "handoff"), ("run", run, "degraded"), ("merge", "a", "pending")):
        with refused(store, run, InvalidTransition) as e:
            store.record(Transition(run_id=run, ts_ms=T0, entity=entity, entity_id=eid, from_state="whatever", to_state=to))
        assert entity in str(e.value)
    # unknown agent statuses are refused as before; "killed" is one now
    with refused(store, run, InvalidTransition):
        store.set_agent_status(run, "w1", "respawned")
    assert store.set_agent_status(run, "w1", "killed").status == "killed"
    assert chain_errors(store.history(run)) == []
