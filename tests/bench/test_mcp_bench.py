"""bench/mcp_calls.py runs end to end at tiny sizes: a prepared run, its coordination server, HTTP
clients in processes, the direct baseline; its lines and its JSON agree with the store it checked."""

from __future__ import annotations

import json

import pytest

from cliruns import run_bench

def bench(tmp_path, *args: str):
    return run_bench(tmp_path, "mcp_calls.py", *args, timeout=120)


def test_mcp_bench_at_tiny_sizes(tmp_path):
    p = bench(tmp_path, "--tasks", "12", "--agents", "3", "--calls", "5", "--json")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[1].startswith("mcp: call p50 ") and "(target p99 <= 10 ms: " in lines[1]
    assert lines[3].startswith("mcp: claim+complete cycles/s 3 agents over HTTP ") and " vs direct store " in lines[3]
    r = json.loads(lines[-1])
    assert r["double_or_missing"] == 0 and r["http_lost"] == r["lost_claim_rows"]
    assert r["ratio"] == pytest.approx(r["http_claims_per_s"] / r["direct_claims_per_s"], rel=1e-2)  # rates rounded
    assert r["ratio"] > 0
    for shape in ("get", "list_tasks"):
        assert 0 < r[shape]["p50_ms"] <= r[shape]["p99_ms"]
        assert 0 < r[shape]["server_p50_ms"] <= r[shape]["server_p99_ms"]  # read back from the tool rows
    assert f"ratio {r['ratio']:.3f}" in lines[3]


def test_mcp_bench_refuses_bad_sizes_in_one_line(tmp_path):
    p = bench(tmp_path, "--tasks", "2", "--agents", "3")
    assert p.returncode == 2 and "--tasks at least --agents" in p.stderr.strip().splitlines()[-1]
