"""What an experiment file asks of the views: the metrics to show and the success criteria to judge.

Read from the file's YAML as written, in every shape orch loads: orch's own lists
(``metrics: [{name, direction}]``, ``success_criteria: [{metric, op, value}]``) and the grouped
forms of task-graph-mcp's files and seed 004 (``metrics: {group: [name | {name, query, compare}]}``,
``success_criteria: {minimum: {metric: ">= 80"}, target: {...}}``). The loader reads a file with
these functions and the exports read the run's frozen copy with them again, so a run is judged
exactly as its file was loaded. What orch does not compute or cannot judge comes back by key path
(``metrics.coordination.blocking_ratio_pct.query``) for the loader's one "ignored" note.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from orchestrator.views.metrics import METRIC_KEYS

# a metric entry's words for its direction; "neutral" has none orch can use
DIRECTIONS = {"lower_is_better": "lower", "higher_is_better": "higher", "lower": "lower", "higher": "higher"}
# the direction a metric named without one gets: more of these is better, less of every other
HIGHER_IS_BETTER = frozenset({"efficiency", "completion_rate", "throughput_tasks_per_h", "points_per_h", "utilization"})
# keys that define a metric otherwise than orch computes it (SQL, a formula): orch cannot honour them yet
DEFINITIONS = ("query", "derived", "derivation")
PROSE = ("description", "notes")  # words for readers, never "ignored"
CRITERIA_LEVELS = ("minimum", "target")  # seed 004's levels; others (stretch, interesting_if) are prose
_JUDGEABLE = re.compile(r"^\s*(<=|>=|==|!=|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass
class Asked:
    items: list[dict] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # key paths, e.g. "metrics.primary.tasks_per_hour"


def _key(*parts: Any) -> str:
    return ".".join(str(p) for p in parts)


def _metric_entry(entry: Any, where: tuple, i: int, out: Asked, seen: set[str]) -> None:
    name = entry if isinstance(entry, str) else entry.get("name") if isinstance(entry, dict) else None
    if not isinstance(name, str) or not name:
        out.ignored.append(_key(*where, i))
        return
    if name not in METRIC_KEYS:  # a metric orch does not compute
        out.ignored.append(_key(*where, name))
        return
    body = entry if isinstance(entry, dict) else {}
    defined = next((k for k in DEFINITIONS if k in body), None)
    if defined:  # the file's own definition of the number, which orch does not run
        out.ignored.append(_key(*where, name, defined))
        return
    direction = "higher" if name in HIGHER_IS_BETTER else "lower"
    for k, v in body.items():
        if k == "lower_is_better" and isinstance(v, bool):
            direction = "lower" if v else "higher"
        elif k in ("compare", "direction") and v in DIRECTIONS:
            direction = DIRECTIONS[v]
        elif k not in ("name", *PROSE):  # source: lines, neutral comparisons, targets
            out.ignored.append(_key(*where, name, k))
    if name not in seen:
        seen.add(name)
        out.items.append({"name": name, "direction": direction})


def asked_metrics(raw: Any) -> Asked:
    """The metrics a file asks for that orch computes, as ``{name, direction}``; the rest by key."""
    out, seen = Asked(), set()
    if raw is None:
        return out
    if isinstance(raw, list):
        for i, e in enumerate(raw):
            _metric_entry(e, ("metrics",), i, out, seen)
        return out
    if not isinstance(raw, dict):
        out.ignored.append("metrics")
        return out
    for group, entries in raw.items():
        if isinstance(entries, dict):  # {description, measurements: [...]}
            for k in entries:
                if k not in ("measurements", *PROSE):
                    out.ignored.append(_key("metrics", group, k))
            entries = entries.get("measurements", [])
        if not isinstance(entries, list):
            out.ignored.append(_key("metrics", group))
            continue
        for i, e in enumerate(entries):
            _metric_entry(e, ("metrics", group), i, out, seen)
    return out


def _is_orch_criterion(c: Any) -> bool:
    return isinstance(c, dict) and set(c) == {"metric", "op", "value"}


def asked_criteria(raw: Any) -> Asked:
    """Success criteria as ``{metric, op, value}``: orch's own list as written; of seed 004's levels,
    each ``metric: "op number"`` on a metric orch computes. The rest (``"> baseline"``, other
    levels, task-graph-mcp's free-form conditions) by key."""
    out = Asked()
    if raw is None:
        return out
    if isinstance(raw, list):
        for i, c in enumerate(raw):
            if _is_orch_criterion(c):
                out.items.append(dict(c))
            else:
                label = c.get("name") if isinstance(c, dict) and isinstance(c.get("name"), str) else i
                out.ignored.append(_key("success_criteria", label))
        return out
    if not isinstance(raw, dict):
        out.ignored.append("success_criteria")
        return out
    for level, body in raw.items():
        if level not in CRITERIA_LEVELS or not isinstance(body, dict):
            out.ignored.append(_key("success_criteria", level))
            continue
        for metric, cond in body.items():
            m = _JUDGEABLE.match(cond) if isinstance(cond, str) else None
            if m is None or metric not in METRIC_KEYS:
                out.ignored.append(_key("success_criteria", level, metric))
            else:
                out.items.append({"metric": metric, "op": m.group(1), "value": float(m.group(2))})
    return out


def default_direction(name: str) -> str:
    """The direction of a metric no file names: more is better for HIGHER_IS_BETTER, less for the rest."""
    return "higher" if name in HIGHER_IS_BETTER else "lower"


def metric_directions(doc: dict | None) -> dict[str, str]:
    """Every metric an experiment file (as written, any shape) names -> "lower" | "higher" | "neutral"."""
    if not isinstance(doc, dict):
        return {}
    return {m["name"]: m["direction"] for m in asked_metrics(doc.get("metrics")).items}
