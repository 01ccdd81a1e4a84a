"""A small experiment on disk for tests that run orch in-process: tasks, a template beside it, one
variant ``v``, and supervision thresholds fast enough for misbehaving agents to be caught quickly."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

FAST_SUPERVISION = {"stall_after_ms": 1500, "busy_grace_ms": 0, "kill_grace_s": 0.5, "loop_repeats": 5,
                    "respawn_backoff_ms": 100, "respawn_backoff_max_ms": 400, "max_retries": 3}


def task(tid, scope=(), est_ms=2000, **extra):
    return {"id": tid, "title": f"do {tid}", "time_estimate_ms": est_ms, "points": 1, "file_scope": list(scope), **extra}


def write_experiment(tmp_path: Path, tasks, deps, variant: dict, **execution) -> Path:
    tpl = tmp_path / "graph.json"
    tpl.write_text(json.dumps({"format": "orch-graph", "version": 1, "tasks": tasks,
                               "dependencies": [{"from_id": a, "to_id": b, "type": k} for a, b, k in deps]}))
    exp = {"experiment": {"id": "t"}, "template": str(tpl),
           "execution": {"runs": 1, "seed": 1, "time_scale": 0.05, "timeout_s": 90, "supervision": FAST_SUPERVISION, **execution},
           "variants": [{"name": "v", **variant}]}
    f = tmp_path / "exp.yaml"
    f.write_text(yaml.safe_dump(exp))
    return f
