"""Comparison statistics with answers worked out by hand (or by scipy directly), on run
directories written by hand: summaries, deltas against the baseline, Holm, A12, marks, the files."""

from __future__ import annotations

import json
import math

import pytest
from scipy.stats import mannwhitneyu

from coordstore.errors import InputError, UsageError
from handmaderuns import experiment_doc, write_run, write_variant
from orchestrator.views.compare import compare, write_comparison
from orchestrator.views.comparedoc import markdown
from orchestrator.views.stats import a12, holm, mann_whitney_p, summarize

T975_2 = 4.302653  # Student's t, 97.5 %, 2 degrees of freedom (tables)


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
    assert s["ci95"][1] - 12 == pytest.approx(T975_2 * 2 / 3 ** 0.5, rel=1e-6)
    assert summarize([5.0]) == {"n": 1, "mean": 5.0, "sd": 0.0, "median": 5.0, "ci95": None}  # one run: no CI


def test_mann_whitney_is_exact_without_ties_and_agrees_with_scipy():
    assert mann_whitney_p([1, 2, 3], [4, 5, 6]) == pytest.approx(0.1)  # 2 / C(6, 3)
    x, y = [1.0, 2, 2, 5], [2.0, 3, 4, 4]  # ties: the normal approximation, as scipy gives it
    assert mann_whitney_p(x, y) == pytest.approx(mannwhitneyu(x, y, alternative="two-sided", method="asymptotic").pvalue)
    assert mann_whitney_p([3, 3], [3, 3]) == 1.0 and math.isnan(mann_whitney_p([], [1]))


# three variants, three runs each; the experiment file lists them push, pull, hybrid (not alphabetical)
WALLS = {"push": [10, 20, 30], "pull": [40, 50, 60], "hybrid": [15, 25, 35]}


def _three(tmp_path, baseline=None):
    doc = experiment_doc(list(WALLS), baseline=baseline, metrics=[{"name": "wall_clock_ms", "direction": "lower"}])
    for v, walls in WALLS.items():
        write_variant(tmp_path, v, walls, experiment=doc)
    return tmp_path


def test_summaries_deltas_tests_and_holm_by_hand(tmp_path):
    r = compare([_three(tmp_path)])
    assert r["version"] == 1 and r["order"] == ["push", "pull", "hybrid"]
    assert r["baseline"] == "push"  # the first variant in the file's order
    assert [m["name"] for m in r["metrics"]] == ["wall_clock_ms"]  # the file names only this one
    s = r["variants"]["pull"]["metrics"]["wall_clock_ms"]
    half = T975_2 * 10 / 3 ** 0.5
    assert (s["n"], s["mean"], s["median"], s["sd"]) == (3, 50, 50, 10)
    assert s["ci95"] == pytest.approx([50 - half, 50 + half], rel=1e-6)
    vs = r["metrics"][0]["vs_baseline"]
    assert vs["pull"]["delta"] == 30 and vs["pull"]["delta_pct"] == pytest.approx(150.0)
    assert vs["hybrid"]["delta"] == 5 and vs["hybrid"]["delta_pct"] == pytest.approx(25.0)
    # A12 of the variant against the baseline: pull above push in all 9 pairs; hybrid in 1 + 2 + 3 of 9
    assert vs["pull"]["a12"] == 1.0 and vs["hybrid"]["a12"] == pytest.approx(6 / 9)
    # exact p: complete separation 2/C(6,3) = 0.1; U = 6 of 9: P(U >= 6) = 7/20, two-sided 0.7
    assert vs["pull"]["p"] == pytest.approx(0.1) and vs["hybrid"]["p"] == pytest.approx(0.7)
    # Holm over the three pairs of the metric: push-pull 0.1, push-hybrid 0.7, pull-hybrid 0.1 (40 > 35)
    # -> sorted 0.1, 0.1, 0.7 -> 0.3, max(0.3, 0.2) = 0.3, 0.7
    assert vs["pull"]["p_holm"] == pytest.approx(0.3) and vs["hybrid"]["p_holm"] == pytest.approx(0.7)
    assert {p["b"]: p["p_holm"] for p in r["pairs"] if p["a"] == "pull"} == {"hybrid": pytest.approx(0.3)}
    assert vs["pull"]["mark"] == vs["hybrid"]["mark"] == "n.s."  # 0.3 is not below 0.05
    # three runs each can never reach 0.05 after Holm: 0.1 before, 0.3 after
    assert [(d["smallest_p"], d["smallest_p_holm"], d["reachable"]) for d in r["design"]] == [(pytest.approx(0.1), pytest.approx(0.3), False)] * 3


