"""The tasks of one run and the indexes that make a claim cheap.

Kept up to date on every status change (``_set_task``), so a claim is O(log ready) in the common
case, not O(tasks): effective blockers and dependents (from ``graph.GraphIndex``), per-task
counters of unmet blockers, the ready set, one sorted list per claim order (built on first use),
and per container the count of open children. Readiness, tag routing and
critical-path rank come from ``coordstore/graph.py``; nothing here re-derives their meaning.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import get_args

from coordstore import graph as g
from coordstore.errors import InputError, NotFound
from coordstore.models import TASK_STATUSES, TERMINAL, ClaimOrder, Dependency, Task

ORDERS: tuple[str, ...] = get_args(ClaimOrder)


def _one_of(value: str, allowed: Iterable[str], what: str) -> str:
    if value not in allowed:
        raise InputError(f"{what} {value!r} is not one of: {', '.join(allowed)}")
    return value


class TaskIndex:
    """Task records (dicts of ``Task`` fields) in template order, with their claim indexes."""

    def __init__(self, name: str):
        self.name = name  # for messages: the run id
        self.tasks: dict[str, dict] = {}  # id -> Task fields (mutable state)
        self.defs: dict[str, Task] = {}  # id -> Task as imported (only definition fields are read)
        self.order: list[str] = []
        self.pos: dict[str, int] = {}
        self.deps: list[dict] = []
        self._index()

    def add_tasks(self, tasks: list[dict], deps: list[dict]) -> None:
        for d in tasks:
            self.tasks[d["id"]] = d
            self.defs[d["id"]] = Task.model_validate(d)
            self.pos[d["id"]] = len(self.order)
            self.order.append(d["id"])
        self.deps.extend(deps)
        self._index()

    def remove_dep(self, dep: dict) -> None:
        """Drop one edge (``unlink``) and rebuild the indexes."""
        self.deps.remove(dep)
        self._index()

    def _index(self) -> None:
        """Rebuild every derived index from tasks + deps (on import and when the graph grows or loses
        an edge; between those, kept incrementally by ``_set_task``)."""
        ix = g.GraphIndex([self.defs[t] for t in self.order], [Dependency.model_validate(d) for d in self.deps])
        self.ix = ix
        self.anc = {t: frozenset(ix.ancestors(t)) for t in self.order}
        eff = {t: ix.effective_blockers(t) for t in self.order}
        self.dependents: dict[str, list[str]] = {t: [] for t in self.order}
        for t in self.order:  # template order, so cascades are deterministic
            for b in eff[t]:
                self.dependents[b].append(t)
        st = {t: d["status"] for t, d in self.tasks.items()}
        self.unmet = {t: sum(st[b] != "completed" for b in eff[t]) for t in self.order}
        self.open_kids = {p: sum(st[c] not in TERMINAL for c in k) for p, k in ix.children.items() if k}
        self.tail = g.tail_lengths(ix) if self.order else {}
        self.ready = {t for t in self.order if self._is_ready(t)}
        self._ranked: dict[str, list[tuple]] = {}

    def _is_ready(self, t: str) -> bool:
        return self.tasks[t]["status"] == "pending" and self.unmet[t] == 0 and not self.ix.is_container(t)

    def _key(self, order: str, t: str) -> tuple:
        if order == "priority":
            return (-self.defs[t].priority, self.pos[t])
        if order == "critical-path":
            return (-self.tail.get(t, 0.0), self.pos[t])
        return (self.pos[t],)

    def _rank(self, order: str) -> list[tuple]:
        if order not in self._ranked:
            self._ranked[order] = sorted(self._key(order, t) for t in self.ready)
        return self._ranked[order]

    def _refresh(self, t: str) -> None:
        want = self._is_ready(t)
        if want == (t in self.ready):
            return
        if want:
            self.ready.add(t)
            for o, lst in self._ranked.items():
                bisect.insort(lst, self._key(o, t))
        else:
            self.ready.discard(t)
            for o, lst in self._ranked.items():
                del lst[bisect.bisect_left(lst, self._key(o, t))]

    def _set_task(self, tid: str, fields: dict) -> None:
        t = self.tasks[tid]
        old = t["status"]
        t.update(fields)
        new = t["status"]
        if old != new:
            if (new == "completed") != (old == "completed"):
                delta = -1 if new == "completed" else 1
                for d in self.dependents[tid]:
                    self.unmet[d] += delta
                    self._refresh(d)
            p = self.ix.parent.get(tid)
            if p is not None:
                self.open_kids[p] += (new not in TERMINAL) - (old not in TERMINAL)
        self._refresh(tid)

    # ---------------------------------------------------------------- reads
    def task(self, tid: str) -> dict:
        try:
            return self.tasks[tid]
        except KeyError:
            raise NotFound(f"run {self.name!r}: no task {tid!r}") from None

    def list_tasks(self, status=None, owner=None, parent=None) -> list[dict]:
        statuses = None
        if status is not None:
            statuses = {status} if isinstance(status, str) else set(status)
            for s in statuses:
                _one_of(s, TASK_STATUSES, "task status")
        ids = self.order if parent is None else self.ix.children.get(parent, [])
        return [
            self.tasks[t] for t in ids
            if (statuses is None or self.tasks[t]["status"] in statuses)
            and (owner is None or self.tasks[t]["owner"] == owner)
        ]  # fmt: skip

    def _candidates(self, tags, order: str, within: str | None):
        """Ready tasks the agent may take, best first, as (wanted score, id)."""
        _one_of(order, ORDERS, "claim order")
        if within is not None:
            self.task(within)
        tagset = None if tags is None else frozenset(tags)
        for key in self._rank(order):
            t = self.order[key[-1]]
            if within is not None and within not in self.anc[t]:
                continue
            d = self.defs[t]
            if g.tags_fit(d, tagset):
                yield g.wanted_score(d, tagset), t

    def ready_list(self, tags, order: str, within: str | None = None) -> list[str]:
        found = list(self._candidates(tags, order, within))
        return [t for _, t in sorted(found, key=lambda c: -c[0])]  # stable: order kept within a score

    def _pick(self, tags, order: str, within: str | None) -> str | None:
        first = None
        for score, t in self._candidates(tags, order, within):
            if score:
                return t
            first = first or t
        return first

