"""Run directories written by hand (run.json, metrics.json, the frozen experiment.yaml) for the
tests of comparisons, reports and plans: numbers chosen so the answers can be worked out."""

from __future__ import annotations

import json
from pathlib import Path

import yaml


def write_run(root: Path, variant: str, i: int, metrics: dict, policy: str = "pull", agents: int = 4,
              experiment: dict | None = None, experiment_id: str = "exp", **spec) -> Path:
    """``root/<variant>/<variant>-r<i>/`` with a run.json (``agents`` workers of ``policy``, plus
    ``spec``), metrics.json and, given ``experiment`` (a YAML document as data), experiment.yaml."""
    d = Path(root) / variant / f"{variant}-r{i}"
    d.mkdir(parents=True)
    run = {"run_id": d.name, "experiment_id": experiment_id, "variant": variant, "policy": policy,
           "agents": [{"id": f"w{k + 1}", "role": "worker", "kind": "sim"} for k in range(agents)], "seed": 41 + i, **spec}
    (d / "run.json").write_text(json.dumps(run))
    (d / "metrics.json").write_text(json.dumps(metrics))
    if experiment is not None:
        (d / "experiment.yaml").write_text(yaml.safe_dump(experiment, sort_keys=False))
    return d


def write_variant(root: Path, variant: str, walls: list[float], experiment: dict | None = None, **kw) -> list[Path]:
    """One run per wall clock in ``walls`` (metrics: wall_clock_ms and efficiency = 1000 / wall)."""
    return [write_run(root, variant, i, {"wall_clock_ms": w, "efficiency": 1000 / w}, experiment=experiment, **kw)
            for i, w in enumerate(walls, 1)]


def experiment_doc(variants: list[str], hypotheses: list[dict] | None = None, baseline: str | None = None,
                   metrics: list[dict] | None = None, runs: int = 3) -> dict:
    """An orch experiment file as data: pull variants with the given names, ``runs`` replications."""
    doc = {"experiment": {"id": "exp", "hypotheses": hypotheses or []}, "template": "tiny-feature",
           "execution": {"runs": runs}, "variants": [{"name": v, "policy": "pull", "agents": 2} for v in variants]}
    if metrics is not None:
        doc["metrics"] = metrics
    if baseline is not None:
        doc["comparison"] = {"baseline": baseline}
    return doc
