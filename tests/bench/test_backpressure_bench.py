"""bench/backpressure.py runs end to end at a tiny size: per-agent and shared back-pressure on the
same seed, real runs through orch's run loop; its JSON agrees with itself."""

from __future__ import annotations

import json

import pytest

from cliruns import run_bench

def bench(tmp_path, *args: str):
    return run_bench(tmp_path, "backpressure.py", *args)


def test_backpressure_bench_at_a_tiny_size(tmp_path):
    p = bench(tmp_path, "--agents", "3", "--capacity", "1", "--tasks", "4", "--seeds", "5", "--json")
    assert p.returncode == 0, p.stderr
    *runs, total = [json.loads(line) for line in p.stdout.splitlines()]
    assert [(r["mode"], r["seed"], r["status"], r["completed"]) for r in runs] == [("agent", 5, "finished", 4), ("shared", 5, "finished", 4)]
    by_mode = {r["mode"]: r for r in runs}
    assert by_mode["agent"]["rate_limited"] > 0 and by_mode["agent"]["halvings"] == 0  # 3 agents, room for 1
    assert (total["per_agent_429s"], total["shared_429s"]) == (by_mode["agent"]["rate_limited"], by_mode["shared"]["rate_limited"])
    assert total["ratio"] == pytest.approx(total["shared_429s"] / total["per_agent_429s"])


def test_backpressure_bench_refuses_bad_arguments_in_one_line(tmp_path):
    p = bench(tmp_path, "--agents", "1")
    assert p.returncode != 0 and p.stderr.strip().splitlines()[-1].startswith("--agents '1'")
    p = bench(tmp_path, "--seeds", "x")
    assert p.returncode != 0 and p.stderr.strip().splitlines()[-1].startswith("--seeds")
