"""An experiment's metrics and success criteria read from its frozen copy, in every shape orch
loads, exactly as the loader read them: a run of a task-graph-mcp or seed 004 file is judged on
the criteria its note did not list as ignored."""

from __future__ import annotations

import shutil

import pytest

from fixtures_path import TEST_FIXTURES
from orchestrator.runs.experiment import load_experiment
from orchestrator.runs.resources import experiment_files
from orchestrator.views.asks import asked_criteria, asked_metrics
from orchestrator.views.criteria import from_experiment_file
from orchestrator.views.frozen import asked

FOREIGN = sorted((TEST_FIXTURES / "experiments").glob("[!b]*.yaml"))  # the good ones; bad-* do not load


@pytest.mark.parametrize("path", FOREIGN + experiment_files(), ids=lambda p: p.name)
def test_a_frozen_copy_is_judged_as_it_was_loaded(path, tmp_path):
    exp = load_experiment(path)
    frozen = tmp_path / "experiment.yaml"
    shutil.copy(path, frozen)
    metrics = {"completion_rate": 1.0, "merge_conflicts": 1, "efficiency": 0.5, "wall_clock_ms": 10}
    judged = from_experiment_file(frozen, metrics)
    assert [(c["metric"], c["op"], c["value"]) for c in judged] == [(c.metric, c.op, c.value) for c in exp.success_criteria]
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(path, run / "experiment.yaml")
    compared = asked({exp.experiment.id: run}).directions  # what comparisons read of the frozen copy
    assert list(compared) == [m.name for m in exp.metrics]


def test_seed004_levels_are_judged_and_baselines_are_not():
    judged = from_experiment_file(TEST_FIXTURES / "experiments" / "seed004.yaml", {"completion_rate": 1.0, "merge_conflicts": 2})
    assert [(c["metric"], c["passed"]) for c in judged] == [("completion_rate", True), ("merge_conflicts", False)]
    asked = asked_criteria({"minimum": {"completion_rate": ">=0.9", "efficiency": "> baseline", "made_up": "< 3"},
                            "target": {"wall_clock_ms": "< 1e6", "gini_busy": 0.2}, "stretch": {"efficiency": "> 0.9"}})
    assert asked.items == [{"metric": "completion_rate", "op": ">=", "value": 0.9}, {"metric": "wall_clock_ms", "op": "<", "value": 1e6}]
    assert asked.ignored == ["success_criteria.minimum.efficiency", "success_criteria.minimum.made_up",
                             "success_criteria.target.gini_busy", "success_criteria.stretch"]


def test_grouped_metrics_keep_what_orch_computes_and_what_the_file_defines():
    asked = asked_metrics({"a": ["efficiency", {"name": "gini_busy", "compare": "neutral"}, {"name": "x_ms"}, 7,
                                 {"name": "mine", "query": "SELECT 1", "compare": "higher_is_better", "source": "s"}],
                           "b": {"description": "d", "measurements": [{"name": "rework_rate", "derived": "r / n"},
                                                                      {"name": "share", "derivation": "1 / 2", "description": "w"}]},
                           "c": "not a list"})
    # named alone, a metric gets orch's natural direction for it; one of the file's own, none
    assert asked.items == [{"name": "efficiency", "direction": "higher"}, {"name": "gini_busy", "direction": "neutral"},
                           {"name": "mine", "direction": "higher", "query": "SELECT 1"},
                           {"name": "rework_rate", "direction": "lower"},
                           {"name": "share", "direction": "neutral", "derived": "1 / 2", "description": "w"}]
    # each kept metric's key path in the file (a defined metric's errors point there)
    assert asked.keys == [("metrics", "a", 0), ("metrics", "a", 1), ("metrics", "a", 4),
                          ("metrics", "b", "measurements", 0), ("metrics", "b", "measurements", 1)]
    # orch computes rework_rate itself: the file's definition of it is the one ignored
    assert asked.ignored == ["metrics.a.x_ms", "metrics.a.3", "metrics.a.mine.source", "metrics.b.rework_rate.derived", "metrics.c"]
