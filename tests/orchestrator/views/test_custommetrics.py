"""Metrics an experiment file defines (``query:`` and ``derived:``): a real sim run through `orch run`
exports them, each checked by hand against the run's history and orch's own metrics; what cannot be
computed, or would write, is refused at load with one line naming the file, the key and its line;
seed 004's example experiment loads and its metrics compute on a real run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cliruns import env, run_quietly, store_of  # noqa: F401 (env: a module fixture)
from coordstore.errors import InputError
from fixtures_path import TEST_FIXTURES
from orchestrator.runs.experiment import load_experiment
from orchestrator.views.asks import default_direction, metric_directions
from orchestrator.views.criteria import from_experiment_file
from orchestrator.views.custommetrics import run_metrics
from orchestrator.views.metrics import METRIC_KEYS

FAST = "0.00005"
SEED004 = TEST_FIXTURES / "experiments" / "seed004-decomposition.yaml"
# one metric of each kind; the line numbers below are those of this text
EXPERIMENT = f"""experiment: {{id: custom}}
template: tiny-feature
execution: {{runs: 1, time_scale: {FAST}}}
variants:
  - {{name: v, policy: pull, agents: 3}}
metrics:
  - name: working_ms
    query: "SELECT SUM(end_timestamp - timestamp) FROM task_sequence WHERE status = 'working'"
    compare: neutral
  - name: parallelism
    derived: "working_ms / wall_clock_ms"
    compare: higher_is_better
    description: mean number of agents at work while the run ran
  - {{name: wall_clock_ms, direction: lower}}
