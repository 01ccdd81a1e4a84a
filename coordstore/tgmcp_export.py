"""Writing task-graph-mcp's snapshot format (``schema_version`` 3); reading is ``tgmcp``.

``to_doc`` follows what task-graph-mcp's importer reads, so files load in both tools: priority as
a numeric string, tag lists as JSON strings, both ``metrics`` and ``metric_N``, integer
``created_at``/``updated_at`` (0 when unknown), the tag tables filled from the task lists.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from coordstore.models import RunDump, Task, TaskGraph
from coordstore.tgmcp import ATTACHMENTS_META, EXPORT_VERSION, EXT_FILE_SCOPE, EXT_META, SCHEMA_VERSION, STATUS_OUT, TAG_TABLES


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat()


def _points(p: float | None) -> int | float | None:
    return int(p) if p is not None and float(p).is_integer() else p


def _task_row(t: Task) -> dict[str, Any]:
    metrics = t.metrics
    actual = t.completed_at - t.started_at if t.completed_at is not None and t.started_at is not None else None
    row: dict[str, Any] = {
        "id": t.id, "title": t.title, "description": t.description, "status": STATUS_OUT[t.status],
        "priority": str(t.priority), "phase": t.phase, "worker_id": t.owner, "claimed_at": t.claimed_at,
        "needed_tags": json.dumps(t.needed_tags), "wanted_tags": json.dumps(t.wanted_tags), "tags": json.dumps(t.tags),
        "points": _points(t.points), "time_estimate_ms": t.time_estimate_ms, "time_actual_ms": actual,
        "started_at": t.started_at, "completed_at": t.completed_at, "current_thought": None,
        "cost_usd": t.cost_usd, "metrics": metrics,
        "created_at": t.created_at or 0, "updated_at": t.updated_at or t.created_at or 0,
    }
    row.update({f"metric_{i}": v for i, v in enumerate(metrics)})
    if t.file_scope:
        row[EXT_FILE_SCOPE] = list(t.file_scope)
    meta = {k: v for k, v in t.meta.items() if k != ATTACHMENTS_META}
    if meta:
        row[EXT_META] = meta
    return row


def _task_sequence(dump: RunDump) -> list[dict[str, Any]]:
    """One row per task transition, ending where that task's next transition starts."""
    rows = [h for h in dump.history if h.entity == "task"]
    ends: list[int | None] = [None] * len(rows)
    next_start: dict[str, int] = {}
    for i in range(len(rows) - 1, -1, -1):  # backwards: each row's end is its task's next start
        ends[i] = next_start.get(rows[i].entity_id)
        next_start[rows[i].entity_id] = rows[i].ts_ms
    return [{"id": h.seq, "task_id": h.entity_id, "worker_id": h.agent,
             "status": STATUS_OUT.get(h.to_state, h.to_state), "phase": None, "reason": h.reason,
             "timestamp": h.ts_ms, "end_timestamp": end} for h, end in zip(rows, ends)]


def to_doc(obj: TaskGraph | RunDump, exported_by: str = "orch") -> dict[str, Any]:
    """A schema_version 3 document of a graph or a whole run (task_sequence from its history)."""
    tasks, deps = obj.tasks, obj.dependencies
    stamps = [s for t in tasks for s in (t.created_at, t.updated_at) if s is not None]
    if isinstance(obj, RunDump) and obj.run.created_at is not None:
        stamps.append(obj.run.created_at)
    tables: dict[str, list] = {
        "tasks": [_task_row(t) for t in tasks],
        "dependencies": [{"from_task_id": d.from_id, "to_task_id": d.to_id, "dep_type": d.type} for d in deps],
        "attachments": [{"task_id": t.id, **a} for t in tasks for a in t.meta.get(ATTACHMENTS_META, [])],
        "task_sequence": _task_sequence(obj) if isinstance(obj, RunDump) else [],
    }
    for kind, table in TAG_TABLES.items():
        tables[table] = [{"task_id": t.id, "tag": tag} for t in tasks for tag in getattr(t, kind)]
    return {
        "schema_version": SCHEMA_VERSION,
        "export_version": EXPORT_VERSION,
        "exported_at": _iso(max(stamps, default=0)),
        "exported_by": exported_by,
        "tables": tables,
    }
