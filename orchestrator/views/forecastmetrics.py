"""Conflict forecasts held against the merge conflicts that happened, and tasks held back.

A forecast is a run note ``conflict-forecast`` (``orchestrator.runs.forecaster``); the notes of one
prediction (the same tasks and attempts, against the merged branch or each other) count once,
from its first note. A merge conflict is a ``merge`` row ending in ``conflict`` (what
``merge_conflicts`` counts). They match when the prediction came first (lower ``seq``), the
conflict is of one of its tasks (a per-task merge or catch-up; a branch's merge at the end of a
deferred run: of one of its agents) and they share a path.

``tasks_held_back``: tasks that ``policy_options.avoid_conflicts`` held back at least once (run
notes ``held-back``, ``agents.policies.collisions``).
"""

from __future__ import annotations

from typing import Any

from coordstore.models import RunDump

from agents.policies.collisions import HOLD_ACTION

FORECAST_ACTION = "conflict-forecast"
FORECAST_KEYS = ("conflict_forecasts", "forecast_precision", "forecast_recall", "tasks_held_back")


def forecast_metrics(dump: RunDump) -> dict[str, Any]:
    task_ids = {t.id for t in dump.tasks}
    predictions: dict[tuple, dict[str, Any]] = {}
    conflicts: list[tuple[int, str | None, str | None, set[str]]] = []  # seq, task, agent, paths
    held: set[str] = set()
    for r in dump.history:
        action = (r.data or {}).get("action") if r.entity == "run" and r.is_note else None
        if action == FORECAST_ACTION:
            d = r.data
            key = (tuple(d.get("tasks") or ()), tuple(d.get("attempts") or ()), d.get("against"))
            p = predictions.setdefault(key, {"seq": r.seq, "tasks": set(key[0]), "agents": set(d.get("agents") or ()), "paths": set()})
            p["paths"] |= set(d.get("paths") or ())
        elif action == HOLD_ACTION and r.data.get("task"):
            held.add(r.data["task"])
        elif r.entity == "merge" and r.to_state == "conflict":
            task = r.entity_id if r.entity_id in task_ids else None
            conflicts.append((r.seq, task, None if task else r.agent, set((r.data or {}).get("conflicts") or ())))

    def matches(p: dict[str, Any], c: tuple) -> bool:
        seq, task, agent, paths = c
        whose = task in p["tasks"] if task else agent in p["agents"]
        return p["seq"] < seq and whose and bool(p["paths"] & paths)

    foreseen = sum(any(matches(p, c) for c in conflicts) for p in predictions.values())
    recalled = sum(any(matches(p, c) for p in predictions.values()) for c in conflicts)
    return {
        "conflict_forecasts": len(predictions),
        "forecast_precision": round(foreseen / len(predictions), 4) if predictions else None,
        "forecast_recall": round(recalled / len(conflicts), 4) if conflicts else None,
        "tasks_held_back": len(held),
    }


def share(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def forecast_line(m: dict[str, Any]) -> str:
    """One line for a run's summary: conflicts, forecasts with their precision and recall, holds."""
    if "conflict_forecasts" not in m:  # metrics of an older run
        return f"merge conflicts: {m.get('merge_conflicts', 0)}"
    return (f"merge conflicts: {m['merge_conflicts']}; forecasts: {m['conflict_forecasts']} (precision "
            f"{share(m['forecast_precision'])}, recall {share(m['forecast_recall'])}); tasks held back: {m['tasks_held_back']}")