def test_baseline_from_the_file_and_from_the_flag(tmp_path):
    _three(tmp_path, baseline="hybrid")
    assert compare([tmp_path])["baseline"] == "hybrid"
    r = compare([tmp_path], baseline="pull")
    assert r["baseline"] == "pull" and r["metrics"][0]["vs_baseline"]["push"]["delta"] == -30
    with pytest.raises(UsageError, match="--baseline 'relay': no runs of that variant; compared: push, pull, hybrid"):
        compare([tmp_path], baseline="relay")


def test_marks_follow_the_direction_and_rows_go_best_first(tmp_path):
    doc = experiment_doc(["slow", "fast"], metrics=[{"name": "wall_clock_ms", "direction": "lower"},
                                                     {"name": "efficiency", "direction": "higher"}])
    write_variant(tmp_path, "slow", [400, 410, 420, 430], experiment=doc)
    write_variant(tmp_path, "fast", [100, 110, 120, 130], experiment=doc)
    r = compare([tmp_path])
    marks = {m["name"]: m["vs_baseline"]["fast"] for m in r["metrics"]}
    # one pair: Holm over 1; complete separation with 4 and 4 runs: 2 / C(8, 4)
    assert marks["wall_clock_ms"]["p_holm"] == pytest.approx(2 / 70)
    assert marks["wall_clock_ms"]["mark"] == "better" and marks["efficiency"]["mark"] == "better"
    flipped = compare([tmp_path], baseline="fast")
    assert {m["name"]: m["vs_baseline"]["slow"]["mark"] for m in flipped["metrics"]} == {"wall_clock_ms": "worse", "efficiency": "worse"}
    md = markdown(r)
    table = md.split("## wall_clock_ms (lower is better)")[1]
    assert table.index("| fast |") < table.index("| slow (baseline) |")  # lower first
    assert f"| {2 / 70:.2g} |" in table and "| better |" in table


def test_write_comparison_writes_md_json_html_with_cis_and_colours(tmp_path):
    doc = experiment_doc(["slow", "fast"], metrics=[{"name": "wall_clock_ms", "direction": "lower"}])
    write_variant(tmp_path, "slow", [400, 410, 420, 430], experiment=doc)
    write_variant(tmp_path, "fast", [100, 110, 120, 130], experiment=doc)
    paths = write_comparison(tmp_path)
    assert [p.name for p in paths] == ["comparison.md", "comparison.json", "comparison.html"]
    data = json.loads(paths[1].read_text())
    assert data["version"] == 1 and data["baseline"] == "slow"
    ci = data["variants"]["fast"]["metrics"]["wall_clock_ms"]["ci95"]
    half = 3.182446 * summarize([100, 110, 120, 130])["sd"] / 2  # t(0.975, 3) from tables
    assert ci == pytest.approx([115 - half, 115 + half], rel=1e-6)
    md = paths[0].read_text()
    assert f"[{ci[0]:.3g}, {ci[1]:.3g}]" in md and "| -300 | -72.3% |" in md
    page = paths[2].read_text()
    assert page.startswith("<!doctype html>") and f"[{ci[0]:.3g}, {ci[1]:.3g}]" in page
    assert 'class="better" style="background:#d3f2d8"' in page  # green: better than the baseline
    assert not (tmp_path / "charts").exists()  # no scaling curve: the two differ in nothing but name


def test_default_metrics_are_those_the_runs_carry(tmp_path):
    """No metrics named: the default set, only what metrics.json holds, new keys of other views included."""
    for i, (wall, starved) in enumerate([(100, 5), (120, 7)], 1):
        write_run(tmp_path, "a", i, {"wall_clock_ms": wall, "starved_total_ms": starved, "billable_tokens": None,
                                     "utilization": {"mean": 0.5, "w1": 0.5}})
    names = [m["name"] for m in compare([tmp_path])["metrics"]]
    assert names == ["wall_clock_ms", "utilization", "starved_total_ms"]


def test_compare_rejects_dirs_without_runs(tmp_path):
    with pytest.raises(InputError, match="no finished runs"):
        compare([tmp_path])


def test_speedup_against_a_solo_variant(tmp_path):
    write_variant(tmp_path, "pull-4", [1000, 1100, 1050])
    write_variant(tmp_path, "solo-1", [4000, 4100, 3900], policy="solo", agents=1)
    r = compare([tmp_path], metrics=("wall_clock_ms",))
    assert r["speedup"]["solo"] == "solo-1"
    assert r["speedup"]["variants"]["pull-4"]["speedup"] == pytest.approx(4000 / 1050)
    assert r["speedup"]["variants"]["pull-4"]["efficiency_per_agent"] == pytest.approx(4000 / 1050 / 4)