"""


@pytest.fixture(scope="module")
def run(env, tmp_path_factory):
    """One real run of EXPERIMENT: its directory, metrics.json and store dump."""
    base = tmp_path_factory.mktemp("custom")
    exp = base / "exp.yaml"
    exp.write_text(EXPERIMENT)
    code, out, err = run_quietly("run", "--variant", "v", "--experiment", exp, "--results", base / "results", "--json")
    assert code == 0, err
    run_dir = Path(json.loads(out)["runs"][0]["run_dir"])
    spec, store = store_of(run_dir)
    with store:
        dump = store.dump_run(spec.run_id)
    return run_dir, json.loads((run_dir / "metrics.json").read_text()), dump


def test_a_query_and_a_derived_metric_are_exported_as_the_history_says(run):
    run_dir, metrics, dump = run
    # by hand: every working period, from a task's working row to that task's next row
    opened, working = {}, 0
    for h in dump.history:
        if h.entity != "task" or h.is_note:
            continue
        if h.entity_id in opened:
            working += h.ts_ms - opened.pop(h.entity_id)
        if h.to_state == "working":
            opened[h.entity_id] = h.ts_ms
    assert working > 0 and metrics["working_ms"] == working
    # orch's busy time is the same periods, per agent
    assert sum(metrics["busy_ms"].values()) == working
    assert metrics["parallelism"] == pytest.approx(working / metrics["wall_clock_ms"])
    assert metrics["defined_metrics"] == ["working_ms", "parallelism"] and "defined_metric_errors" not in metrics
    summary = (run_dir / "summary.md").read_text()
    assert f"| working_ms | {working} |" in summary and f"| parallelism | {round(metrics['parallelism'], 4)} |" in summary


def test_orch_metrics_recomputes_them_from_the_frozen_file(run):
    run_dir, metrics, _ = run
    code, out, err = run_quietly("metrics", run_dir, "--json")
    assert code == 0, err
    again = json.loads(out)
    assert {k: again[k] for k in ("working_ms", "parallelism", "defined_metrics")} == {
        k: metrics[k] for k in ("working_ms", "parallelism", "defined_metrics")}
    code, out, err = run_quietly("metrics", run_dir)
    lines = out.splitlines()
    at = lines.index("# defined in the experiment file")
    assert [ln.split()[0] for ln in lines[at + 1:]] == ["defined_metrics", "working_ms", "parallelism"]


def test_seed_004s_example_loads_and_its_metrics_compute_on_a_real_run(run):
    _, metrics, dump = run
    exp = load_experiment(SEED004)
    assert exp.shape == "seed-004" and [v.name for v in exp.variants] == ["pre-decomposed", "self-decomposed", "hybrid-decomposed"]
    # its own metrics, less any orch computes itself under the same name (orch's own wins)
    names = ["wall_clock_duration_ms", "total_cost_usd", "tasks_per_hour", "completion_rate_pct", "decomposition_time_ms",
             "avg_subtask_count", "blocking_ratio_pct", "rework_rate_pct", "tokens_per_completed_task", "cost_per_point"]
    defined = [n for n in names if n not in METRIC_KEYS]
    assert [m.name for m in exp.metrics if m.query or m.derived] == defined
    got = run_metrics(dump, SEED004)
    assert got["defined_metrics"] == defined and "defined_metric_errors" not in got
    done = [t for t in dump.tasks if t.status == "completed"]
    wall = max(t.completed_at for t in done) - min(t.started_at for t in done)
    by_hand = {
        "wall_clock_duration_ms": wall,
        "total_cost_usd": sum(t.cost_usd for t in dump.tasks),
        "tasks_per_hour": metrics["tasks_completed"] / (wall / 3_600_000),  # completed_count is orch's tasks_completed
        "completion_rate_pct": 100.0,
        "decomposition_time_ms": None,  # no agent called lead: no row, NULL
        "avg_subtask_count": None,  # tiny-feature has no containers
        "rework_rate_pct": 0.0,
        "tokens_per_completed_task": sum(t.tokens_in + t.tokens_out + t.tokens_thinking for t in done) / len(done),
        "cost_per_point": sum(t.cost_usd for t in done) / sum(t.points for t in done),
    }
    for name in defined:
        if name in by_hand:
            assert got[name] == pytest.approx(by_hand[name]) if by_hand[name] is not None else got[name] is None, name
    assert 0 < got["blocking_ratio_pct"] < 100
    # its success criteria on its own metrics are judged, not ignored
    judged = {c["metric"]: c["passed"] for c in from_experiment_file(SEED004, got)}
    assert judged == {"completion_rate_pct": True, "wall_clock_duration_ms": True, "tasks_per_hour": True, "rework_rate_pct": True}


def test_task_graph_mcps_derivation_over_a_per_agent_metric(run):
    _, metrics, dump = run
    got = run_metrics(dump, TEST_FIXTURES / "experiments" / "tgmcp-runs.yaml")
    assert got["busiest_agent_share"] == pytest.approx(max(metrics["tasks_per_agent"].values()) / metrics["tasks_completed"])


def test_a_metric_that_cannot_be_computed_is_null_and_says_why(run, tmp_path):
    """Loaded fine (each compiles), but the run's data makes no number of them: the run's other
    metrics stand, each of these is null with one line why, and what reads it is null too."""
    _, metrics, dump = run
    f = _with_metrics(tmp_path, "  - {name: label, query: 'SELECT title FROM tasks'}\n"
                                "  - {name: per_agent, derived: 'busy_ms'}\n"
                                "  - {name: after, derived: 'label + 1'}\n"
                                "  - {name: busiest, derived: 'max(busy_ms)'}\n")
    load_experiment(f)
    got = run_metrics(dump, f)
    assert (got["label"], got["per_agent"], got["after"]) == (None, None, None)
    assert got["busiest"] == max(metrics["busy_ms"].values()) and got["wall_clock_ms"] == metrics["wall_clock_ms"]
    assert got["defined_metric_errors"] == {
        "label": f"metric 'label': the query returned {dump.tasks[0].title!r}, not a number",
        "per_agent": "metric 'per_agent': its value is a mapping, not a number (take one entry, or max/min/sum/mean of it)"}


def _with_metrics(tmp_path: Path, metrics: str) -> Path:
    head = EXPERIMENT[:EXPERIMENT.index("metrics:")]
    f = tmp_path / "exp.yaml"
    f.write_text(head + "metrics:\n" + metrics)
    return f


@pytest.mark.parametrize("query,says", [
    ("DELETE FROM tasks", "would DELETE tasks"),
    ("UPDATE tasks SET status = 'completed'", "would UPDATE tasks"),
    ("ATTACH DATABASE 'x.db' AS x", "would ATTACH x.db"),
    ("CREATE TABLE t (x)", "would CREATE"),
    ("DROP TABLE history", "would DROP"),
    ("PRAGMA query_only = OFF", "would PRAGMA query_only"),
    ("SELECT 1; DELETE FROM tasks", "is one statement: this one has more"),
])
def test_a_writing_query_is_refused_at_load_with_one_line(query, says, tmp_path, capsys):
    f = _with_metrics(tmp_path, f"  - name: ok\n    derived: '1'\n  - name: purge\n    query: \"{query}\"\n")
    results = tmp_path / "results"
    code, out, err = run_quietly("run", "--variant", "v", "--experiment", f, "--results", results)
    assert code == 1 and out == "" and len(err.splitlines()) == 1, err
    assert err.startswith(f"orch: error: {f}: metrics.1.query (line 10): metric 'purge': ") and says in err
    assert not results.exists()


@pytest.mark.parametrize("metrics,where,says", [
    ("  - {name: efficiency, query: 'SELECT 1'}\n", "metrics.0.name (line 7)", "orch computes a metric of that name itself"),
    ("  - {name: nowhere_ms}\n", "metrics.0.name (line 7)", "orch computes no metric of that name; define it"),
    ("  - {name: a, query: 'SELECT 1'}\n  - {name: a, derived: '2'}\n", "metrics.1.name (line 8)", "named twice"),
    ("  - {name: defined_metrics, derived: '1'}\n", "metrics.0.name (line 7)", "orch computes a metric of that name itself"),
    ("  - {name: my-rate, derived: '1'}\n", "metrics.0.name (line 7)", "letters, digits and _"),
    ("  - {name: a, query: 'SELECT 1', derived: '2'}\n", "metrics.0.derived (line 7)", "query: or derived:, not both"),
    ("  - {name: a, query: 'SELECT ts FROM task_sequence'}\n", "metrics.0.query (line 7)", "no such column: ts"),
    ("  - {name: a, derived: 'wall_clock_ms /'}\n", "metrics.0.derived (line 7)", "not an expression"),
    ("  - {name: a, derived: \"__import__('os')\"}\n", "metrics.0.derived (line 7)", "the functions are"),
    ("  - {name: a, derived: 'wall_clock_ms / b'}\n", "metrics.0.derived (line 7)", "'b' is no metric"),
    ("  - {name: a, derived: 'b + 1'}\n  - {name: b, derived: 'c * 2'}\n  - {name: c, derived: 'a'}\n",
     "metrics.0.derived (line 7)", "depends on itself (a -> b -> c -> a)"),
    ("  - {name: a, derived: 'a + 1'}\n", "metrics.0.derived (line 7)", "depends on itself (a -> a)"),
    ("  - {name: a, query: 'SELECT 1', compare: neutral, direction: lower}\n", "metrics.0 (line 7)", "compare: or direction:, not both"),
    ("  - {name: a, query: 'SELECT 1', compare: smaller}\n", "metrics.0.compare (line 7)", "'lower_is_better'"),
])
def test_what_cannot_be_computed_is_refused_at_load(metrics, where, says, tmp_path):
    f = _with_metrics(tmp_path, metrics)
    with pytest.raises(InputError) as e:
        load_experiment(f)
    assert str(e.value).startswith(f"{f}: {where}: ") and says in str(e.value) and "\n" not in str(e.value)


def test_a_foreign_files_query_is_refused_at_its_own_key(tmp_path):
    doc = yaml.safe_load(SEED004.read_text())
    doc["template"]["source"] = "browser-parallel"
    doc["metrics"]["quality"][0]["query"] = "DELETE FROM task_sequence"
    doc["metrics"]["efficiency"][1] = {"name": "share", "derivation": "rework_rate_pct / nothing"}
    f = tmp_path / "seed.yaml"
    f.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(InputError, match=r"metrics\.quality\.0\.query \(line \d+\): metric 'rework_rate_pct': .*would DELETE task_sequence"):
        load_experiment(f)
    doc["metrics"]["quality"][0]["query"] = "SELECT 1"
    f.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(InputError, match=r"metrics\.efficiency\.1\.derivation \(line \d+\): metric 'share': 'nothing' is no metric"):
        load_experiment(f)


def test_directions_come_from_the_file_and_default_by_name():
    doc = yaml.safe_load(SEED004.read_text())
    d = metric_directions(doc)
    assert (d["tasks_per_hour"], d["avg_subtask_count"], d["wall_clock_duration_ms"]) == ("higher", "neutral", "lower")
    assert list(d) == [m.name for m in load_experiment(SEED004).metrics]  # the metrics it names, in its order
    own = metric_directions(yaml.safe_load(EXPERIMENT))
    assert own == {"working_ms": "neutral", "parallelism": "higher", "wall_clock_ms": "lower"}
    assert metric_directions(None) == {}
    # a metric no file names: orch's natural direction, none for what is not a measure of how well a run went
    assert [default_direction(k) for k in ("efficiency", "completion_rate", "cache_hit_rate", "merge_conflicts",
                                           "claim_contention", "tasks_total", "workers", "not_a_metric")] == [
        "higher", "higher", "higher", "lower", "lower", "neutral", "neutral", "neutral"]
    assert {default_direction(k) for k in METRIC_KEYS} == {"higher", "lower", "neutral"}
    exp = load_experiment(SEED004)  # the loader agrees with the views
    assert all(d[m.name] == m.direction for m in exp.metrics)
