"""The load of a variant's workers: who they are, and how long each sat idle with or without work.

A policy that leaves agents without work must not look efficient: the lower bound and utilization
count every *worker* (``workers``), and the idle time of each is split by its cause:

* *starved*: the worker held no work task (none assigned to it, none working) while no ready,
  unowned work task existed: nothing it could have done;
* *idle with work*: it held none while a ready, unowned work task waited: coordination (a pull
  not yet made, a push not yet dispatched, a process starting or dead) left work on the table.

A work task is *ready and unowned* while it is pending and its last effective blocker (final graph)
has completed: from its first row (import or addition; the history's start for a hand-made history
without one) or that completion, to its next assignment; a requeue makes it so again. Tags are
ignored: a task no worker's tags fit still counts as waiting work. Both are measured inside the
wall-clock window (first start of a work task to the last completion), like ``idle_ms``, so per
worker busy + holding without working + starved + idle with work = wall clock.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from coordstore.graph import GraphIndex
from coordstore.models import ACTIVE, RunDump, works

Interval = tuple[int, int]
NEVER = float("inf")


def workers(dump: RunDump, executing: Iterable[str]) -> list[str]:
    """The run's working agents: its agents whose role works (``models.works``, spec agents that
    execute tasks), plus any agent that ran a work task without being one (a hand-made or foreign
    history), by id."""
    return sorted({a.id for a in dump.agents if works(a.role)} | set(executing))


def merged(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, non-overlapping, non-empty."""
    out: list[list[int]] = []
    for a, b in sorted(i for i in intervals if i[1] > i[0]):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def gaps(intervals: list[Interval], lo: int, hi: int) -> list[Interval]:
    """The parts of [lo, hi) that ``intervals`` (merged) do not cover."""
    out, at = [], lo
    for a, b in intervals:
        if a > at:
            out.append((at, min(a, hi)))
        at = max(at, b)
        if at >= hi:
            break
    if at < hi:
        out.append((at, hi))
    return [(a, b) for a, b in out if b > a]


def overlap_ms(xs: list[Interval], ys: list[Interval]) -> int:
    """Total length of the intersection of two merged interval lists."""
    total, i, j = 0, 0, 0
    while i < len(xs) and j < len(ys):
        a, b = max(xs[i][0], ys[j][0]), min(xs[i][1], ys[j][1])
        total += max(0, b - a)
        if xs[i][1] < ys[j][1]:
            i += 1
        else:
            j += 1
    return total


def _task_timelines(dump: RunDump, work: set[str]) -> tuple[dict[str, list[Interval]], list[tuple[str, int, float]],
                                                             dict[str, int]]:
    """(per agent: when it held a work task; (task, from, to) of each period a work task was
    pending; each task's completion time).

    A pending period runs from the task's first row (or the history's start) or its requeue to its
    next status change (or forever)."""
    start = dump.history[0].ts_ms if dump.history else 0
    holding: dict[str, list[Interval]] = defaultdict(list)
    pending: list[tuple[str, int, float]] = []
    owner: dict[str, tuple[str, int]] = {}  # task -> (agent, since)
    pending_since: dict[str, int] = {}
    completed: dict[str, int] = {}
    seen: set[str] = set()
    for r in dump.history:
        if r.entity != "task" or r.is_note:
            continue
        t, ts = r.entity_id, r.ts_ms
        if r.to_state == "completed":
            completed[t] = ts
        if t not in work:
            continue
        if t not in seen:
            seen.add(t)
            if r.from_state == "pending":  # a history without the task's first row: pending from its start
                pending_since[t] = start
        if t in pending_since and r.to_state != "pending":
            pending.append((t, pending_since.pop(t), ts))
        elif r.to_state == "pending":
            pending_since.setdefault(t, ts)
        now_owner = r.agent if r.to_state in ACTIVE else None
        held = owner.get(t)
        if held is not None and held[0] != now_owner:
            holding[held[0]].append((held[1], ts))
            del owner[t]
        if now_owner is not None and t not in owner:
            owner[t] = (now_owner, ts)
    end = dump.history[-1].ts_ms if dump.history else 0
    for t, (agent, since) in owner.items():
        holding[agent].append((since, end))
    pending += [(t, since, NEVER) for t, since in pending_since.items()]
    status = {t.id: t.status for t in dump.tasks}
    pending += [(t, start, NEVER) for t in work - seen if status[t] == "pending"]  # no row at all: pending all along
    return holding, pending, completed


def starvation(dump: RunDump, worker_ids: list[str], window: Interval) -> dict:
    """``starved_ms`` and ``idle_with_work_ms`` per worker and ``starved_total_ms``, inside
    ``window`` (wall clock: first start, last completion)."""
    lo, hi = window
    ix = GraphIndex(dump.tasks, dump.dependencies)
    work = {t for t in ix.order if not ix.is_container(t)}
    holding, pending, completed = _task_timelines(dump, work)

    # a task is ready once its last effective blocker completed (never, if one did not)
    ready_at = {t: max((completed.get(b, NEVER) for b in ix.effective_blockers(t)), default=lo) for t in work}
    ready = merged((int(max(a, ready_at[t], lo)), int(min(b, hi))) for t, a, b in pending if ready_at[t] < hi)
    no_work = gaps(ready, lo, hi)
    starved, with_work = {}, {}
    for w in worker_ids:
        idle = gaps(merged(holding.get(w, [])), lo, hi)
        starved[w] = overlap_ms(idle, no_work)
        with_work[w] = overlap_ms(idle, ready)
    return {"starved_ms": starved, "starved_total_ms": sum(starved.values()), "idle_with_work_ms": with_work}
