"""Run metrics, computed once, from the history (and the graph), never from mutable columns alone.

Input is a ``RunDump`` (``store.dump_run``); every definition is one line in the README. Times are
milliseconds. Work tasks are tasks that are not containers with children. Per-agent keys, the
lower bound and utilization cover every worker of the variant (``load.workers``), also one that
ran nothing: a policy that starves agents must not look efficient.
"""

from __future__ import annotations

from collections import defaultdict
from statistics import mean
from typing import Any

from coordstore.graph import GraphIndex, critical_path, work_ids
from coordstore.models import RunDump, Transition

from orchestrator.views.bestofmetrics import BESTOF_KEYS, bestof_metrics
from orchestrator.views.coordmetrics import COORDINATION_KEYS, coordination_metrics
from orchestrator.views.forecastmetrics import FORECAST_KEYS, forecast_metrics
from orchestrator.views.load import starvation, workers
from orchestrator.views.overhead import OVERHEAD_KEYS, overhead_metrics
from orchestrator.views.timeinstatus import time_in_status
from orchestrator.views.tokenmetrics import token_metrics
from orchestrator.views.verified import VERIFY_KEYS, verify_metrics

METRIC_KEYS = (
    "wall_clock_ms", "lower_bound_ms", "workers", "efficiency", "tasks_total", "tasks_completed", "tasks_failed",
    "tasks_cancelled", "completion_rate", "throughput_tasks_per_h", "points_per_h", "rework_rate",
    "blocking_ratio", "queue_wait_ms", "dispatch_latency_ms", "pickup_latency_ms", "utilization",
    "idle_ms", "busy_ms", "tasks_per_agent", "starved_ms", "starved_total_ms", "idle_with_work_ms",
    "gini_tasks", "gini_busy", "reassignments", "stalls", "retries",
    "merge_conflicts", *FORECAST_KEYS, "tokens", "cost_usd", "cost_per_completed_task",
    "billable_tokens", "cached_tokens", "cache_hit_rate", "tokens_per_completed_task", "cost_per_point",
    *OVERHEAD_KEYS, "time_in_status_ms", "time_by_agent_ms", *VERIFY_KEYS,
) + COORDINATION_KEYS + BESTOF_KEYS  # the agent-coordination group (claims included), then best-of's
HOUR_MS = 3_600_000


def gini(values: list[float]) -> float:
    """Gini coefficient: sum |xi - xj| / (2 n^2 mean); 0 for equal shares or fewer than two values."""
    n = len(values)
    if n < 2 or sum(values) == 0:
        return 0.0
    mu = sum(values) / n
    return sum(abs(a - b) for a in values for b in values) / (2 * n * n * mu)


class _Periods:
    """Working periods (agent, task, start, end, outcome) and first assignments, from task rows."""

    def __init__(self, rows: list[Transition]):
        self.working: list[tuple[str, str, int, int, str]] = []
        self.assigned: list[tuple[str, str, int, str]] = []  # (task, agent, ts, by)
        self.started_at: dict[str, list[int]] = defaultdict(list)
        self.completed_at: dict[str, int] = {}
        self.pickups: list[int] = []  # assignment -> working, per working period
        last_assigned: dict[str, int] = {}
        open_: dict[str, tuple[str, int]] = {}
        for r in rows:
            if r.entity != "task":
                continue
            if r.to_state == "assigned":
                self.assigned.append((r.entity_id, r.agent or "", r.ts_ms, (r.data or {}).get("by") or ""))
                last_assigned[r.entity_id] = r.ts_ms
            if r.to_state == "working":
                if r.entity_id in last_assigned:
                    self.pickups.append(r.ts_ms - last_assigned[r.entity_id])
                open_[r.entity_id] = (r.agent or "", r.ts_ms)
                self.started_at[r.entity_id].append(r.ts_ms)
            elif r.from_state == "working" and r.entity_id in open_:
                agent, t0 = open_.pop(r.entity_id)
                self.working.append((agent, r.entity_id, t0, r.ts_ms, r.to_state))
            if r.to_state == "completed":
                self.completed_at[r.entity_id] = r.ts_ms


