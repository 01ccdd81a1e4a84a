"""Back-pressure: shared per-provider limits against per-agent pauses, same seeds, same load.

Each run is a real orch run (plan_runs, prepare_run, ``Orchestrator.conduct``: runners as
processes, the store, immediate merges) of sim agents over independent tasks, all sending to one
simulated provider that serves ``--capacity`` sessions at once (``agents.kinds.simprovider``) and
answers 429 beyond it. Per seed it runs twice:

* per-agent: ``execution.backpressure: agent``: the agent that got a 429 pauses for the retry
  time and asks again; the other agents keep asking;
* shared: ``execution.backpressure: shared``: one AIMD limiter per provider in the store (a 429
  halves the provider's concurrency and pauses it; successes grow it by one per window).

Printed: one line per run (429s = the run's ``rate_limited`` events; wall; completed), then the
totals over the seeds and the ratio shared / per-agent. Which request is refused depends on
timing, so a seed's count varies a little between runs; the plans (durations) are the seed's.

    python bench/backpressure.py [--agents 6] [--capacity 2] [--tasks 12] [--seeds 1,2,3]
                                 [--task-ms 400] [--retry-ms 40] [--store sqlite] [--json]

Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TIME_SCALE = 0.001  # one estimated second runs in a millisecond
MODES = ("agent", "shared")
LABEL = {"agent": "per-agent", "shared": "shared"}


def graph_doc(n: int, task_ms: int) -> dict:
    """``n`` independent tasks, each editing its own file: all the parallelism the agents want."""
    est = round(task_ms / TIME_SCALE)
    tasks = [{"id": f"t{i:03d}", "title": f"task {i}", "time_estimate_ms": est, "file_scope": [f"src/f{i:03d}.py"]}
             for i in range(n)]
    return {"format": "orch-graph", "version": 1, "tasks": tasks, "dependencies": []}


def experiment_yaml(mode: str, agents: int, capacity: int, retry_ms: int, seed: int, store: str) -> str:
    retry_s = retry_ms / 1000.0 / TIME_SCALE  # the sim's retry_after_s is agent time
    return (
        "experiment: {id: backpressure, name: back-pressure bench}\n"
        "template: graph.json\n"
        f"execution: {{runs: 1, seed: {seed}, time_scale: {TIME_SCALE}, timeout_s: 300, store: '{store}',"
        f" backpressure: {mode}}}\n"
        f"variants:\n  - {{name: {mode}, policy: pull, agents: {agents},"
        f" kind_options: {{provider: bench, provider_capacity: {capacity}, retry_after_s: {retry_s}, sigma: 0.3}}}}\n"
    )


def one_run(mode: str, seed: int, a) -> dict:
    from coordstore import open_store
    from orchestrator.runs.launch import RunRequest, plan_runs
    from orchestrator.runs.loop import Orchestrator
    from orchestrator.runs.prepare import prepare_run

    with tempfile.TemporaryDirectory(prefix="orch-bp-") as tmp:
        t = Path(tmp)
        (t / "graph.json").write_text(json.dumps(graph_doc(a.tasks, a.task_ms)))
        (t / "exp.yaml").write_text(experiment_yaml(mode, a.agents, a.capacity, a.retry_ms, seed, a.store))
        [(spec, paths, graph, exp_text, demo)] = plan_runs(RunRequest(variant=mode, experiment=t / "exp.yaml",
                                                                      results=t / "results", note_ignored=False))
        prepare_run(spec, paths, graph, exp_text, demo)
        orch = Orchestrator(spec, paths)
        try:
            status = orch.conduct()
        finally:
            orch.close()
        metrics = json.loads(paths.metrics.read_text())
        with open_store(spec.store_url) as st:
            limited = sum(e.type == "rate_limited" for e in st.read_events(spec.run_id))
            halvings = 0
            if mode == "shared":
                from agents.backpressure import ProviderState

                state = ProviderState(limit=a.agents, ceiling=a.agents)
                for r in st.history(spec.run_id, entity="provider", entity_id="bench"):
                    state.apply(r)
                halvings = state.halvings
    return {"mode": mode, "seed": seed, "status": status, "rate_limited": limited, "halvings": halvings,
            "wall_clock_ms": metrics.get("wall_clock_ms"), "completed": metrics.get("tasks_completed")}


def _count(flag: str, text: str, least: int) -> int:
    try:
        v = int(text)
    except ValueError:
        v = least - 1
    if v < least:
        raise SystemExit(f"{flag} {text!r}: must be a whole number >= {least}")
    return v


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="429s with shared back-pressure against per-agent pauses, same seeds")
    for flag, default in (("--agents", "6"), ("--capacity", "2"), ("--tasks", "12"), ("--task-ms", "400"), ("--retry-ms", "40")):
        ap.add_argument(flag, default=default)
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--store", default="sqlite", help="a store scheme (inside each run dir) or a URL")
    ap.add_argument("--json", action="store_true", help="one JSON object per run, then the totals")
    a = ap.parse_args(argv)
    a.agents = _count("--agents", a.agents, 2)
    a.capacity = _count("--capacity", a.capacity, 1)
    a.tasks = _count("--tasks", a.tasks, 1)
    a.task_ms = _count("--task-ms", a.task_ms, 1)
    a.retry_ms = _count("--retry-ms", a.retry_ms, 1)
    raw = a.seeds
    try:
        a.seeds = [int(s) for s in raw.split(",") if s.strip()]
    except ValueError:
        a.seeds = []
    if not a.seeds or any(s < 0 for s in a.seeds):
        raise SystemExit(f"--seeds {raw!r}: must be whole numbers >= 0, separated by commas")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    totals = dict.fromkeys(MODES, 0)
    for seed in a.seeds:
        for mode in MODES:
            r = one_run(mode, seed, a)
            totals[mode] += r["rate_limited"]
            if a.json:
                print(json.dumps(r))
            else:
                print(f"seed {seed} {LABEL[mode]:>9}: 429s {r['rate_limited']:4d}  halvings {r['halvings']:3d}  "
                      f"wall {r['wall_clock_ms']} ms  completed {r['completed']}/{a.tasks}  {r['status']}")
    ratio = totals["shared"] / totals["agent"] if totals["agent"] else None
    summary = {"agents": a.agents, "capacity": a.capacity, "tasks": a.tasks, "seeds": a.seeds,
               "per_agent_429s": totals["agent"], "shared_429s": totals["shared"], "ratio": ratio}
    if a.json:
        print(json.dumps(summary))
    else:
        shown = f"{ratio:.3f}" if ratio is not None else "n/a (no 429 per-agent)"
        print(f"total 429s over seeds {','.join(map(str, a.seeds))} ({a.agents} agents, capacity {a.capacity}, "
              f"{a.tasks} tasks): per-agent {totals['agent']}, shared {totals['shared']}, shared/per-agent {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
