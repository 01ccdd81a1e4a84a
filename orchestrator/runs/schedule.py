"""`orch run --experiment FILE --all`: every variant of an experiment, replications interleaved.

Variants run as A1 B1 C1 A2 B2 C2 …, not A1 A2 A3 B1 …: whatever drifts while an experiment runs
(the machine's load, a cache warming, a rate limit) then falls on every variant alike instead of
on whichever ran last. Seeds are paired: replication i of every variant uses the experiment's
seed + i - 1 (``launch.plan_runs``), so each variant meets the same sequence of simulated
durations and faults, and a comparison can pair them. A variant whose ``execution.seed``
overrides the experiment's is not paired; that is said once on stderr.

Each started run is appended to ``<results>/<experiment>/schedule.jsonl`` (order, variant,
replication, seed, run id, start time), the record of the order in which they ran.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from coordstore.clock import wall_clock_ms
from coordstore.errors import UsageError

from orchestrator.runs.experiment import load_experiment

SCHEDULE_NAME = "schedule.jsonl"


@dataclasses.dataclass
class Scheduled:
    order: int  # 1-based position in the interleaved sequence
    replication: int  # 1-based, within its variant
    plan: tuple  # what ``launch.run_one`` takes

    @property
    def spec(self):
        return self.plan[0]


def interleave(per_variant: list[list[tuple]]) -> list[Scheduled]:
    """Round-robin over the variants' replications (variants keep the file's order); a variant with
    fewer runs drops out of the later rounds."""
    out: list[Scheduled] = []
    for i in range(max((len(p) for p in per_variant), default=0)):
        for plans in per_variant:
            if i < len(plans):
                out.append(Scheduled(len(out) + 1, i + 1, plans[i]))
    return out


def plan_experiment(req, plan_runs) -> list[Scheduled]:
    """Every variant of ``req.experiment`` planned with ``plan_runs`` (each checked before anything
    is written, so one bad variant leaves no run directory behind), interleaved."""
    if req.experiment is None:
        raise UsageError("--all runs every variant of one experiment: give it with --experiment FILE")
    exp = load_experiment(req.experiment)
    per_variant = [plan_runs(dataclasses.replace(req, variant=v.name, note_ignored=i == 0)) for i, v in enumerate(exp.variants)]
    unpaired = [v.name for v in exp.variants if "seed" in v.execution]
    if unpaired and req.seed is None:
        print(f"orch: note: {req.experiment}: variants {', '.join(unpaired)} set their own execution.seed: "
              "their replications are not paired with the others'", file=sys.stderr)
    return interleave(per_variant)


def record_start(results: Path, item: Scheduled) -> None:
    """One line per started run in the experiment's schedule (appended: several `--all` sessions
    into one results directory keep every run's place)."""
    spec = item.spec
    path = Path(results) / spec.experiment_id / SCHEDULE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {"order": item.order, "variant": spec.variant, "replication": item.replication, "seed": spec.seed,
            "run_id": spec.run_id, "started_at": wall_clock_ms()}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line, sort_keys=True) + "\n")
