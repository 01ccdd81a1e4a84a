"""`orch run --experiment FILE --all`: every variant, replications interleaved, seeds paired, the
experiment's comparison written; and the Parquet copies of a run's history and metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from cliruns import cli as orch
from orchestrator.runs.schedule import interleave

pytestmark = pytest.mark.usefixtures("no_git_identity")
FAST = "0.00005"


def _experiment(tmp_path: Path, **variant_b) -> Path:
    exp = {"experiment": {"id": "ab"}, "template": "tiny-feature",
           "execution": {"runs": 3, "seed": 11, "time_scale": float(FAST), "timeout_s": 90},
           "variants": [{"name": "a-pull-2", "policy": "pull", "agents": 2},
                        {"name": "b-pull-1", "policy": "pull", "agents": 1, **variant_b}]}
    f = tmp_path / "ab.yaml"
    f.write_text(yaml.safe_dump(exp, sort_keys=False))
    return f


def test_interleave_is_round_robin_and_drops_a_variant_that_ran_out():
    got = interleave([["a1", "a2", "a3"], ["b1"], ["c1", "c2"]])
    assert [s.plan for s in got] == ["a1", "b1", "c1", "a2", "c2", "a3"]
    assert [s.order for s in got] == [1, 2, 3, 4, 5, 6]
    assert [s.replication for s in got] == [1, 1, 1, 2, 2, 3]


def test_all_interleaves_pairs_seeds_and_writes_the_comparison(tmp_path, capsys):
    results = tmp_path / "results"
    code, out, err = orch(capsys, "run", "--experiment", str(_experiment(tmp_path)), "--all",
                          "--results", str(results), "--json")
    assert code == 0, err
    doc = json.loads(out)
    order = [(r["variant"], r["seed"]) for r in doc["runs"]]
    assert order == [("a-pull-2", 11), ("b-pull-1", 11), ("a-pull-2", 12), ("b-pull-1", 12), ("a-pull-2", 13), ("b-pull-1", 13)]
    # the run order is on record, and the store's own creation times agree with it
    sched = [json.loads(x) for x in (results / "ab" / "schedule.jsonl").read_text().splitlines()]
    assert [(s["variant"], s["replication"], s["seed"]) for s in sched] == [
        (v, i, 10 + i) for i in (1, 2, 3) for v in ("a-pull-2", "b-pull-1")]
    assert [s["run_id"] for s in sched] == [r["run_id"] for r in doc["runs"]]
    first_rows = [pq.read_table(Path(r["run_dir"]) / "transitions.parquet").column("ts_ms")[0].as_py() for r in doc["runs"]]
    assert first_rows == sorted(first_rows)
    # the experiment's comparison over every run, and one table of every run's metrics
    written = {Path(p).name for p in doc["comparison"]}
    assert {"comparison.md", "comparison.json", "metrics.parquet"} <= written
    cmp_ = json.loads((results / "ab" / "comparison.json").read_text())
    assert set(cmp_["variants"]) == {"a-pull-2", "b-pull-1"}
    md = (results / "ab" / "comparison.md").read_text()
    assert "Baseline a-pull-2" in md  # the first variant of the file, none named
    assert "| variant | n | mean ± sd | median | 95% CI | Δ vs a-pull-2 | Δ % | p (Holm) | A12 | mark |" in md
    assert "smallest reachable p" in md
    table = pq.read_table(results / "ab" / "metrics.parquet").to_pylist()
    assert sorted((r["variant"], r["seed"]) for r in table) == sorted(order)
    assert all(r["tasks_completed"] == r["tasks_total"] == 5 for r in table)


def test_a_variant_with_its_own_seed_is_said_to_be_unpaired(tmp_path, capsys):
    code, out, err = orch(capsys, "run", "--experiment", str(_experiment(tmp_path, execution={"seed": 99})), "--all",
                          "--runs", "1", "--results", str(tmp_path / "r"), "--json")
    assert code == 0, err
    assert "b-pull-1" in err and "not paired" in err
    assert [r["seed"] for r in json.loads(out)["runs"]] == [11, 99]


@pytest.mark.parametrize("args,with_file,needle", [
    (["--all"], False, "--experiment FILE"),
    (["--variant", "a-pull-2", "--all"], True, "not both"),
    ([], True, "give --variant"),
])
def test_all_and_variant_are_one_or_the_other(tmp_path, capsys, args, with_file, needle):
    extra = ["--experiment", str(_experiment(tmp_path))] if with_file else []
    code, out, err = orch(capsys, "run", *args, *extra, "--results", str(tmp_path / "r"))
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_a_bad_variant_stops_all_before_any_run_dir(tmp_path, capsys):
    f = _experiment(tmp_path, policy_options={"order": "nonsense"})
    code, out, err = orch(capsys, "run", "--experiment", str(f), "--all", "--results", str(tmp_path / "r"))
    assert code != 0 and "nonsense" in err
    assert not any((tmp_path / "r").rglob("run.json"))


def test_parquet_copies_hold_the_history_and_the_metrics(tmp_path, capsys):
    code, out, err = orch(capsys, "run", "--variant", "pull-2", "--template", "tiny-feature", "--runs", "1",
                          "--time-scale", FAST, "--results", str(tmp_path), "--json")
    assert code == 0, err
    run_dir = Path(json.loads(out)["runs"][0]["run_dir"])
    rows = pq.read_table(run_dir / "transitions.parquet").to_pylist()
    jsonl = [json.loads(x) for x in (run_dir / "transitions.jsonl").read_text().splitlines()]
    assert [(r["seq"], r["entity"], r["entity_id"], r["to_state"]) for r in rows] == \
        [(r["seq"], r["entity"], r["entity_id"], r["to_state"]) for r in jsonl]
    assert [json.loads(r["data"]) for r in rows] == [r["data"] for r in jsonl]
    [m] = pq.read_table(run_dir / "metrics.parquet").to_pylist()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert m["variant"] == "pull-2" and m["wall_clock_ms"] == metrics["wall_clock_ms"]
    assert m["utilization.mean"] == metrics["utilization"]["mean"]
    assert m["tokens.total"] == metrics["tokens"]["total"]
