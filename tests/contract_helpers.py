"""Helpers shared by the store contract test files."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from coordstore.models import CHAINED, Transition


def state(store, run):
    return store.history(run), store.list_tasks(run), store.list_agents(run)


@contextmanager
def refused(store, run, exc):
    before = state(store, run)
    with pytest.raises(exc) as info:
        yield info
    assert state(store, run) == before, "a refused call changed the store"


def ready(store, run, **kw) -> list[str]:
    return [t.id for t in store.ready_tasks(run, **kw)]


def rows(store, run, entity="task", entity_id=None):
    return [(r.entity_id, r.from_state, r.to_state) for r in store.history(run, entity=entity, entity_id=entity_id)]


def last(store, run, **filters) -> Transition:
    return store.history(run, **filters)[-1]


def done(store, run, task, agent="w"):
    """Claim, start and complete one named task."""
    t = store.claim(run, task, agent)
    assert t is not None, f"{task} not claimable"
    store.start(run, task, agent, t.attempt)
    return store.complete(run, task, agent, t.attempt)


def claimed(store, run, n, **kw) -> list[str]:
    out = []
    for _ in range(n):
        t = store.claim_next(run, "w", **kw)
        out.append(t.id if t else None)
    return out


def chain_errors(history: list[Transition]) -> list[str]:
    """Every way ``history`` (one run, by seq) breaks the chain rules of coordstore/chains.py: per
    task, agent, run and merge, the first row comes from None, each next one from the previous
    row's to_state, every to_state is a state of the entity, and times never go back (per entity,
    and over the whole run in seq order)."""
    errors: list[str] = []
    heads: dict[tuple[str, str], Transition] = {}
    latest = None
    for r in history:
        if latest is not None and r.ts_ms < latest.ts_ms:
            errors.append(f"seq {r.seq}: ts {r.ts_ms} is before seq {latest.seq}'s {latest.ts_ms}")
        latest = r
        states = CHAINED.get(r.entity)
        if states is None:
            continue
        where = f"seq {r.seq} {r.entity} {r.entity_id!r} {r.from_state} -> {r.to_state}"
        prev = heads.get((r.entity, r.entity_id))
        if r.from_state != (prev.to_state if prev else None):
            errors.append(f"{where}: from is not the previous to ({prev.to_state if prev else None})")
        if r.to_state not in states:
            errors.append(f"{where}: {r.to_state!r} is not a {r.entity} state")
        if prev is not None and r.ts_ms < prev.ts_ms:
            errors.append(f"{where}: ts {r.ts_ms} before its previous row's {prev.ts_ms}")
        heads[(r.entity, r.entity_id)] = r
    return errors
