"""How the tools show tasks to agents: plain JSON-able dicts, the names task-graph-mcp uses where
it has them (``id``, ``title``, ``status``, ``owner``, ``parent``, ``priority``, ``points``,
``tags``, ``needed_tags``, ``wanted_tags``, ``blocked_by``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coordstore.graph import GraphIndex, is_ready
from coordstore.models import METRIC_FIELDS, Task


def summary(t: Task, ix: GraphIndex, status: Mapping[str, str]) -> dict[str, Any]:
    """One line of ``list_tasks``."""
    return {
        "id": t.id, "title": t.title, "status": t.status, "owner": t.owner, "parent": ix.parent.get(t.id),
        "priority": t.priority, "points": t.points, "tags": t.tags, "needed_tags": t.needed_tags,
        "wanted_tags": t.wanted_tags, "ready": is_ready(t.id, ix, status), "container": ix.is_container(t.id),
    }


def detail(t: Task, ix: GraphIndex, status: Mapping[str, str], attachments: list[str]) -> dict[str, Any]:
    """``get``: the summary plus what an agent needs to work on the task and to see around it."""
    return {
        **summary(t, ix, status),
        "description": t.description, "attempt": t.attempt, "assigned_by": t.assigned_by,
        "completed_by": t.completed_by, "reason": t.reason, "time_estimate_ms": t.time_estimate_ms,
        "file_scope": t.file_scope, "phase": t.phase, "meta": t.meta,  # verify, per-task sim options
        "blocked_by": sorted(ix.blockers.get(t.id, ())),
        "effective_blockers": sorted(ix.effective_blockers(t.id)),
        "dependents": sorted(ix.dependents.get(t.id, ())),
        "children": list(ix.children.get(t.id, ())),
        "attachments": attachments,
        "usage": {**dict(zip(METRIC_FIELDS, t.metrics)), "cost_usd": t.cost_usd},  # all 8 metric slots
    }
