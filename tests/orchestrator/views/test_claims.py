"""Hypotheses' claims judged supported / not supported / inconclusive, on run directories written
by hand, with the test behind each verdict checked by hand."""

from __future__ import annotations

import pytest

from handmaderuns import experiment_doc, write_variant
from orchestrator.views.claims import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, judge
from orchestrator.views.compare import compare
from orchestrator.views.comparedoc import markdown

FAST, SLOW = [100, 110, 120, 130, 140], [400, 410, 420, 430, 440]  # completely separated


def _values(table: dict[str, list[float]]):
    return lambda metric, variant: table.get(variant, [])


def _one(claim: dict, table: dict, alpha: float = 0.05) -> dict:
    return judge([{"experiment": "e", "id": "H", "text": "", "claims": [claim]}], _values(table), alpha)[0]["claims"][0]


def test_variant_against_variant_supported_and_not():
    table = {"fast": FAST, "slow": SLOW}
    c = _one({"metric": "wall_clock_ms", "a": "fast", "op": "<", "b": "slow"}, table)
    # one claim: Holm over 1; complete separation with 5 and 5 runs: 2 / C(10, 5) = 2/252
    assert c["verdict"] == SUPPORTED
    assert c["test"]["p_holm"] == pytest.approx(2 / 252) and c["test"]["a12"] == 0.0 and c["test"]["m"] == 1
    assert (c["test"]["median_a"], c["test"]["median_b"], c["test"]["n_a"], c["test"]["n_b"]) == (120, 420, 5, 5)
    assert "A12 0.00" in c["why"] and "n 5/5" in c["why"]
    c = _one({"metric": "wall_clock_ms", "a": "fast", "op": ">=", "b": "slow"}, table)
    assert c["verdict"] == NOT_SUPPORTED and c["why"].startswith("significant the other way")


def test_holm_across_the_claims_of_an_experiment_can_make_a_claim_inconclusive():
    # 4 and 4 runs completely separated: p = 2/70 = 0.0286, below 0.05 alone, 0.057 after Holm over two
    table = {"a": [1, 2, 3, 4], "b": [5, 6, 7, 8], "c": [9, 10, 11, 12]}
    alone = _one({"metric": "m", "a": "a", "op": "<", "b": "b"}, table)
    assert alone["verdict"] == SUPPORTED and alone["test"]["p_holm"] == pytest.approx(2 / 70)
    both = judge([{"experiment": "e", "id": "H1", "claims": [{"metric": "m", "a": "a", "op": "<", "b": "b"}]},
                  {"experiment": "e", "id": "H2", "claims": [{"metric": "m", "a": "b", "op": "<", "b": "c"},
                                                             {"metric": "m", "a": "c", "op": ">", "b": 0}]}],
                 _values(table), 0.05)
    first = both[0]["claims"][0]
    assert first["verdict"] == INCONCLUSIVE and first["test"]["m"] == 2  # the number claim is not in the family
    assert first["test"]["p_holm"] == pytest.approx(4 / 70)
    # why: the p, the runs, and the smallest p those runs can reach (2/70, doubled by Holm)
    assert "not below 0.05" in first["why"] and "n 4/4" in first["why"] and "0.0286 (0.0571 after Holm)" in first["why"]


def test_overlapping_runs_are_inconclusive_and_missing_runs_say_so():
    c = _one({"metric": "m", "a": "a", "op": "<", "b": "b"}, {"a": [1, 5, 3], "b": [2, 4, 6]})
    assert c["verdict"] == INCONCLUSIVE and "smallest p 3/3 runs can reach is 0.1" in c["why"]
    c = _one({"metric": "m", "a": "a", "op": "<", "b": "ghost"}, {"a": [1, 2]})
    assert c["verdict"] == INCONCLUSIVE and c["why"] == "no runs of ghost with m"


@pytest.mark.parametrize("op,b,verdict", [
    # values 10, 12, 14: mean 12, CI 12 ± 4.30 * 2 / sqrt(3) = [7.03, 16.97]
    ("<", 20, SUPPORTED), ("<", 17, SUPPORTED), ("<", 16, INCONCLUSIVE), ("<", 7, NOT_SUPPORTED),
    (">", 5, SUPPORTED), (">", 12, INCONCLUSIVE), (">", 17, NOT_SUPPORTED), (">=", 20, NOT_SUPPORTED),
])
def test_variant_against_a_number_by_the_ci(op, b, verdict):
    c = _one({"metric": "m", "a": "a", "op": op, "b": b}, {"a": [10, 12, 14]})
    assert c["verdict"] == verdict, c["why"]
    assert c["test"]["kind"] == "ci95" and c["test"]["n"] == 3


def test_non_strict_claims_take_their_bound_and_one_run_has_no_ci():
    assert _one({"metric": "m", "a": "a", "op": ">=", "b": 1.0}, {"a": [1.0, 1.0, 1.0]})["verdict"] == SUPPORTED
    assert _one({"metric": "m", "a": "a", "op": ">", "b": 1.0}, {"a": [1.0, 1.0, 1.0]})["verdict"] == NOT_SUPPORTED
    one = _one({"metric": "m", "a": "a", "op": "<", "b": 100}, {"a": [1.0]})
    assert one["verdict"] == INCONCLUSIVE and "no CI" in one["why"]


def test_the_comparison_lists_each_hypothesis_with_its_verdicts(tmp_path):
    hyps = [{"id": "H1", "text": "Pull beats push", "claims": [{"metric": "wall_clock_ms", "a": "pull", "op": "<", "b": "push"}]},
            {"id": "H2", "text": "Push is slow", "claims": [{"metric": "wall_clock_ms", "a": "push", "op": "<", "b": 300}]}]
    doc = experiment_doc(["push", "pull"], hypotheses=hyps)
    write_variant(tmp_path, "push", SLOW, experiment=doc, policy="push")
    write_variant(tmp_path, "pull", FAST, experiment=doc)
    r = compare([tmp_path])
    assert [(h["id"], [c["verdict"] for c in h["claims"]]) for h in r["hypotheses"]] == [("H1", [SUPPORTED]), ("H2", [NOT_SUPPORTED])]
    md = markdown(r)
    assert "### H1: Pull beats push" in md and "| wall_clock_ms pull < push | supported |" in md
    assert "| wall_clock_ms push < 300 | not supported | 95% CI [" in md
