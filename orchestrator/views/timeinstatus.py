"""Time per status and per agent, for each task and for the run, from the history's task rows
(what task-graph-mcp's ``task_history`` and ``project_history`` report).

Each task row opens a period in its ``to`` status that the task's next row closes; a period still
open at the end (a task not terminal) is closed by the run's end: its finish, or now while it runs.
Terminal statuses count only while left again (``failed`` until a requeue takes the task back).
A period in ``assigned`` or ``working`` belongs to the agent its row names (the owner); ``pending``
has none. Notes (rows that repeat the status) change nothing.

Run sums cover work tasks (tasks that are not containers with children), as the other metrics do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from coordstore.graph import GraphIndex, work_ids
from coordstore.models import ACTIVE, TASK_STATUSES, TERMINAL, Run, RunDump, Transition

OWNED = tuple(s for s in TASK_STATUSES if s in ACTIVE)  # the statuses in which a task has an owner, in order
# the statuses a task can spend time in: the terminal ones never left, except a requeued failure
COUNTED = tuple(s for s in TASK_STATUSES if s not in TERMINAL or s == "failed")


@dataclass(frozen=True)
class Period:
    task: str
    status: str
    agent: str | None  # the owner, for OWNED statuses
    start_ms: int
    end_ms: int

    @property
    def ms(self) -> int:
        return self.end_ms - self.start_ms


def run_end_ms(run: Run, rows: list[Transition], now: int | None = None) -> int:
    """When open periods close: the run's finish; while it runs, ``now`` (else its last row)."""
    last = rows[-1].ts_ms if rows else 0
    if run.status == "running":
        return max(last, now) if now is not None else last
    return run.finished_at if run.finished_at is not None else last


def periods(rows: Iterable[Transition], end_ms: int) -> list[Period]:
    """Every task's periods, in the order they closed (open ones last, closed at ``end_ms``)."""
    open_: dict[str, tuple[str, str | None, int]] = {}
    out: list[Period] = []
    for r in rows:
        if r.entity != "task" or r.is_note:
            continue
        prev = open_.pop(r.entity_id, None)
        if prev is not None:
            out.append(Period(r.entity_id, prev[0], prev[1], prev[2], r.ts_ms))
        open_[r.entity_id] = (r.to_state, r.agent if r.to_state in OWNED else None, r.ts_ms)
    for tid, (status, agent, t0) in open_.items():
        if status not in TERMINAL:
            out.append(Period(tid, status, agent, t0, max(t0, end_ms)))
    return out


def breakdown(ps: Iterable[Period]) -> dict[str, Any]:
    """``time_in_status_ms`` {status: ms} and ``time_by_agent_ms`` {agent: {status: ms}} of ``ps``."""
    by_status = dict.fromkeys(COUNTED, 0)
    by_agent: dict[str, dict[str, int]] = {}
    for p in ps:
        by_status[p.status] = by_status.get(p.status, 0) + p.ms
        if p.agent:
            mine = by_agent.setdefault(p.agent, dict.fromkeys(OWNED, 0))
            mine[p.status] += p.ms
    return {"time_in_status_ms": by_status, "time_by_agent_ms": {a: by_agent[a] for a in sorted(by_agent)}}


def by_task(ps: Iterable[Period]) -> dict[str, list[Period]]:
    out: dict[str, list[Period]] = {}
    for p in ps:
        out.setdefault(p.task, []).append(p)
    return out


def time_in_status(dump: RunDump) -> dict[str, Any]:
    """The run's metrics: ``time_in_status_ms`` and ``time_by_agent_ms`` summed over work tasks."""
    work = set(work_ids(GraphIndex(dump.tasks, dump.dependencies)))
    end = run_end_ms(dump.run, dump.history)
    return breakdown(p for p in periods(dump.history, end) if p.task in work)
