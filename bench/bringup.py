"""Bring-up: how long orch takes to get N agents working, against raw git + bare interpreters.

orch: from setup (store, graph, merged branch, N worktrees) through spawning N runners until the
first event of every runner is ingested into the store. Raw baseline, same run, same repository
size: N x (`git worktree add --no-track -b ...` + `python -c pass`). Prints per-round times and a
final JSON line with ``ratio`` = orch / raw (target <= 2.0).

    python bench/bringup.py --agents 8 --files 300 [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

IDENT = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@x"}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, env={**os.environ, **IDENT}, check=True, capture_output=True, text=True).stdout


def build_repo(path: Path, files: int) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    for i in range(files):
        p = path / f"src/pkg{i % 20}/mod{i}.py"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("".join(f"def f{j}():\n    return {i * j}\n\n" for j in range(20)))
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "base")
    return path


def raw_round(repo: Path, work: Path, agents: int, tag: str) -> float:
    t0 = time.perf_counter()
    for i in range(agents):
        git(repo, "worktree", "add", "-q", "--no-track", "-b", f"raw/{tag}/a{i}", str(work / f"raw-{tag}-{i}"), "HEAD")
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - t0


def orch_round(repo: Path, work: Path, agents: int, tag: str) -> float:
    import yaml

    from orchestrator.runs.launch import RunRequest, plan_runs
    from orchestrator.runs.loop import Orchestrator
    from orchestrator.runs.prepare import prepare_run

    tpl = work / f"graph-{tag}.json"
    # long tasks so every runner stays busy (and emits) while we measure
    tpl.write_text(json.dumps({"format": "orch-graph", "version": 1, "tasks": [
        {"id": f"t{i}", "time_estimate_ms": 600_000, "file_scope": [f"src/pkg0/mod{i}.py"]} for i in range(agents)]}))
    exp = work / f"exp-{tag}.yaml"
    exp.write_text(yaml.safe_dump({"experiment": {"id": "bench"}, "template": str(tpl),
                                   "execution": {"time_scale": 1.0, "timeout_s": 60},
                                   "variants": [{"name": "b", "policy": "pull", "agents": agents}]}))
    [plan] = plan_runs(RunRequest(variant="b", experiment=exp, repo=repo, results=work / f"results-{tag}"))
    spec, paths, graph, text, demo = plan
    t0 = time.perf_counter()
    prepare_run(spec, paths, graph, text, demo)
    orch = Orchestrator(spec, paths)
    orch.start()
    ids = [a.id for a in spec.agents]
    try:
        while True:
            orch.watcher.poll()
            if all(orch.store.last_event_seq(spec.run_id, a) >= 0 for a in ids):
                break
            orch.watcher.wait(0.005)
        elapsed = time.perf_counter() - t0
    finally:
        orch.controller.stop_all(grace_s=1.0)
        orch.watcher.stop()
        orch.close()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=8)
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="orch-bringup-") as tmp:
        work = Path(tmp)
        repo = build_repo(work / "repo", args.files)
        raws, orchs = [], []
        for r in range(args.rounds):
            raws.append(raw_round(repo, work, args.agents, f"r{r}"))
            orchs.append(orch_round(repo, work, args.agents, f"r{r}"))
            print(f"round {r + 1}: orch {orchs[-1] * 1000:.0f} ms, raw {raws[-1] * 1000:.0f} ms")
        o, w = statistics.median(orchs), statistics.median(raws)
        print(f"median: orch {o * 1000:.0f} ms for {args.agents} agents ready, raw {w * 1000:.0f} ms, ratio {o / w:.2f} (target <= 2.0)")
        print(json.dumps({"bench": "bringup", "agents": args.agents, "files": args.files, "rounds": args.rounds,
                          "orch_ms": round(o * 1000, 1), "raw_ms": round(w * 1000, 1), "ratio": round(o / w, 3)}))


if __name__ == "__main__":
    main()