def compute_metrics(dump: RunDump) -> dict[str, Any]:
    ix = GraphIndex(dump.tasks, dump.dependencies)
    work = set(work_ids(ix))
    rows = [r for r in dump.history if not r.is_note]  # notes (handoffs, respawns) change no state
    p = _Periods(rows)
    final = {t.id: t.status for t in dump.tasks}
    starts = [t0 for (_, task, t0, _, _) in p.working if task in work]
    ends = [p.completed_at[t] for t in work if t in p.completed_at]
    run_start = min(starts) if starts else 0
    wall = (max(ends) - run_start) if starts and ends else 0
    # waits are measured from the moment the team was up (last first-registration), else first assignment
    first_reg: dict[str, int] = {}
    for r in rows:
        if r.entity == "agent" and r.to_state == "registered":
            first_reg.setdefault(r.entity_id, r.ts_ms)
    origin = max(first_reg.values()) if first_reg else min((a[2] for a in p.assigned), default=run_start)

    # actual durations: the completing working period of each completed task
    actual = {task: t1 - t0 for (_, task, t0, t1, out) in p.working if out == "completed" and task in work}
    executing = {a for (a, task, *_rest) in p.working if task in work}
    team = workers(dump, executing)  # every working agent, also one that ran nothing
    busy = defaultdict(int)
    done_by = defaultdict(int)
    for agent, task, t0, t1, out in p.working:
        if task in work:
            busy[agent] += t1 - t0
            done_by[agent] += out == "completed"
    cp_len, _ = critical_path(ix, {t: actual.get(t, 0) for t in work})
    total_work = sum(actual.values())
    lower = max(cp_len, total_work / len(team)) if team else 0.0

    completed = [t for t in work if final.get(t) == "completed"]
    points = sum((ix.tasks[t].points or 0) for t in completed)

    # readiness: a task is ready from the run start or its last effective blocker's completion
    def ready_at(t: str) -> int | None:
        bs = ix.effective_blockers(t)
        if any(b not in p.completed_at for b in bs):
            return None
        return max([origin] + [p.completed_at[b] for b in bs])

    first_assign: dict[str, tuple[int, str, str]] = {}
    for task, agent, ts, by in p.assigned:
        first_assign.setdefault(task, (ts, agent, by))
    waits, blocked_parts = [], []
    for t in work:
        r = ready_at(t)
        if r is None or t not in first_assign:
            continue
        waits.append(max(0, first_assign[t][0] - r))
        if t in p.completed_at and p.completed_at[t] > origin:
            blocked_parts.append(((r - origin), p.completed_at[t] - origin))

    # dispatch latency: for pushed assignments, time while both the task was ready and the worker idle
    ends_by_agent = defaultdict(list)
    for agent, task, t0, t1, out in p.working:
        ends_by_agent[agent].append(t1)
    back_to_pending = defaultdict(list)
    for r in rows:
        if r.entity == "task" and r.to_state == "pending" and r.from_state:
            back_to_pending[r.entity_id].append(r.ts_ms)
    dispatch = []
    for task, agent, ts, by in p.assigned:
        if not by or by == agent or task not in work:
            continue
        r = ready_at(task)
        free = max([origin] + [e for e in ends_by_agent[agent] if e <= ts])
        requeued = max([e for e in back_to_pending[task] if e <= ts], default=origin)
        if r is not None:
            dispatch.append(max(0, ts - max(r, free, requeued)))

    requeues = [r for r in rows if r.is_requeue]
    reassign = sum(1 for r in rows if r.entity == "task" and r.from_state == "assigned" and r.to_state == "assigned")
    started = [t for t in work if p.started_at.get(t)]

    util = {a: (busy[a] / wall if wall else 0.0) for a in team}
    return {
        "wall_clock_ms": wall,
        "lower_bound_ms": round(lower, 3),
        "workers": len(team),
        "efficiency": round(lower / wall, 4) if wall else 0.0,
        "tasks_total": len(work),
        "tasks_completed": len(completed),
        "tasks_failed": sum(final.get(t) == "failed" for t in work),
        "tasks_cancelled": sum(final.get(t) == "cancelled" for t in work),
        "completion_rate": round(len(completed) / len(work), 4) if work else 0.0,
        "throughput_tasks_per_h": round(len(completed) / (wall / HOUR_MS), 3) if wall else 0.0,
        "points_per_h": round(points / (wall / HOUR_MS), 3) if wall else 0.0,
        "rework_rate": round(sum(len(p.started_at[t]) > 1 for t in started) / len(started), 4) if started else 0.0,
        "blocking_ratio": round(sum(b for b, _ in blocked_parts) / sum(s for _, s in blocked_parts), 4) if blocked_parts else 0.0,
        "queue_wait_ms": round(mean(waits), 3) if waits else 0.0,
        "dispatch_latency_ms": round(mean(dispatch), 3) if dispatch else None,
        "pickup_latency_ms": round(mean(p.pickups), 3) if p.pickups else 0.0,
        "utilization": {"mean": round(mean(util.values()), 4) if util else 0.0, **{a: round(u, 4) for a, u in util.items()}},
        "idle_ms": {a: max(0, wall - busy[a]) for a in team},
        "busy_ms": {a: busy[a] for a in team},
        "tasks_per_agent": {a: done_by[a] for a in team},
        **starvation(dump, team, (run_start, run_start + wall)),
        "gini_tasks": round(gini([done_by[a] for a in team]), 4),
        "gini_busy": round(gini([busy[a] for a in team]), 4),
        "reassignments": reassign + sum(1 for r in requeues if (r.data or {}).get("previous")),
        "stalls": sum(1 for r in rows if r.entity == "agent" and r.to_state == "stalled"),
        "retries": len(requeues),
        "merge_conflicts": sum(1 for r in rows if r.entity == "merge" and r.to_state == "conflict"),
        **forecast_metrics(dump),  # conflict forecasts, their precision and recall; tasks held back
        **token_metrics(dump, completed),  # tokens, cost_usd, cost_per_completed_task and the token efficiency keys
        **overhead_metrics(dump, wall, actual), **time_in_status(dump), **verify_metrics(dump),
        **coordination_metrics(dump, len(completed)),
        **bestof_metrics(dump),  # best-of rounds (views.bestofmetrics): 0, empty or null without any
    }
