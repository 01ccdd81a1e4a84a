"""Claims per second of orch's store against a raw baseline measured in the same run.

    python bench/claims.py [--backend sqlite|file|postgresql] [--procs N] [--tasks N] [--json] [--profile]

orch: N processes wait behind a barrier, then call ``claim_next`` until nothing is left, on a fresh
store holding ``--tasks`` independent ready tasks. Raw baseline, same process count:
  sqlite: a bare ``BEGIN IMMEDIATE; UPDATE tasks ... WHERE id=(SELECT ... LIMIT 1) RETURNING id;
          INSERT INTO history ...; COMMIT`` loop on a minimal schema, same WAL/busy settings;
  file:   bare ``os.open(O_CREAT|O_EXCL)`` claim files, every process trying tasks in the same order;
  postgresql: an autocommit ``UPDATE tasks ... WHERE id=(SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1)
          RETURNING id`` plus a history INSERT in one transaction, on a minimal schema. Each round
          makes its own schemas in ``$ORCH_BENCH_PG`` (default the local ``test`` database) and drops them.
Elapsed time runs from the barrier's release to the last process done (CLOCK_MONOTONIC is
system-wide on Linux, so stamps from different processes compare). Double claims are counted
from the store's history and tasks afterwards. With ``--json`` the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import statistics
import cProfile
import io
import json
import multiprocessing as mp
import os
import pstats
import queue
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from coordstore import open_store
from coordstore.clock import wall_clock_ms
from coordstore.models import Run, Task, TaskGraph

DEFAULT_PROCS = {"sqlite": 16, "file": 8, "postgresql": 16}
TARGETS = {"sqlite": ("ratio", 0.5), "file": ("claims_per_s", 500.0), "postgresql": ("ratio", 0.5)}
PG_BASE = os.environ.get("ORCH_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
RUN = "bench"
# same settings as the sqlite backend, so the baseline differs only in what orch adds
BUSY_TIMEOUT_S = 60.0
POLL_S = 0.5  # how often the parent checks for crashed workers while waiting
CTX = mp.get_context("fork")  # children open their own store/connection after the fork


def pg_schema(base: Path) -> str:
    """This run's schema for a round's directory (unique per bench process and round)."""
    return f"bench_{os.getpid()}_{base.parent.name}_{base.name}"


def store_url(backend: str, base: Path) -> str:
    if backend == "postgresql":
        return f"{PG_BASE}?schema={pg_schema(base)}"
    return f"file://{base / 'store'}" if backend == "file" else f"sqlite://{base / 'orch.db'}"


def drop_pg(base: Path) -> None:
    import psycopg

    with psycopg.connect(PG_BASE, autocommit=True) as c:
        c.execute(f'DROP SCHEMA IF EXISTS "{pg_schema(base)}" CASCADE')


# ---------------------------------------------------------------------------- orch workers
def orch_worker(url: str, agent: str, profile_to: str | None, barrier, out) -> None:
    prof = cProfile.Profile() if profile_to else None
    with open_store(url) as store:
        barrier.wait()
        t0 = time.monotonic()
        if prof:
            prof.enable()
        won = calls = 0
        while True:
            calls += 1
            if store.claim_next(RUN, agent) is not None:
                won += 1
            elif not store.ready_tasks(RUN):  # a None can be a lost race; stop when nothing is left
                break
        if prof:
            prof.disable()
            prof.dump_stats(profile_to)
        out.put((t0, time.monotonic(), won, calls))


def run_procs(target, args_of, procs: int) -> list[tuple]:
    """Start ``procs`` workers behind one barrier; their (t0, t1, won, calls) tuples."""
    barrier, out = CTX.Barrier(procs), CTX.Queue()
    ps = [CTX.Process(target=target, args=(*args_of(i), barrier, out)) for i in range(procs)]
    for p in ps:
        p.start()
    results = []
    try:
        while len(results) < procs:
            try:
                results.append(out.get(timeout=POLL_S))
            except queue.Empty:
                dead = [p.exitcode for p in ps if p.exitcode not in (None, 0)]
                if dead:  # a crashed worker never reports: stop instead of waiting forever
                    raise SystemExit(f"claims bench: a worker exited with code {dead[0]}")
    finally:
        for p in ps:
            if len(results) < procs and p.is_alive():
                p.kill()
            p.join()
    return results


def measure_orch(backend: str, base: Path, procs: int, tasks: int, profile: bool) -> dict:
    url = store_url(backend, base)
    ids = [f"t{i:06d}" for i in range(tasks)]
    with open_store(url) as s:
        s.create_run(Run(id=RUN))
        s.add_graph(RUN, TaskGraph(tasks=[Task(id=t) for t in ids]))
    prof_path = str(base / "worker0.prof") if profile else None
    try:
        res = run_procs(orch_worker, lambda i: (url, f"w{i:02d}", prof_path if i == 0 else None), procs)
        elapsed = max(r[1] for r in res) - min(r[0] for r in res)
        with open_store(url) as s:
            hist = s.history(RUN)
            final = s.list_tasks(RUN)
    finally:
        if backend == "postgresql":
            drop_pg(base)
    claims = Counter(r.to_state for r in hist if r.entity == "claim")
    won_per_task = Counter(r.entity_id for r in hist if r.entity == "claim" and r.to_state == "won")
    assigned_per_task = Counter(r.entity_id for r in hist if r.entity == "task" and r.to_state == "assigned")
    double = sum(n - 1 for n in won_per_task.values() if n > 1) + sum(n - 1 for n in assigned_per_task.values() if n > 1)
    double += sum(1 for t in final if t.attempt > 1)
    return {
        "elapsed_s": elapsed,
        "claims": sum(r[2] for r in res),
        "calls": sum(r[3] for r in res),
        "rows": dict(claims),
        "double_claims": double,
        "unclaimed": sum(1 for t in final if t.status != "assigned"),
        "profile": prof_path,
    }


# ---------------------------------------------------------------------------- raw sqlite
RAW_DDL = [
    "CREATE TABLE tasks (id TEXT PRIMARY KEY, ord INTEGER NOT NULL, priority INTEGER NOT NULL, "
    "status TEXT NOT NULL, owner TEXT, attempt INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX tasks_ready ON tasks(priority DESC, ord) WHERE status='pending'",
    "CREATE TABLE history (seq INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, entity_id TEXT NOT NULL, "
    "to_state TEXT NOT NULL, agent TEXT)",
]
RAW_CLAIM = (
    "UPDATE tasks SET status='assigned', owner=?, attempt=attempt+1 WHERE id=("
    "SELECT id FROM tasks WHERE status='pending' ORDER BY priority DESC, ord LIMIT 1) RETURNING id"
)


def raw_connect(path: str) -> sqlite3.Connection:
    c = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=NORMAL")
    return c


def raw_sqlite_worker(path: str, agent: str, barrier, out) -> None:
    c = raw_connect(path)
    barrier.wait()
    t0, won = time.monotonic(), 0
    while True:
        c.execute("BEGIN IMMEDIATE")
        row = c.execute(RAW_CLAIM, (agent,)).fetchone()
        if row is not None:
            c.execute("INSERT INTO history (ts_ms, entity_id, to_state, agent) VALUES (?, ?, 'assigned', ?)",
                      (wall_clock_ms(), row[0], agent))
        c.execute("COMMIT")
        if row is None:
            break
        won += 1
    c.close()
    out.put((t0, time.monotonic(), won, won + 1))


def measure_raw_sqlite(base: Path, procs: int, tasks: int) -> dict:
    path = str(base / "raw.db")
    c = raw_connect(path)
    for stmt in RAW_DDL:
        c.execute(stmt)
    c.execute("BEGIN")
    c.executemany("INSERT INTO tasks (id, ord, priority, status) VALUES (?, ?, 5, 'pending')",
                  ((f"t{i:06d}", i) for i in range(tasks)))
    c.execute("COMMIT")
    res = run_procs(raw_sqlite_worker, lambda i: (path, f"w{i:02d}"), procs)
    per_task = Counter(r[0] for r in c.execute("SELECT entity_id FROM history"))
    c.close()
    return {"elapsed_s": max(r[1] for r in res) - min(r[0] for r in res), "claims": sum(r[2] for r in res),
            "double_claims": sum(n - 1 for n in per_task.values() if n > 1)}


# ---------------------------------------------------------------------------- raw files
def raw_file_worker(claims_dir: str, tasks: int, agent: str, barrier, out) -> None:
    barrier.wait()
    t0, won = time.monotonic(), 0
    payload = agent.encode()
    for i in range(tasks):  # everyone wants the same best task first, like claim_next
        try:
            fd = os.open(os.path.join(claims_dir, f"t{i:06d}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        os.write(fd, payload)
        os.close(fd)
        won += 1
    out.put((t0, time.monotonic(), won, tasks))


def measure_raw_file(base: Path, procs: int, tasks: int) -> dict:
    claims_dir = base / "raw-claims"
    claims_dir.mkdir()
    res = run_procs(raw_file_worker, lambda i: (str(claims_dir), tasks, f"w{i:02d}"), procs)
    won = sum(r[2] for r in res)
    return {"elapsed_s": max(r[1] for r in res) - min(r[0] for r in res), "claims": won,
            "double_claims": won - len(os.listdir(claims_dir))}


# ---------------------------------------------------------------------------- raw postgresql
RAW_PG_DDL = [
    "CREATE TABLE tasks (id TEXT PRIMARY KEY, ord BIGINT NOT NULL, priority BIGINT NOT NULL, "
    "status TEXT NOT NULL, owner TEXT, attempt BIGINT NOT NULL DEFAULT 0)",
    "CREATE INDEX tasks_ready ON tasks(priority DESC, ord) WHERE status='pending'",
    "CREATE TABLE history (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, ts_ms BIGINT NOT NULL, "
    "entity_id TEXT NOT NULL, to_state TEXT NOT NULL, agent TEXT)",
]
RAW_PG_CLAIM = (
    "UPDATE tasks SET status='assigned', owner=%s, attempt=attempt+1 WHERE id=(SELECT id FROM tasks "
    "WHERE status='pending' ORDER BY priority DESC, ord LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id"
)


def raw_pg_worker(schema: str, agent: str, barrier, out) -> None:
    import psycopg

    with psycopg.connect(PG_BASE, autocommit=True) as c:
        c.execute(f'SET search_path TO "{schema}"')
        barrier.wait()
        t0, won, calls = time.monotonic(), 0, 0
        while True:
            calls += 1
            with c.transaction():
                row = c.execute(RAW_PG_CLAIM, (agent,)).fetchone()
                if row is not None:
                    c.execute("INSERT INTO history (ts_ms, entity_id, to_state, agent) VALUES (%s, %s, 'won', %s)",
                              (wall_clock_ms(), row[0], agent))
            if row is None:
                break  # SKIP LOCKED: None means every pending row is taken or being taken
            won += 1
        out.put((t0, time.monotonic(), won, calls))


def measure_raw_pg(base: Path, procs: int, tasks: int) -> dict:
    import psycopg

    schema = pg_schema(base)
    with psycopg.connect(PG_BASE, autocommit=True) as c:
        c.execute(f'CREATE SCHEMA "{schema}"')
        c.execute(f'SET search_path TO "{schema}"')
        for stmt in RAW_PG_DDL:
            c.execute(stmt)
        c.cursor().executemany("INSERT INTO tasks (id, ord, priority, status) VALUES (%s, %s, 0, 'pending')",
                               [(f"t{i:06d}", i) for i in range(tasks)])
    try:
        res = run_procs(raw_pg_worker, lambda i: (schema, f"w{i:02d}"), procs)
        with psycopg.connect(PG_BASE, autocommit=True) as c:
            won = c.execute(f'SELECT entity_id, count(*) FROM "{schema}".history GROUP BY 1').fetchall()
    finally:
        drop_pg(base)
    return {"elapsed_s": max(r[1] for r in res) - min(r[0] for r in res), "claims": sum(r[2] for r in res),
            "double_claims": sum(n - 1 for _, n in won if n > 1)}


# ---------------------------------------------------------------------------- report
def print_profile(path: str, top: int = 15) -> None:
    buf = io.StringIO()
    pstats.Stats(path, stream=buf).strip_dirs().sort_stats("cumulative").print_stats(top)
    print("profile of worker w00 (cumulative):")
    print(buf.getvalue().rstrip())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=sorted(DEFAULT_PROCS), default="sqlite")
    ap.add_argument("--procs", type=int, default=None, help="processes (default: sqlite/postgresql 16, file 8)")
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    ap.add_argument("--profile", action="store_true", help="cProfile worker 0 of the orch run and print the top")
    ap.add_argument("--rounds", type=int, default=5,
                    help="alternating orch/raw rounds; rates are medians (16 processes on 2 cores swing a lot)")
    a = ap.parse_args(argv)
    if a.tasks < 1 or (a.procs is not None and a.procs < 1):
        ap.error("--tasks and --procs must be at least 1")
    procs = a.procs or DEFAULT_PROCS[a.backend]

    with tempfile.TemporaryDirectory(prefix="orch-bench-claims-") as tmp:
        orch_rates, raw_rates, double, raw_double, unclaimed = [], [], 0, 0, 0
        measure_raw = {"sqlite": measure_raw_sqlite, "file": measure_raw_file, "postgresql": measure_raw_pg}[a.backend]
        for r in range(max(1, a.rounds)):
            base = Path(tmp) / f"round{r}"
            (base / "orch").mkdir(parents=True)
            (base / "raw").mkdir()
            # alternate which goes first, so neither always meets a cold or a warm machine
            if r % 2:
                raw = measure_raw(base / "raw", procs, a.tasks)
                orch = measure_orch(a.backend, base / "orch", procs, a.tasks, a.profile and r == 0)
            else:
                orch = measure_orch(a.backend, base / "orch", procs, a.tasks, a.profile and r == 0)
                raw = measure_raw(base / "raw", procs, a.tasks)
            orch_rates.append(orch["claims"] / orch["elapsed_s"])
            raw_rates.append(raw["claims"] / raw["elapsed_s"])
            double += orch["double_claims"]
            raw_double += raw["double_claims"]
            unclaimed += orch["unclaimed"]
            print(f"round {r + 1}: orch {orch_rates[-1]:,.0f} claims/s, raw {raw_rates[-1]:,.0f} claims/s")
            if r == 0 and orch["profile"]:
                print_profile(orch["profile"])
        orch_rate, raw_rate = statistics.median(orch_rates), statistics.median(raw_rates)
        result = {
            "backend": a.backend, "procs": procs, "tasks": a.tasks, "rounds": len(orch_rates),
            "claims_per_s": round(orch_rate, 1), "raw_claims_per_s": round(raw_rate, 1),
            "ratio": round(orch_rate / raw_rate, 3), "double_claims": double,
            "unclaimed": unclaimed, "raw_double_claims": raw_double,
            "claim_rows": orch["rows"], "claim_calls": orch["calls"],
        }
        rows = ", ".join(f"{k} {v}" for k, v in sorted(orch["rows"].items()))
        print(f"claims bench: backend {a.backend}, {procs} processes, {a.tasks} ready tasks")
        print(f"orch claim_next: median {orch_rate:,.0f} claims/s over {len(orch_rates)} rounds "
              f"(last round: {orch['calls']} calls; claim rows: {rows})")
        print(f"raw baseline:    median {raw_rate:,.0f} claims/s")
        key, want = TARGETS[a.backend]
        got = result[key]
        verdict = "meets" if got >= want else "MISSES"
        print(f"ratio orch/raw:  {result['ratio']:.3f}   target {key} >= {want}: {verdict} ({got})")
        print(f"double claims:   {double} (raw {raw_double}); unclaimed: {unclaimed}")
    if a.json:
        print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
