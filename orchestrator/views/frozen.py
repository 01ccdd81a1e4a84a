"""What the frozen experiment files of compared runs ask of a comparison.

Each run keeps the experiment file it ran from (``<run>/experiment.yaml``, as written, in any shape
orch loads). The loader checked it; here it is read again, as data: the order of the variants (the
default baseline is the first), the metrics it names and their directions, ``comparison:``
(``baseline``, ``alpha``), and the hypotheses with their claims (orch's
``experiment.hypotheses``; seed 004's ``comparison.hypotheses`` are text without claims).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from orchestrator.views.asks import metric_directions

ALPHA = 0.05
NO_BASELINE = ("none", "")  # task-graph-mcp's files say `baseline: none`
OPS = ("<", ">", "<=", ">=")


@dataclass
class Asked:
    """What the compared runs' experiment files ask, merged over the experiments compared."""

    experiments: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)  # variants in their files' order
    directions: dict[str, str] = field(default_factory=dict)  # the metrics the files name
    baseline: str | None = None
    alpha: float = ALPHA
    hypotheses: list[dict] = field(default_factory=list)  # {experiment, id, text, claims}
    statements: dict[str, str] = field(default_factory=dict)  # experiment -> its `hypothesis:` text


def _load(path: Path) -> dict:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return doc if isinstance(doc, dict) else {}


def variant_names(doc: dict) -> list[str]:
    """The variants a file defines, in its order, in each shape orch reads."""
    variants = doc.get("variants")
    if isinstance(variants, dict):  # task-graph-mcp's variants mapping
        return [str(k) for k in variants]
    listed = variants if isinstance(variants, list) else doc.get("runs") if isinstance(doc.get("runs"), list) else []
    names = [str(v["name"]) for v in listed if isinstance(v, dict) and v.get("name") is not None]
    if not names and isinstance(doc.get("agents"), dict):  # task-graph-mcp's single variant
        head = doc.get("experiment") if isinstance(doc.get("experiment"), dict) else {}
        names = [str(doc.get("name") or head.get("id") or "")]
    return [n for n in names if n]


def _well_formed(c) -> bool:
    """A claim as the loader accepts it (a frozen copy was loaded once, but may predate a check)."""
    return (isinstance(c, dict) and isinstance(c.get("metric"), str) and isinstance(c.get("a"), str)
            and c.get("op") in OPS and isinstance(c.get("b"), (str, int, float)) and not isinstance(c.get("b"), bool))


def _hypotheses(doc: dict, experiment: str) -> list[dict]:
    head = doc.get("experiment") if isinstance(doc.get("experiment"), dict) else {}
    out = []
    for i, h in enumerate(head.get("hypotheses") or []):
        if isinstance(h, dict):
            claims = [c for c in h.get("claims") or [] if _well_formed(c)]
            out.append({"experiment": experiment, "id": str(h.get("id", f"H{i + 1}")), "text": str(h.get("text", "")).strip(),
                        "claims": claims})
    comparison = doc.get("comparison") if isinstance(doc.get("comparison"), dict) else {}
    seed004 = comparison.get("hypotheses")
    if isinstance(seed004, dict):  # seed 004: {name: text}, prose a reader judges
        out += [{"experiment": experiment, "id": str(k), "text": str(v).strip(), "claims": []} for k, v in seed004.items()]
    return out


def asked(run_dirs_by_experiment: dict[str, Path]) -> Asked:
    """``{experiment id: one of its run directories}`` -> what their frozen files ask."""
    out = Asked()
    for experiment, run_dir in run_dirs_by_experiment.items():
        doc = _load(Path(run_dir) / "experiment.yaml")
        out.experiments.append(experiment)
        out.order += [v for v in variant_names(doc) if v not in out.order]
        for name, direction in metric_directions(doc).items():
            out.directions.setdefault(name, direction)
        comparison = doc.get("comparison") if isinstance(doc.get("comparison"), dict) else {}
        base = comparison.get("baseline")
        if out.baseline is None and isinstance(base, str) and base.strip().lower() not in NO_BASELINE:
            out.baseline = base.strip()
        alpha = comparison.get("alpha")
        if isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and 0 < alpha < 1 and out.alpha == ALPHA:
            out.alpha = float(alpha)
        out.hypotheses += _hypotheses(doc, experiment)
        head = doc.get("experiment") if isinstance(doc.get("experiment"), dict) else {}
        if isinstance(head.get("hypothesis"), str) and head["hypothesis"].strip():
            out.statements[experiment] = " ".join(head["hypothesis"].split())
    return out
