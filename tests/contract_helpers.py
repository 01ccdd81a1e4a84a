"""Helpers shared by the store contract test files."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from coordstore.models import Transition


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
