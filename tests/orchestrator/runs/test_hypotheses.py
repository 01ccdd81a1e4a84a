"""Hypotheses with testable claims and ``comparison:`` in experiment files: loaded, and every name
checked at load, an error naming the key and its line."""

from __future__ import annotations

import pytest

from coordstore.errors import InputError
from orchestrator.runs.experiment import load_experiment

HEAD = "experiment:\n  id: h\n  hypotheses:\n"
BODY = ("template: tiny-feature\n"
        "metrics:\n  - {name: my_metric, query: 'SELECT COUNT(*) FROM tasks', direction: lower}\n"
        "variants:\n  - {name: push-4, policy: push}\n  - {name: pull-4, policy: pull}\n")


def _file(tmp_path, claims: str, tail: str = ""):
    f = tmp_path / "h.yaml"
    f.write_text(HEAD + "    - id: H1\n      text: pull beats push\n      claims:\n" + claims + BODY + tail)
    return f


def test_claims_and_comparison_load(tmp_path):
    f = _file(tmp_path, "        - {metric: wall_clock_ms, a: pull-4, op: '<', b: push-4}\n"
                        "        - {metric: my_metric, a: push-4, op: '>=', b: 3}\n",
              "comparison: {baseline: pull-4, alpha: 0.01}\n")
    exp = load_experiment(f)
    [h] = exp.experiment.hypotheses
    assert (h.id, h.text) == ("H1", "pull beats push")
    assert [(c.metric, c.a, c.op, c.b) for c in h.claims] == [("wall_clock_ms", "pull-4", "<", "push-4"), ("my_metric", "push-4", ">=", 3.0)]
    assert (exp.comparison.baseline, exp.comparison.alpha) == ("pull-4", 0.01)
    plain = load_experiment(_file(tmp_path, "        []\n"))
    assert (plain.comparison.baseline, plain.comparison.alpha) == (None, 0.05)  # the first variant; 0.05


@pytest.mark.parametrize("claims,tail,needle", [
    ("        - {metric: wall_clock_ms, a: pull-8, op: '<', b: push-4}\n", "",
     "experiment.hypotheses.0.claims.0.a (line 7): 'pull-8' is not a variant of the experiment; it has: push-4, pull-4"),
    ("        - {metric: wall_clock_ms, a: pull-4, op: '<', b: push-2}\n", "",
     "experiment.hypotheses.0.claims.0.b (line 7): 'push-2' is not a variant"),
    ("        - {metric: wall_clok_ms, a: pull-4, op: '<', b: push-4}\n", "",
     "experiment.hypotheses.0.claims.0.metric (line 7): 'wall_clok_ms': neither a metric orch computes nor one the experiment defines"),
    ("        - {metric: wall_clock_ms, a: pull-4, op: '==', b: push-4}\n", "",
     "experiment.hypotheses.0.claims.0.op (line 7): Input should be '<', '>', '<=' or '>='"),
    ("        []\n", "comparison: {baseline: solo-1}\n",
     "comparison.baseline (line 14): 'solo-1' is not a variant of the experiment"),
    ("        []\n", "comparison: {alpha: 1.5}\n", "comparison.alpha (line 14): Input should be less than 1"),
])
def test_names_that_name_nothing_are_refused_at_their_key(tmp_path, claims, tail, needle):
    f = _file(tmp_path, claims, tail)
    with pytest.raises(InputError) as e:
        load_experiment(f)
    assert str(e.value).startswith(f"{f}: {needle}"), str(e.value)
