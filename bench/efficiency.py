"""Efficiency: how close a variant's wall clock comes to the makespan lower bound.

Runs the variant (sim agents, demo repository) --runs times and prints, per run, wall clock, lower
bound and efficiency, then a final JSON line with the median ``ratio`` = wall clock / lower bound
(target for pull-4 with order critical-path on browser-parallel: <= 1.10).

    python bench/efficiency.py [--variant pull-4] [--template templates/browser-parallel.json] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    from orchestrator.runs.launch import RunRequest, plan_runs, run_one

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="pull-4")
    ap.add_argument("--template", default=str(ROOT / "templates" / "browser-parallel.json"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--time-scale", type=float, default=None)
    args = ap.parse_args()
    ratios = []
    with tempfile.TemporaryDirectory(prefix="orch-efficiency-") as tmp:
        plans = plan_runs(RunRequest(variant=args.variant, template=args.template, runs=args.runs, seed=args.seed,
                                     time_scale=args.time_scale, results=Path(tmp)))
        for spec, *rest in plans:
            out = run_one(spec, *rest)
            m = out.metrics
            ratio = m["wall_clock_ms"] / m["lower_bound_ms"] if m["lower_bound_ms"] else float("inf")
            ratios.append(ratio)
            print(f"{spec.run_id}: {out.status}, wall {m['wall_clock_ms']} ms, lower bound {m['lower_bound_ms']:.0f} ms, "
                  f"efficiency {m['efficiency']:.3f}, wall/bound {ratio:.3f}")
    med = statistics.median(ratios)
    print(json.dumps({"bench": "efficiency", "variant": args.variant, "template": Path(args.template).stem,
                      "runs": len(ratios), "ratios": [round(r, 4) for r in ratios], "ratio": round(med, 4)}))


if __name__ == "__main__":
    main()
