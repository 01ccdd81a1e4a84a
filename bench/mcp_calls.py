"""The coordination tools over HTTP: call latency and claims per second, against the direct store.

    python bench/mcp_calls.py [--tasks 400] [--agents 16] [--calls 300] [--json]

One run is prepared as `orch run` prepares it (store, demo repository, one worktree per agent), on
a wide graph of ``--tasks`` independent tasks and ``--agents`` workers, and its coordination server
is started as orch starts it (``python -m orchestrator.coordination --run-dir DIR --port 0``).

(a) Latency: one client (the official SDK's ``Client`` over streamable HTTP, its agent's bearer
    token) calls ``get(task)`` and ``list_tasks(owner=<itself>, status=working)`` (a small
    filter) ``--calls`` times each after a warm-up; round trips are timed at the client; the
    server-side ``latency_ms`` of the same calls is read back from their tool rows (so is the claim
    calls' of (b): what the tool itself costs, apart from HTTP and the SDK).
(b) Claims over HTTP: ``--agents`` client processes, each with its own token, wait behind a
    barrier, then claim by name and complete what they won (an agent works one task at a time:
    its worktree is one), so a cycle is a claim and an ``update(status=completed)``. Agent i's share is every ``--agents``-th task from i: a claim is
    one call, as for an agent that knows what it wants. Once its share is done an agent goes on as
    a swarm worker: ``list_tasks(ready=true)``, claim one of them (seeded choice), look again,
    until a look finds nothing; so contention happens where a slow agent's share is taken by fast
    ones. A lost claim is a tool error and costs its call. Completing
    commits the (unchanged) worktree and merges it, as for every agent: git's time is in the cycle.
(c) Direct baseline in the same invocation: a twin run with the same graph in the same store,
    ``--agents`` processes behind a barrier calling ``store.claim_next``, ``start`` and ``complete``
    until nothing is left. Also printed, not in the ratio: the store work of one tool cycle without
    MCP or git (``claim`` + ``start`` + ``complete`` + the tool row), so the shares are visible.

Elapsed time runs from the barrier's release to the last process done (CLOCK_MONOTONIC is
system-wide on Linux). Afterwards the store is checked: every task claimed exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import queue
import random
import select
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import asynccontextmanager
from pathlib import Path

from coordstore import open_store
from coordstore.models import Run, Task, TaskGraph, Transition

from agents.toolclient import parse_result
from orchestrator.rundir import AgentSpec, RunPaths, RunSpec
from orchestrator.runs.prepare import prepare_run
from orchestrator.views.coordmetrics import percentile

RUN, TWIN = "bench-mcp", "bench-direct"
TARGET_P99_MS = 10.0
WARMUP_CALLS = 30
START_TIMEOUT_S = 60.0  # the server prints `listening <url>` once bound
JOIN_TIMEOUT_S = 120.0
CTX = mp.get_context("fork")  # children inherit the imports; none runs before the parent's event loop


# ---------------------------------------------------------------------------------- the run
def prepare(base: Path, tasks: int, agents: int) -> tuple[RunPaths, RunSpec, list[str]]:
    ids = [f"t{i:04d}" for i in range(tasks)]
    graph = TaskGraph(tasks=[Task(id=t, title=f"task {t}") for t in ids])
    paths = RunPaths(base / "run")
    spec = RunSpec(
        run_id=RUN, experiment_id="bench", variant="swarm-bench", policy="pull", coordination="agents",
        agents=[AgentSpec(id=f"w{i:02d}", role="worker") for i in range(1, agents + 1)],
        template="bench-wide", repo=str(paths.demo_repo), base="main", store_url=f"sqlite://{paths.db}",
        seed=1, time_scale=0.001, timeout_s=600,
    )
    prepare_run(spec, paths, graph, None, demo=True)
    with open_store(spec.store_url) as s:  # the twin run for the direct baseline, in the same store
        s.create_run(Run(id=TWIN))
        s.add_graph(TWIN, graph)
    return paths, spec, ids


def start_server(paths: RunPaths) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.coordination", "--run-dir", str(paths.root), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT_S)
    line = proc.stdout.readline().strip() if ready else ""
    if not line.startswith("listening "):
        proc.kill()
        raise SystemExit(f"mcp bench: the coordination server did not start (first line {line!r}): "
                         f"{proc.stderr.read().strip()[-2000:]}")
    return proc, line.split(" ", 1)[1]


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def read_tokens(paths: RunPaths) -> dict[str, str]:
    return json.loads((paths.root / "coordination.json").read_text())["tokens"]


@asynccontextmanager
async def client(url: str, token: str):
    # lazy: the SDK only where a client runs
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60.0) as http:
        async with Client(streamable_http_client(url, http_client=http)) as c:
            yield c


# ---------------------------------------------------------------------------------- (a) latency
async def time_calls(url: str, token: str, agent: str, ids: list[str], calls: int) -> dict[str, list[float]]:
    shapes = {"get": lambda i: {"task": ids[i % len(ids)]},
              "list_tasks": lambda i: {"owner": agent, "status": "working"}}
    out: dict[str, list[float]] = {}
    async with client(url, token) as c:
        for name, args in shapes.items():
            for i in range(WARMUP_CALLS):
                await c.call_tool(name, args(i))
            times = []
            for i in range(calls):
                t0 = time.perf_counter()
                r = await c.call_tool(name, args(i))
                times.append((time.perf_counter() - t0) * 1000)
                if r.is_error:
                    raise SystemExit(f"mcp bench: {name} failed: {r.content}")
            out[name] = times
    return out


# ---------------------------------------------------------------------------------- (b) HTTP claims
async def claim_share(url: str, token: str, share: list[str], seed: int, barrier) -> tuple[float, float, int, int, int]:
    rng = random.Random(seed)
    async with client(url, token) as c:
        await c.call_tool("list_tasks", {"owner": "nobody"})  # the session is up before the clock starts
        barrier.wait()
        t0, won, lost, looks = time.monotonic(), 0, 0, 0
        for tid in share:
            r = await c.call_tool("claim", {"task": tid})
            won, lost = won + (not r.is_error), lost + bool(r.is_error)
            await complete(c, tid, r)
        while True:  # then as a swarm worker: look, claim one of what is ready, look again
            ready = parse_result(await c.call_tool("list_tasks", {"ready": True}))
            looks += 1
            if not ready:
                break
            tid = rng.choice(ready)["id"]
            r = await c.call_tool("claim", {"task": tid})
            won, lost = won + (not r.is_error), lost + bool(r.is_error)
            await complete(c, tid, r)
        return t0, time.monotonic(), won, lost, looks


async def complete(c, tid: str, claimed) -> None:
    """Complete a task this agent won (a lost claim has nothing to complete)."""
    if not claimed.is_error:
        done = await c.call_tool("update", {"task": tid, "status": "completed"})
        if done.is_error:
            raise SystemExit(f"mcp bench: completing {tid} failed: {done.content}")


def http_claimer(url, token, share, seed, barrier, out) -> None:
    out.put(asyncio.run(claim_share(url, token, share, seed, barrier)))


# ---------------------------------------------------------------------------------- (c) direct
def direct_claimer(url, agent, barrier, out) -> None:
    with open_store(url) as store:
        barrier.wait()
        t0, won = time.monotonic(), 0
        while True:
            t = store.claim_next(TWIN, agent)
            if t is not None:
                store.start(TWIN, t.id, agent, t.attempt)
                store.complete(TWIN, t.id, agent, t.attempt)
                won += 1
            elif not store.ready_tasks(TWIN):  # a None can be a lost race: stop when nothing is left
                break
        out.put((t0, time.monotonic(), won, 0, 0))


def store_only_claimer(url, run, share, agent, barrier, out) -> None:
    """What the server does in the store for one cycle, without MCP or git: claim, start, the tool
    row, complete."""
    with open_store(url) as store:
        barrier.wait()
        t0, won, lost = time.monotonic(), 0, 0
        for tid in share:
            c0 = time.perf_counter()
            t = store.claim(run, tid, agent)
            if t is not None:
                store.start(run, tid, agent, t.attempt)
                store.complete(run, tid, agent, t.attempt)
            store.record(Transition(run_id=run, ts_ms=store.clock(), entity="tool", entity_id="claim",
                                    to_state="ok" if t else "lost", agent=agent,
                                    data={"latency_ms": (time.perf_counter() - c0) * 1000, "task": tid}))
            won, lost = won + (t is not None), lost + (t is None)
        out.put((t0, time.monotonic(), won, lost, 0))


def run_procs(target, args_of, n: int) -> list[tuple]:
    barrier, out = CTX.Barrier(n), CTX.Queue()
    ps = [CTX.Process(target=target, args=(*args_of(i), barrier, out)) for i in range(n)]
    for p in ps:
        p.start()
    results, deadline = [], time.monotonic() + JOIN_TIMEOUT_S
    try:
        while len(results) < n:
            try:
                results.append(out.get(timeout=0.5))
            except queue.Empty:
                dead = [p.exitcode for p in ps if p.exitcode not in (None, 0)]
                if dead or time.monotonic() > deadline:
                    raise SystemExit(f"mcp bench: a claimer {'exited with code ' + str(dead[0]) if dead else 'hung'}")
    finally:
        for p in ps:
            if len(results) < n and p.is_alive():
                p.kill()
            p.join()
    return results


def rate(results: list[tuple]) -> tuple[float, float, int, int]:
    elapsed = max(r[1] for r in results) - min(r[0] for r in results)
    won, lost = sum(r[2] for r in results), sum(r[3] for r in results)
    return won / elapsed, elapsed, won, lost


def claimed_once(url: str, run: str, ids: list[str]) -> tuple[int, int]:
    """(tasks claimed more than once or never, store rows of lost claims) from the store."""
    with open_store(url) as s:
        hist = s.history(run, entity="claim")
        tasks = s.list_tasks(run)
    won = Counter(r.entity_id for r in hist if r.to_state == "won")
    bad = sum(1 for t in ids if won[t] != 1) + sum(1 for t in tasks if t.attempt != 1)
    return bad, sum(1 for r in hist if r.to_state == "lost")


# ---------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=400)
    ap.add_argument("--agents", type=int, default=16)
    ap.add_argument("--calls", type=int, default=300, help="timed calls per shape in (a)")
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    a = ap.parse_args(argv)
    if a.tasks < a.agents or a.agents < 1 or a.calls < 1:
        ap.error("--agents and --calls must be at least 1, --tasks at least --agents")
    with tempfile.TemporaryDirectory(prefix="orch-bench-mcp-") as tmp:
        paths, spec, ids = prepare(Path(tmp), a.tasks, a.agents)
        url_store = spec.store_url
        agents = [x.id for x in spec.agents]
        direct = rate(run_procs(direct_claimer, lambda i: (url_store, agents[i]), a.agents))
        server, url = start_server(paths)
        try:
            tokens = read_tokens(paths)
            shares = [ids[i::a.agents] for i in range(a.agents)]
            http = rate(run_procs(http_claimer, lambda i: (url, tokens[agents[i]], shares[i], i), a.agents))
            lat = asyncio.run(time_calls(url, tokens[agents[0]], agents[0], ids, a.calls))
        finally:
            stop_server(server)
        with open_store(url_store) as s:  # a third twin: the store work of the tool path, no MCP
            s.create_run(Run(id="bench-store"))
            s.add_graph("bench-store", TaskGraph(tasks=[Task(id=t) for t in ids]))
        store_only = rate(run_procs(store_only_claimer, lambda i: (url_store, "bench-store", shares[i], agents[i]), a.agents))
        bad_http, lost_rows = claimed_once(url_store, RUN, ids)
        bad_direct, _ = claimed_once(url_store, TWIN, ids)
        with open_store(url_store) as s:
            rows = [r for r in s.history(RUN, entity="tool") if r.entity_id in lat or r.entity_id == "claim"]
    res = {"tasks": a.tasks, "agents": a.agents, "calls": a.calls}
    for n, times in lat.items():
        own = [float(r.data["latency_ms"]) for r in rows if r.entity_id == n][-a.calls:]  # (a)'s, the last ones
        res[n] = {"p50_ms": round(percentile(times, 50), 3), "p99_ms": round(percentile(times, 99), 3),
                  "server_p50_ms": round(percentile(own, 50), 3) if own else None,
                  "server_p99_ms": round(percentile(own, 99), 3) if own else None}
    claim_ms = [float(r.data["latency_ms"]) for r in rows if r.entity_id == "claim"]
    res["claim_server_p50_ms"], res["claim_server_p99_ms"] = round(percentile(claim_ms, 50), 3), round(percentile(claim_ms, 99), 3)
    res.update(http_claims_per_s=round(http[0], 1), http_lost=http[3], direct_claims_per_s=round(direct[0], 1),
               store_path_claims_per_s=round(store_only[0], 1), ratio=round(http[0] / direct[0], 4),
               double_or_missing=bad_http + bad_direct, lost_claim_rows=lost_rows)
    g, lt = res["get"], res["list_tasks"]
    verdict = "meets" if g["p99_ms"] <= TARGET_P99_MS else "MISSES"
    print(f"mcp: {a.tasks} independent tasks, {a.agents} agents, {a.calls} timed calls per shape")
    print(f"mcp: call p50 {g['p50_ms']:.2f} ms p99 {g['p99_ms']:.2f} ms (target p99 <= {TARGET_P99_MS:g} ms: {verdict}) "
          f"[get, client round trip; server side p50 {g['server_p50_ms']} ms p99 {g['server_p99_ms']} ms]")
    print(f"mcp: list_tasks(owner, status) p50 {lt['p50_ms']:.2f} ms p99 {lt['p99_ms']:.2f} ms "
          f"[server side p50 {lt['server_p50_ms']} ms p99 {lt['server_p99_ms']} ms]")
    print(f"mcp: claim+complete cycles/s {a.agents} agents over HTTP {http[0]:,.0f} vs direct store {direct[0]:,.0f}: "
          f"ratio {res['ratio']:.3f}")
    print(f"mcp: a claim call's server side (its tool rows) p50 {res['claim_server_p50_ms']} ms "
          f"p99 {res['claim_server_p99_ms']} ms with {a.agents} agents calling")
    print(f"mcp: HTTP claims {http[2]} won, {http[3]} lost ({lost_rows} lost claim rows in the store) in {http[1]:.2f} s; "
          f"the tool's store work alone (claim + start + complete + row, no MCP, no git) {store_only[0]:,.0f} cycles/s; "
          f"tasks claimed other than once: {bad_http + bad_direct}")
    if a.json:
        print(json.dumps(res, sort_keys=True))
    return 0 if bad_http + bad_direct == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
