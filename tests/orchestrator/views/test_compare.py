"""Comparison statistics with answers worked out by hand, and the run-directory discovery."""

from __future__ import annotations

import json

import pytest

from coordstore.errors import InputError
from orchestrator.views.compare import a12, compare, holm, markdown, summarize


def test_a12_by_hand():
    assert a12([3, 4], [1, 2]) == 1.0
    assert a12([1, 2], [3, 4]) == 0.0
    # pairs: (1,1) tie .5, (1,2) 0, (2,1) 1, (2,2) tie .5 -> 2/4
    assert a12([1, 2], [1, 2]) == 0.5


def test_holm_by_hand():
    # sorted 0.01, 0.02, 0.04 -> x3, x2, x1 = 0.03, 0.04, 0.04 (monotone)
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # 2 x 0.8 caps at 1, monotone after


def test_summarize_ci():
    s = summarize([10.0, 12.0, 14.0])
    assert s["mean"] == 12 and s["median"] == 12 and s["sd"] == pytest.approx(2.0)
    # t(0.975, 2) = 4.3027; half width = 4.3027 * 2 / sqrt(3)
    assert s["ci95"][1] - 12 == pytest.approx(4.3027 * 2 / 3 ** 0.5, rel=1e-3)


def _fake_run(root, variant, policy, i, wall, agents=4):
    d = root / variant / f"{variant}-r{i}"
    d.mkdir(parents=True)
    spec = {"variant": variant, "policy": policy, "agents": [{"role": "worker"}] * agents}
    (d / "run.json").write_text(json.dumps(spec))
    (d / "metrics.json").write_text(json.dumps({"wall_clock_ms": wall, "efficiency": 1000 / wall}))
    return d


def test_compare_variants_and_speedup(tmp_path):
    for i, w in enumerate([1000, 1100, 1050], 1):
        _fake_run(tmp_path, "pull-4", "pull", i, w)
    for i, w in enumerate([2000, 2100, 1900], 1):
        _fake_run(tmp_path, "push-4", "push", i, w)
    for i, w in enumerate([4000, 4100, 3900], 1):
        _fake_run(tmp_path, "solo-1", "solo", i, w, agents=1)
    r = compare([tmp_path], metrics=("wall_clock_ms", "efficiency"))
    assert r["variants"]["pull-4"]["metrics"]["wall_clock_ms"]["n"] == 3
    pair = next(p for p in r["pairs"] if p["metric"] == "wall_clock_ms" and {p["a"], p["b"]} == {"pull-4", "push-4"})
    assert pair["a12"] in (0.0, 1.0)  # complete separation
    assert pair["p_holm"] >= pair["u_p"]
    assert r["baseline"] == "solo-1"
    assert r["speedup"]["pull-4"]["speedup"] == pytest.approx(4000 / 1050)
    assert "pull-4" in markdown(r, ("wall_clock_ms",))


def test_compare_rejects_dirs_without_runs(tmp_path):
    with pytest.raises(InputError, match="no finished runs"):
        compare([tmp_path])
