"""`orch compare --baseline` and `orch plan` through the CLI, on run directories written by hand,
a hand-made experiment file and a shipped one."""

from __future__ import annotations

import json
from math import comb
from pathlib import Path

import pytest

from cliruns import cli
from handmaderuns import experiment_doc, write_variant
from orchestrator.runs.experiment import load_experiment
from orchestrator.runs.resources import experiment_files
from orchestrator.views.stats import runs_for_effect


@pytest.fixture
def results(tmp_path):
    doc = experiment_doc(["slow", "fast"], metrics=[{"name": "wall_clock_ms", "direction": "lower"}])
    write_variant(tmp_path / "exp", "slow", [400, 410, 420, 430], experiment=doc)
    write_variant(tmp_path / "exp", "fast", [100, 110, 120, 130], experiment=doc)
    return tmp_path / "exp"


def test_compare_against_the_flagged_baseline(results, capsys, tmp_path):
    code, out, err = cli(capsys, "compare", results)
    assert code == 0, err
    assert "| fast | 4 |" in out and "Δ vs slow" in out and "| better |" in out  # the file's first variant
    code, out, err = cli(capsys, "compare", results, "--baseline", "fast", "--html", tmp_path / "c.html")
    assert code == 0, err
    assert "Δ vs fast" in out and "| slow | 4 |" in out and "| worse |" in out
    assert 'class="worse"' in (tmp_path / "c.html").read_text()
    code, out, err = cli(capsys, "compare", results, "--baseline", "fast", "--json")
    doc = json.loads(out)
    assert doc["version"] == 1 and doc["baseline"] == "fast"
    assert doc["metrics"][0]["vs_baseline"]["slow"] == {"a12": 1.0, "delta": 300.0, "delta_pct": pytest.approx(260.87, abs=0.01),
                                                        "mark": "worse", "p": pytest.approx(2 / 70), "p_holm": pytest.approx(2 / 70)}
    code, out, err = cli(capsys, "compare", results, "--baseline", "nope")
    assert code == 2 and err.startswith("orch: error: --baseline 'nope': no runs of that variant") and len(err.splitlines()) == 1


def test_plan_a_shipped_experiment(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no pilot runs below ./experiments/results
    f = next(p for p in experiment_files() if p.name == "coordination.yaml")
    exp = load_experiment(f)
    n = {v.name: exp.execution_for(v).runs for v in exp.variants}
    m = len(n) * (len(n) - 1) // 2
    code, out, err = cli(capsys, "plan", f, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert len(doc["pairs"]) == m and doc["pilot_runs"] is None
    first = doc["pairs"][0]
    k1, k2 = n[first["a"]], n[first["b"]]
    assert first["smallest_p"] == pytest.approx(2 / comb(k1 + k2, k1))
    assert first["smallest_p_holm"] == pytest.approx(min(1.0, m * 2 / comb(k1 + k2, k1)))
    assert first["runs_needed"] == runs_for_effect(0.71, 0.05, m)
    code, out, err = cli(capsys, "plan", f)
    assert code == 0 and f"Holm over {m} per metric" in out and out.rstrip().endswith("no pilot runs under experiments/results/coordination")


def _hand_made(tmp_path: Path, runs: int) -> Path:
    f = tmp_path / "e.yaml"
    f.write_text(f"experiment: {{id: e}}\ntemplate: tiny-feature\nexecution: {{runs: {runs}}}\n"
                 "variants:\n  - {name: a, policy: pull, agents: 2}\n  - {name: b, policy: pull, agents: 4}\n"
                 "  - {name: c, policy: push, agents: 2, execution: {runs: 12}}\n"
                 "metrics:\n  - {name: wall_clock_ms, direction: lower}\n")
    return f


def test_plan_a_hand_made_experiment_and_its_pilot_runs(capsys, tmp_path):
    f = _hand_made(tmp_path, 10)
    code, out, err = cli(capsys, "plan", f, "--alpha", "0.01", "--a12", "0.8", "--results", tmp_path / "none-yet", "--json")
    assert code == 1 and "--results" in err  # a pilot directory that does not exist is named
    (tmp_path / "none-yet").mkdir()
    code, out, err = cli(capsys, "plan", f, "--alpha", "0.01", "--a12", "0.8", "--results", tmp_path / "none-yet", "--json")
    assert code == 0, err
    rows = {(r["a"], r["b"]): r for r in json.loads(out)["pairs"]}
    # equal n: 2 / C(2n, n); Holm over the 3 pairs; c's own 12 runs
    assert rows["a", "b"]["smallest_p"] == pytest.approx(2 / comb(20, 10))
    assert rows["a", "b"]["smallest_p_holm"] == pytest.approx(3 * 2 / comb(20, 10))
    assert rows["a", "c"]["smallest_p"] == pytest.approx(2 / comb(22, 10))
    assert rows["a", "b"]["runs_needed"] == runs_for_effect(0.8, 0.01, 3)
    pilot = tmp_path / "pilot"
    write_variant(pilot, "a", [100, 200, 300])
    write_variant(pilot, "b", [150, 250, 350])
    code, out, err = cli(capsys, "plan", f, "--results", pilot)
    assert code == 0, err
    # A12(a, b) for wall_clock_ms: a beats b in (200 > 150), (300 > 150), (300 > 250): 3/9
    assert "| a | b | wall_clock_ms | 3/3 | 0.33 |" in out and f"pilot runs: {pilot}" in out


@pytest.mark.parametrize("args,needle", [(["--a12", "0.5"], "--a12 0.5"), (["--alpha", "0"], "--alpha 0.0")])
def test_plan_refuses_a_meaningless_effect_or_level(capsys, tmp_path, args, needle):
    code, out, err = cli(capsys, "plan", _hand_made(tmp_path, 3), *args)
    assert code == 2 and needle in err and len(err.splitlines()) == 1
