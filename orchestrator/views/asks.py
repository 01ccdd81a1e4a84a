"""What an experiment file asks of the views: the metrics to show (orch's and its own), which way
each is better, and the success criteria to judge.

Read from the file's YAML as written, in every shape orch loads: orch's own lists
(``metrics: [{name, query | derived, compare | direction, description}]``, ``success_criteria:
[{metric, op, value}]``) and the grouped forms of task-graph-mcp's files and seed 004 (``metrics:
{group: [name | {name, query | derived | derivation, compare}]}``, ``success_criteria: {minimum:
{metric: ">= 80"}, target: {...}}``). The loader reads a file with these functions and the exports
read the run's frozen copy with them again, so a run is judged exactly as its file was loaded.
What orch does not compute or cannot judge comes back by key path
(``metrics.coordination.blocking_ratio_pct.source``) for the loader's one "ignored" note; a foreign
file's definition of a metric orch computes itself is among them (orch's own wins).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from orchestrator.views.metrics import METRIC_KEYS

# a metric entry's words for which way it is better (compare: is seed 004's, direction: orch's)
DIRECTIONS = {"lower_is_better": "lower", "higher_is_better": "higher", "neutral": "neutral",
              "lower": "lower", "higher": "higher"}
# the direction of an orch metric named without one: more of these is better, neither way for the
# NEUTRAL ones (what the variant or the graph is, not how well it ran), less of every other
HIGHER_IS_BETTER = frozenset({"efficiency", "completion_rate", "throughput_tasks_per_h", "points_per_h", "utilization",
                              "tasks_completed", "cache_hit_rate", "speedup_vs_solo", "merged_verified",
                              "forecast_precision", "forecast_recall"})
NEUTRAL = frozenset({"tasks_total", "workers", "lower_bound_ms", "merged_verify_exit", "merged_verify_sha", "merges_verified",
                     "conflict_forecasts", "tasks_held_back",
                     # best-of: counts and shares of the agents, neither better nor worse for a variant
                     "bestof_rounds", "bestof_attempts", "bestof_wins", "bestof_win_rate", "bestof_win_rate_by_kind"})
# keys that define a metric (SQL, an expression; derivation is task-graph-mcp's word for derived)
DEFINITIONS = {"query": "query", "derived": "derived", "derivation": "derived"}
PROSE = ("description", "notes")  # words for readers, never "ignored"
CRITERIA_LEVELS = ("minimum", "target")  # seed 004's levels; others (stretch, interesting_if) are prose
_JUDGEABLE = re.compile(r"^\s*(<=|>=|==|!=|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass
class Asked:
    items: list[dict] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # key paths, e.g. "metrics.primary.tasks_per_hour"
    keys: list[tuple] = field(default_factory=list)  # each item's key path in the file, e.g. ("metrics", "primary", 2)


def default_direction(name: str) -> str:
    """Which way a metric is better when no file says: "higher", "lower", or "neutral" (neither,
    and every metric orch does not compute)."""
    if name in HIGHER_IS_BETTER:
        return "higher"
    if name in NEUTRAL or name not in METRIC_KEYS:
        return "neutral"
    return "lower"


def _key(*parts: Any) -> str:
    return ".".join(str(p) for p in parts)


def _metric_entry(entry: Any, label: tuple, where: tuple, i: int, out: Asked, seen: set[str]) -> None:
    """One entry; ``label`` names it in the ignored list, ``where`` is its list's key path."""
    name = entry if isinstance(entry, str) else entry.get("name") if isinstance(entry, dict) else None
    if not isinstance(name, str) or not name:
        out.ignored.append(_key(*label, i))
        return
    body = entry if isinstance(entry, dict) else {}
    given = [k for k in DEFINITIONS if k in body]
    if given and name in METRIC_KEYS:  # a definition of a metric orch computes: orch's own counts
        out.ignored.extend(_key(*label, name, k) for k in given)
    elif not given and name not in METRIC_KEYS:  # a metric nobody computes
        out.ignored.append(_key(*label, name))
        return
    item: dict[str, Any] = {"name": name, "direction": default_direction(name)}
    if name not in METRIC_KEYS:
        for k in given:  # derived before derivation
            item.setdefault(DEFINITIONS[k], body[k])
    for k, v in body.items():
        if k == "lower_is_better" and isinstance(v, bool):
            item["direction"] = "lower" if v else "higher"
        elif k in ("compare", "direction") and v in DIRECTIONS:
            item["direction"] = DIRECTIONS[v]
        elif k == "description" and isinstance(v, str):
            item[k] = v
        elif k not in ("name", *PROSE, *DEFINITIONS):  # source: lines, targets
            out.ignored.append(_key(*label, name, k))
    if name not in seen:
        seen.add(name)
        out.items.append(item)
        out.keys.append((*where, i))


def asked_metrics(raw: Any) -> Asked:
    """The metrics a file asks for that orch computes or that the file defines, as ``{name,
    direction, query | derived, description}``; the rest by key."""
    out, seen = Asked(), set()
    if raw is None:
        return out
    if isinstance(raw, list):
        for i, e in enumerate(raw):
            _metric_entry(e, ("metrics",), ("metrics",), i, out, seen)
        return out
    if not isinstance(raw, dict):
        out.ignored.append("metrics")
        return out
    for group, entries in raw.items():
        where: tuple = ("metrics", group)
        if isinstance(entries, dict):  # {description, measurements: [...]}
            for k in entries:
                if k not in ("measurements", *PROSE):
                    out.ignored.append(_key("metrics", group, k))
            entries, where = entries.get("measurements", []), where + ("measurements",)
        if not isinstance(entries, list):
            out.ignored.append(_key("metrics", group))
            continue
        for i, e in enumerate(entries):
            _metric_entry(e, ("metrics", group), where, i, out, seen)
    return out


def defined_names(raw: Any) -> frozenset[str]:
    """The metrics a file's ``metrics:`` defines itself (query or derived)."""
    return frozenset(m["name"] for m in asked_metrics(raw).items if "query" in m or "derived" in m)


def metric_directions(doc: dict | None) -> dict[str, str]:
    """Which way each metric the experiment file (its YAML, any shape) names is better: "lower" |
    "higher" | "neutral", as the file says, else ``default_direction``. Only the metrics it names
    (the comparison compares those); any other metric's direction is ``default_direction``'s."""
    return {m["name"]: m["direction"] for m in asked_metrics(doc.get("metrics") if isinstance(doc, dict) else None).items}


def _is_orch_criterion(c: Any) -> bool:
    return isinstance(c, dict) and set(c) == {"metric", "op", "value"}


def asked_criteria(raw: Any, defined: frozenset[str] = frozenset()) -> Asked:
    """Success criteria as ``{metric, op, value}``: orch's own list as written; of seed 004's levels,
    each ``metric: "op number"`` on a metric orch computes or the file ``defined``. The rest
    (``"> baseline"``, other levels, task-graph-mcp's free-form conditions) by key."""
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
            if m is None or (metric not in METRIC_KEYS and metric not in defined):
                out.ignored.append(_key("success_criteria", level, metric))
            else:
                out.items.append({"metric": metric, "op": m.group(1), "value": float(m.group(2))})
    return out

