"""bench/scale.py runs end to end at a tiny size: a real run of sim agents through orch's run loop,
the raw git baseline and the runners' start-up; its JSON agrees with itself and with the run."""

from __future__ import annotations

import json

import pytest

from cliruns import run_bench

def bench(tmp_path, *args: str):
    return run_bench(tmp_path, "scale.py", *args)


def test_scale_bench_at_a_tiny_size(tmp_path):
    p = bench(tmp_path, "--agents", "2", "--tasks", "8", "--startup", "2", "--json")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    cell, start = json.loads(lines[1]), json.loads(lines[2])
    assert (cell["status"], cell["completed"], cell["doubles"], cell["respawns"]) == ("finished", 8, 0, 0)
    assert cell["wall_ms"] >= cell["lower_bound_ms"] > 0
    assert cell["all_cpu_s_per_task"] > cell["orch_cpu_s_per_task"] > 0 and cell["raw_cpu_s_per_task"] > 0
    assert cell["ratio"] == pytest.approx(cell["all_cpu_s_per_task"] / cell["raw_cpu_s_per_task"], rel=2e-2)
    assert cell["events"] > 8 and cell["lag_p99_ms"] >= 0 and cell["orch_rss_mb"] > 0
    assert start["runners"] == 2 and start["exit_codes"] == [0] and start["cpu_per_runner_s"] > 0


def test_scale_bench_refuses_bad_arguments_in_one_line(tmp_path):
    p = bench(tmp_path, "--agents", "0")
    assert p.returncode != 0 and p.stderr.strip().splitlines()[-1].startswith("--agents '0'")
    p = bench(tmp_path, "--backend", "mysql")
    assert p.returncode != 0 and p.stderr.strip().splitlines()[-1].startswith("--backend 'mysql'")
