"""The design's arithmetic: the smallest reachable p before and after Holm, the runs an effect
needs (Noether's formula) and the plan built from them; scaling curves only where variants differ
in their number of working agents alone."""

from __future__ import annotations

from math import comb

import pytest

from handmaderuns import experiment_doc, write_variant
from orchestrator.views.compare import write_comparison
from orchestrator.views.plan import plan, plan_text
from orchestrator.views.scaling import scaling_groups
from orchestrator.views.stats import runs_for_effect, runs_to_reach, smallest_p, smallest_p_holm

Z975, Z80 = 1.959964, 0.841621  # standard normal quantiles (tables)


def test_smallest_p_by_hand():
    assert smallest_p(3, 3) == pytest.approx(0.1)  # 2 / C(6, 3) = 2 / 20
    assert smallest_p(10, 10) == pytest.approx(2 / 184756)
    assert smallest_p(2, 5) == pytest.approx(2 / 21)
    assert smallest_p_holm(3, 3, 3) == pytest.approx(0.3)  # the "0.3 after Holm over three pairs"
    assert smallest_p_holm(3, 3, 15) == 1.0
    # equal n: the fewest runs whose smallest p passes Holm: 2/70 < 0.05 alone; 3 x 2/70 > 0.05, 3 x 2/252 < 0.05
    assert runs_to_reach(0.05, 1) == 4 and runs_to_reach(0.05, 3) == 5


def test_runs_for_an_effect_by_noethers_formula():
    # n = (z(0.975) + z(0.8))^2 / (6 (0.71 - 0.5)^2) = 7.849 / 0.2646 = 29.7 -> 30
    assert (Z975 + Z80) ** 2 / (6 * 0.21 ** 2) == pytest.approx(29.66, abs=0.01)
    assert runs_for_effect(0.71, 0.05, 1) == 30
    assert runs_for_effect(0.29, 0.05, 1) == 30  # the same effect the other way
    assert runs_for_effect(0.71, 0.05, 3) > 30  # Holm's first step: alpha / 3
    assert runs_for_effect(0.5, 0.05, 1) is None  # no effect: no n finds it


def test_plan_per_pair_and_per_claim():
    hyps = [{"id": "H1", "claims": [{"metric": "wall_clock_ms", "a": "a", "op": "<", "b": "b"},
                                     {"metric": "wall_clock_ms", "a": "a", "op": "<", "b": 5.0}]}]
    p = plan({"a": 3, "b": 3, "c": 10}, 0.05, 0.71, hypotheses=hyps)
    rows = {(r["a"], r["b"]): r for r in p["pairs"]}
    assert list(rows) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert rows["a", "b"]["smallest_p"] == pytest.approx(0.1) and rows["a", "b"]["smallest_p_holm"] == pytest.approx(0.3)
    # 3 against 10 runs: 2 / C(13, 3) = 2/286, x 3 = 0.021: more runs of one side help too
    assert rows["a", "c"]["smallest_p"] == pytest.approx(2 / comb(13, 3)) and rows["a", "c"]["reachable"] is True
    assert rows["a", "b"]["reachable"] is False
    assert rows["a", "b"]["runs_needed"] == runs_for_effect(0.71, 0.05, 3)
    # the claims' family: the one claim between two variants (the number claim has no pair)
    assert [(c["a"], c["b"], c["m"]) for c in p["claims"]] == [("a", "b", 1)]
    text = plan_text(p, "t")
    assert "| a | b | 3/3 | 0.1 | 0.3 | no |" in text and "| H1 | wall_clock_ms a < b | 3/3 | 0.1 | 0.1 | no |" in text


def test_pilot_runs_give_the_observed_a12():
    pilot = {"a": [1.0, 2, 3], "b": [2.0, 3, 4]}  # A12(a, b): 0 + 0.5 + 1 + ... = 2/9
    p = plan({"a": 3, "b": 3}, 0.05, 0.71, ["wall_clock_ms"], lambda m, v: pilot.get(v, []))
    [row] = p["pilot"]
    assert row["a12"] == pytest.approx(2 / 9)
    assert row["runs_needed"] == runs_for_effect(2 / 9, 0.05, 1)
    assert "From the pilot runs" in plan_text(p, "t")


def _spec(agents: int, policy: str = "pull", **kw) -> dict:
    return {"policy": policy, "agents": [{"id": f"w{i}", "role": "worker", "kind": "sim"} for i in range(agents)],
            "seed": agents, "run_id": f"r{agents}", **kw}


def test_scaling_groups_are_variants_that_differ_only_in_agents():
    specs = {"pull-1": _spec(1), "pull-2": _spec(2), "pull-4": _spec(4), "push-4": _spec(4, "push"),
             "push-8": _spec(8, "push", policy_options={"dispatch_latency_ms": 9}),
             "push-2": _spec(2, "push", policy_options={"dispatch_latency_ms": 9})}
    groups = scaling_groups(specs, list(specs))
    assert [(g["label"], g["variants"]) for g in groups] == [("pull", {"pull-1": 1, "pull-2": 2, "pull-4": 4}),
                                                              ("push", {"push-2": 2, "push-8": 8})]
    tagged = {"a": _spec(2), "b": {**_spec(4), "agents": [{"id": "w", "role": "worker", "kind": "claude"}] * 4}}
    assert scaling_groups(tagged, ["a", "b"]) == []  # another kind of agent is another design


def test_a_scaling_curve_is_drawn_only_for_such_variants(tmp_path):
    doc = experiment_doc(["pull-2", "pull-4"])
    write_variant(tmp_path / "x", "pull-2", [400, 410, 420], experiment=doc, agents=2)
    write_variant(tmp_path / "x", "pull-4", [200, 220, 210], experiment=doc, agents=4)
    md = write_comparison(tmp_path / "x")[0].read_text()
    png = tmp_path / "x" / "charts" / "scaling-pull.png"
    assert png.read_bytes()[:4] == b"\x89PNG" and "![scaling-pull](charts/scaling-pull.png)" in md
    write_variant(tmp_path / "y", "pull-2", [400, 410, 420], experiment=doc, agents=2)
    write_variant(tmp_path / "y", "pull-4", [200, 220, 210], experiment=doc, agents=4, policy_options={"order": "fifo"})
    md = write_comparison(tmp_path / "y")[0].read_text()
    assert not (tmp_path / "y" / "charts").exists() and "## Scaling" not in md
