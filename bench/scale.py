"""Scale: real orch runs of many sim agents over a wide generated graph, and what each task costs.

Each cell (agents x tasks x backend) is one real run through orch's own code path (plan_runs,
prepare_run, ``Orchestrator.conduct``: the run loop, the watcher, the supervisor, runners as
processes) with the pull policy, sim agents and immediate merges, inside a wrapper process of its
own, so ``getrusage`` splits the CPU between the orchestrator (RUSAGE_SELF, from the first spawn
to the export; the setup before is not counted) and everything it started (RUSAGE_CHILDREN:
runners and every git process they or the orchestrator waited for). Printed per cell:

* wall / lower bound: the run's ``wall_clock_ms`` / ``lower_bound_ms`` (its metrics);
* orch CPU-s/task: the orchestrator process alone; orch RSS: its peak (ru_maxrss);
* lag p99: event ``ts_ms`` (the runner's wall clock when it wrote the event) -> the moment the
  watcher's ``append_events`` returned in the orchestrator (its ``on_ingested`` hook, wall
  clock): what the watcher sees, delivery and ingestion together; also over the events written
  after the last runner was spawned (the loop does not poll while ``spawn_all`` runs);
* all CPU-s/task: orchestrator + runners + git children, over tasks completed;
* raw CPU-s/task, measured in the same run before the cell: per task on a repository with as
  many files, one ``git commit -a`` of a one-file edit + ``git merge-tree --write-tree`` +
  ``git commit-tree`` + ``git update-ref`` (what merging a task needs, nothing else);
  ratio = all CPU-s/task / raw (aim <= 2);
* doubles: tasks with more than one ``completed`` history row (target 0); respawns: runner
  processes started beyond one per agent (the supervisor replaced a runner it judged stuck).

Then runner start-up: --startup runners spawned at once by the orchestrator for a run with nothing
left to do (each starts, opens the store, registers, asks its policy, exits): CPU-s per runner,
against a bare ``python -c pass`` started as many times at once (the interpreter's floor). Under
PYTHONDONTWRITEBYTECODE with no ``__pycache__`` (e.g. a source checkout), every runner compiles
orch's modules again (~50 ms of CPU each here): the line says so.

    python bench/scale.py [--agents 16,32,64] [--tasks 250,500,1000] [--backend sqlite,postgresql]
                          [--task-ms 50] [--startup 64] [--json] [--profile]

PostgreSQL cells use ``--pg-url`` (default ``postgresql://postgres@127.0.0.1:5432/test``) with a
fresh schema per cell, dropped afterwards. Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
TIME_SCALE = 0.0001  # one estimated minute runs in 6 ms
DEP_EVERY = 5  # one task in five waits for an earlier one: a wide graph, a short critical path
RAW_SAMPLE = 150  # tasks timed for the raw baseline (its cost per task does not depend on N)


def cpu(ru) -> float:
    return ru.ru_utime + ru.ru_stime


# ---------------------------------------------------------------------------------------- inputs
def graph_doc(n: int, task_ms: int, seed: int) -> dict:
    """An orch-graph of ``n`` tasks, each editing its own file; every DEP_EVERY-th task is blocked
    by one random earlier task (so the critical path stays a few tasks long)."""
    rng = random.Random(seed)
    est = round(task_ms / TIME_SCALE)
    tasks = [{"id": f"t{i:04d}", "title": f"task {i}", "time_estimate_ms": est,
              "file_scope": [f"src/m{i % 16:02d}/f{i:04d}.py"]} for i in range(n)]
    deps = [{"from_id": f"t{rng.randrange(i):04d}", "to_id": f"t{i:04d}", "type": "blocks"}
            for i in range(1, n) if i % DEP_EVERY == 0]
    return {"format": "orch-graph", "version": 1, "tasks": tasks, "dependencies": deps}


def experiment_yaml(agents: int, store: str, timeout_s: float) -> str:
    return (
        "experiment: {id: scale, name: scale bench}\n"
        "template: graph.json\n"
        f"execution: {{runs: 1, seed: 7, time_scale: {TIME_SCALE}, timeout_s: {timeout_s}, store: '{store}', merge_mode: immediate}}\n"
        f"variants:\n  - {{name: scale, policy: pull, agents: {agents}, policy_options: {{order: critical-path}}}}\n"
    )


def pg_schema_url(base: str) -> tuple[str, str]:
    schema = f"orch_scale_{secrets.token_hex(4)}"
    return f"{base}?schema={schema}", schema


def drop_schema(base: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(base, autocommit=True) as c:
        c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# ---------------------------------------------------------------------------------------- one cell (own process)
def cell(agents: int, tasks: int, store: str, task_ms: int, timeout_s: float, profile: bool = False) -> dict:
    from coordstore import open_store
    from orchestrator.runs.launch import RunRequest, plan_runs
    from orchestrator.runs.loop import Orchestrator
    from orchestrator.runs.prepare import prepare_run

    with tempfile.TemporaryDirectory(prefix="orch-scale-") as tmp:
        t = Path(tmp)
        (t / "graph.json").write_text(json.dumps(graph_doc(tasks, task_ms, seed=tasks)))
        (t / "exp.yaml").write_text(experiment_yaml(agents, store, timeout_s))
        [(spec, paths, graph, exp_text, demo)] = plan_runs(RunRequest(variant="scale", experiment=t / "exp.yaml",
                                                                      results=t / "results", note_ignored=False))
        prepare_run(spec, paths, graph, exp_text, demo)
        lags: list[float] = []
        self0, kids0, t0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        orch = Orchestrator(spec, paths)

        def ingested(batch) -> None:
            now = time.time() * 1000
            lags.extend(now - e.ts_ms for e in batch)
            if spawned:
                late.extend(now - e.ts_ms for e in batch if e.ts_ms >= spawned[0])

        orch.watcher.on_ingested = ingested
        spawn_all, spawned = orch.controller.spawn_all, []

        def timed_spawn_all() -> None:  # when the last runner was spawned: the loop polls from then on
            spawn_all()
            spawned.append(time.time() * 1000)

        orch.controller.spawn_all = timed_spawn_all
        late: list[float] = []  # lags of events written after every runner was spawned
        prof = None
        if profile:  # the orchestrator's own CPU, by function, on stderr (--profile)
            import cProfile

            prof = cProfile.Profile(time.process_time)  # CPU, not wall (waits are not costs)
            prof.enable()
        try:
            status = orch.conduct()
        finally:
            orch.close()
            if prof is not None:
                import pstats

                prof.disable()
                pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(30)
        elapsed = time.perf_counter() - t0
        self1, kids1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        metrics = json.loads(paths.metrics.read_text())
        with open_store(spec.store_url) as st:
            completes: dict[str, int] = {}
            for r in st.history(spec.run_id, entity="task"):
                if r.to_state == "completed" and not r.is_note:
                    completes[r.entity_id] = completes.get(r.entity_id, 0) + 1
            starts = sum(e.type == "started" for e in st.read_events(spec.run_id))
    lags.sort()
    late.sort()
    return {
        "status": status, "elapsed_s": elapsed, "metrics": {k: metrics.get(k) for k in ("wall_clock_ms", "lower_bound_ms", "tasks_completed", "tasks_total")},
        "orch_cpu_s": cpu(self1) - cpu(self0), "kids_cpu_s": cpu(kids1) - cpu(kids0), "orch_rss_mb": self1.ru_maxrss / 1024,
        "lag_p99_ms": lags[max(0, int(len(lags) * 0.99) - 1)] if lags else None, "events": len(lags),
        "lag_p99_after_spawn_ms": late[max(0, int(len(late) * 0.99) - 1)] if late else None,
        "doubles": sum(c > 1 for c in completes.values()), "respawns": starts - agents,
    }


def startup_cell(n: int, store: str) -> dict:
    """``n`` runners spawned at once for a run whose only task is already cancelled."""
    from coordstore import open_store
    from orchestrator.runs.launch import RunRequest, plan_runs
    from orchestrator.runs.loop import Orchestrator
    from orchestrator.runs.prepare import prepare_run

    with tempfile.TemporaryDirectory(prefix="orch-scale-start-") as tmp:
        t = Path(tmp)
        (t / "graph.json").write_text(json.dumps(graph_doc(1, 50, seed=1)))
        (t / "exp.yaml").write_text(experiment_yaml(n, store, 120))
        [(spec, paths, graph, exp_text, demo)] = plan_runs(RunRequest(variant="scale", experiment=t / "exp.yaml",
                                                                      results=t / "results", note_ignored=False))
        prepare_run(spec, paths, graph, exp_text, demo)
        with open_store(spec.store_url) as st:
            st.cancel(spec.run_id, "t0000", reason="start-up bench: nothing to do", by="bench")
        orch = Orchestrator(spec, paths)
        kids0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        try:
            orch.start()
            while not orch.controller.all_exited() and time.perf_counter() - t0 < 120:
                orch.watcher.wait(0.05)
                orch.watcher.poll()
            wall = time.perf_counter() - t0
            kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            codes = [p.returncode for p in orch.controller.procs.values()]
            orch.finish("finished")
        finally:
            orch.close()
    floor0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    procs = [subprocess.Popen([sys.executable, "-c", "pass"]) for _ in range(n)]
    for p in procs:
        p.wait()
    floor1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"runners": n, "wall_s": wall, "cpu_per_runner_s": (cpu(kids1) - cpu(kids0)) / n, "bytecode_cache": not sys.dont_write_bytecode,
            "python_floor_s": (cpu(floor1) - cpu(floor0)) / n, "exit_codes": sorted(set(codes), key=str)}


# ---------------------------------------------------------------------------------------- raw baseline (parent)
def raw_baseline(files: int, sample: int = RAW_SAMPLE) -> tuple[float, float]:
    """(CPU-s per task, wall-s per task) of commit + merge-tree + commit-tree + update-ref."""
    from gitwork.runner import identity_env

    env = {**os.environ, **identity_env("bench")}

    def git(cwd, *args: str) -> str:
        return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True, env=env).stdout.strip()

    with tempfile.TemporaryDirectory(prefix="orch-scale-raw-") as tmp:
        repo, wt = Path(tmp) / "repo", Path(tmp) / "wt"
        repo.mkdir()
        for i in range(files):
            p = repo / f"src/m{i % 16:02d}/f{i:04d}.py"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(f"# f{i}\n\n# orch-slot: t{i:04d}\n\n")
        git(repo, "init", "-q", "-b", "main")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "base")
        git(repo, "worktree", "add", "-q", "-b", "agent", str(wt))
        tip = git(repo, "rev-parse", "refs/heads/main")
        k0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        for i in range(sample):
            j = i % files
            p = wt / f"src/m{j % 16:02d}/f{j:04d}.py"
            p.write_text(p.read_text() + f"edit {i}\n")
            git(wt, "commit", "-q", "-a", "-m", f"task {i}")
            tree = git(repo, "merge-tree", "--write-tree", tip, "agent").split("\n", 1)[0]
            new = git(repo, "commit-tree", tree, "-p", tip, "-p", "agent", "-m", f"merge task {i}")
            git(repo, "update-ref", "refs/heads/main", new, tip)
            tip = new
        k1, t1 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    return (cpu(k1) - cpu(k0)) / sample, (t1 - t0) / sample


def run_child(args: list[str], profile: bool = False) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"cell {' '.join(args)} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    if profile:
        print(out.stderr, file=sys.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def ints(s: str, what: str) -> list[int]:
    try:
        v = [int(x) for x in s.split(",") if x]
    except ValueError:
        raise SystemExit(f"--{what} {s!r}: give comma-separated integers") from None
    if not v or min(v) < 1:
        raise SystemExit(f"--{what} {s!r}: give comma-separated integers >= 1")
    return v


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", default="16,32,64")
    ap.add_argument("--tasks", default="250,500,1000")
    ap.add_argument("--backend", default="sqlite")
    ap.add_argument("--task-ms", type=int, default=50, help="a task's mean simulated work (ms, default 50)")
    ap.add_argument("--startup", type=int, default=64, help="runners started at once for the start-up line (0: skip)")
    ap.add_argument("--pg-url", default=DEFAULT_PG)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--json", action="store_true", help="one JSON line per cell instead of text")
    ap.add_argument("--profile", action="store_true", help="cProfile the orchestrator of each cell (top functions on stderr)")
    ap.add_argument("--cell", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cell:
        c = json.loads(args.cell)
        fn = startup_cell if c.pop("startup", False) else cell
        print(json.dumps(fn(**c)))
        return 0
    agents, tasks = ints(args.agents, "agents"), ints(args.tasks, "tasks")
    backends = [b for b in args.backend.split(",") if b]
    bad = [b for b in backends if b not in ("sqlite", "postgresql")]
    if bad or not backends:
        raise SystemExit(f"--backend {args.backend!r}: give sqlite and/or postgresql")
    print(f"cpus {os.cpu_count()}, task ~{args.task_ms} ms simulated work, pull, immediate merges, time_scale {TIME_SCALE}", flush=True)
    for backend in backends:
        for n in tasks:
            for a in agents:
                raw_cpu, _ = raw_baseline(n)  # next to each cell: the machine as it is now
                schema = None
                store = "sqlite"
                if backend == "postgresql":
                    store, schema = pg_schema_url(args.pg_url)
                try:
                    r = run_child(["--cell", json.dumps({"agents": a, "tasks": n, "store": store, "task_ms": args.task_ms,
                                                         "timeout_s": args.timeout, "profile": args.profile})], args.profile)
                finally:
                    if schema:
                        drop_schema(args.pg_url, schema)
                m = r["metrics"]
                done = m["tasks_completed"] or 0
                per = lambda s: s / done if done else float("nan")  # noqa: E731
                all_cpu = per(r["orch_cpu_s"] + r["kids_cpu_s"])
                row = {"bench": "scale", "backend": backend, "agents": a, "tasks": n, "status": r["status"],
                       "completed": done, "wall_ms": m["wall_clock_ms"], "lower_bound_ms": m["lower_bound_ms"],
                       "wall_over_bound": round(m["wall_clock_ms"] / m["lower_bound_ms"], 3) if m["lower_bound_ms"] else None,
                       "orch_cpu_s_per_task": round(per(r["orch_cpu_s"]), 5), "orch_rss_mb": round(r["orch_rss_mb"], 1),
                       "lag_p99_ms": round(r["lag_p99_ms"], 1) if r["lag_p99_ms"] is not None else None, "events": r["events"],
                       "lag_p99_after_spawn_ms": round(r["lag_p99_after_spawn_ms"], 1) if r["lag_p99_after_spawn_ms"] is not None else None,
                       "all_cpu_s_per_task": round(all_cpu, 5), "raw_cpu_s_per_task": round(raw_cpu, 5),
                       "ratio": round(all_cpu / raw_cpu, 2), "doubles": r["doubles"], "respawns": r["respawns"]}
                if args.json:
                    print(json.dumps(row), flush=True)
                else:
                    print(f"{backend:<10} {a:>3} agents x {n:>4} tasks: {r['status']}, {done}/{m['tasks_total']} done, "
                          f"wall/bound {row['wall_over_bound']} ({m['wall_clock_ms'] / 1000:.1f}s / {m['lower_bound_ms'] / 1000:.1f}s), "
                          f"orch {row['orch_cpu_s_per_task'] * 1000:.1f} ms CPU/task, RSS {row['orch_rss_mb']:.0f} MB, "
                          f"lag p99 {row['lag_p99_ms']} ms ({row['lag_p99_after_spawn_ms']} after spawn), all {all_cpu * 1000:.1f} ms CPU/task vs raw {raw_cpu * 1000:.1f} "
                          f"= {row['ratio']}x, doubles {r['doubles']}, respawns {r['respawns']}", flush=True)
    if args.startup:
        s = run_child(["--cell", json.dumps({"startup": True, "n": args.startup, "store": "sqlite"})])
        row = {"bench": "scale-startup", **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in s.items()},
               "ratio": round(s["cpu_per_runner_s"] / s["python_floor_s"], 2)}
        if args.json:
            print(json.dumps(row))
        else:
            print(f"start-up: {s['runners']} runners at once in {s['wall_s']:.1f}s, {s['cpu_per_runner_s'] * 1000:.0f} ms CPU "
                  f"per runner vs python -c pass {s['python_floor_s'] * 1000:.0f} ms = {row['ratio']}x, exits {s['exit_codes']}"
                  + ("" if s["bytecode_cache"] else " (PYTHONDONTWRITEBYTECODE: runners compile orch's modules at every start)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
