"""Success criteria of an experiment (``metric op value``), evaluated on one run's metrics."""

from __future__ import annotations

import operator
from pathlib import Path

import yaml

from orchestrator.views.asks import asked_criteria, defined_names

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne}


def evaluate(criteria: list[dict], metrics: dict) -> list[dict]:
    """Each criterion with the metric's value and whether it held (a missing metric fails)."""
    out = []
    for c in criteria:
        value = metrics.get(c["metric"])
        # a yes/no metric (merged_verified) is judged as 1 or 0: `merged_verified == 1`
        ok = isinstance(value, (int, float)) and OPS[c["op"]](int(value) if isinstance(value, bool) else value, c["value"])
        out.append({"metric": c["metric"], "op": c["op"], "value": c["value"], "got": value, "passed": bool(ok)})
    return out


def from_experiment_file(path: Path, metrics: dict) -> list[dict]:
    """Evaluate the criteria of a (frozen) experiment file, in any shape orch loads, as the loader
    read them (``asks.asked_criteria``); none when the file is absent."""
    if not Path(path).is_file():
        return []
    doc = yaml.safe_load(Path(path).read_text())
    if not isinstance(doc, dict):
        return []
    return evaluate(asked_criteria(doc.get("success_criteria"), defined_names(doc.get("metrics"))).items, metrics)
