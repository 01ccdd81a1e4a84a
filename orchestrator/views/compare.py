"""Comparing variants: per-metric summaries, deltas against a baseline, pairwise tests, judged
claims, scaling curves and the design's smallest reachable p; ``comparison.md/.json/.html``.

For each variant and metric: n, mean ± sd, median, 95 % CI of the mean (t distribution). Against
the baseline variant (``--baseline``, else the experiment's ``comparison.baseline``, else the first
variant in the experiment file's order): the difference of the means, absolute and in %, and a
mark by the metric's direction (better / worse when the pair's corrected p is below alpha, else
n.s.; neutral metrics get none). Every pair of variants: Mann–Whitney U (two-sided) with the
Vargha–Delaney A12, p Holm-corrected across the pairs of one metric (each metric its own family).
The metrics: those the experiment file names (and its claims use), else ``DEFAULT_COMPARED``;
either way only those the runs' metrics.json carry as numbers. ``compare`` builds the result
(``--json``), ``comparedoc`` renders it, ``write_comparison`` writes the three files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from itertools import combinations
from pathlib import Path

from coordstore.errors import InputError, UsageError
from coordstore.models import works

from orchestrator.views.asks import default_direction
from orchestrator.views.claims import judge
from orchestrator.views.comparedoc import html_body, html_page, markdown
from orchestrator.views.frozen import asked
from orchestrator.views.plan import pair_rows
from orchestrator.views.scaling import scaling_chart, scaling_groups
from orchestrator.views.stats import a12, holm, mann_whitney_p, summarize

# the agent-coordination group (orchestrator/views/coordmetrics.py): compared too when a variant
# coordinated through the tools
COORDINATION_COMPARED = ("coordination_calls", "coordination_calls_per_task", "coordinator_busy_ms",
                         "coordinator_tokens", "assignment_latency_ms", "claim_contention", "decomposition_ms",
                         "subtasks_per_decomposed_task", "duplicated_work")
# compared when the experiment file names no metrics: time, the bound, throughput and completion,
# the hazards (waiting, contention, starvation, overhead), tokens and cost
DEFAULT_COMPARED = (
    "wall_clock_ms", "efficiency", "lower_bound_ms", "throughput_tasks_per_h", "completion_rate", "utilization",
    "starved_total_ms", "queue_wait_ms", "dispatch_latency_ms", "claim_contention", "orchestration_overhead_ms",
    "overhead_share", "speedup_vs_solo", "billable_tokens", "tokens_per_completed_task", "cost_usd", "cost_per_point",
    "gini_busy", "retries", "merge_conflicts", "forecast_precision", "forecast_recall")
HOLM_FAMILY = "the pairs of variants of one metric"
FILES = ("comparison.md", "comparison.json", "comparison.html")


def find_runs(dirs: list[Path]) -> dict[str, list[dict]]:
    """variant -> list of run records ({run_dir, spec, metrics}); a DIR is a run or holds runs."""
    out: dict[str, list[dict]] = {}
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            raise InputError(f"{d}: not a directory")
        runs = [p.parent for p in sorted(d.rglob("metrics.json")) if (p.parent / "run.json").is_file()]
        if not runs:
            raise InputError(f"{d}: no finished runs (no run.json + metrics.json below it)")
        for r in runs:
            spec = json.loads((r / "run.json").read_text())
            metrics = json.loads((r / "metrics.json").read_text())
            out.setdefault(spec["variant"], []).append({"run_dir": str(r), "spec": spec, "metrics": metrics})
    return out


def values(runs: list[dict], metric: str) -> list[float]:
    """The runs' numbers for ``metric`` (a per-agent mapping by its ``mean``); runs without one are left out."""
    vals = []
    for r in runs:
        v = r["metrics"].get(metric)
        if isinstance(v, dict):
            v = v.get("mean")
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            vals.append(float(v))
    return vals


def values_of(by_variant: dict[str, list[dict]]) -> Callable[[str, str], list[float]]:
    """(metric, variant) -> that variant's runs' numbers (none for a variant without runs)."""
    return lambda metric, variant: values(by_variant.get(variant, []), metric)


def _no_nan(obj):
    """JSON has no NaN: a test without samples says null."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_no_nan(v) for v in obj]
    return obj


def _experiments(by_variant: dict[str, list[dict]]) -> dict[str, Path]:
    """experiment id -> one of its run directories (whose frozen file speaks for the experiment)."""
    out: dict[str, Path] = {}
    for runs in by_variant.values():
        for r in runs:
            out.setdefault(str(r["spec"].get("experiment_id", "")), Path(r["run_dir"]))
    return out


def _mark(direction: str, p_holm: float | None, effect: float | None, alpha: float) -> str:
    """better | worse | n.s. | neutral | - (no test: a side without values), for a variant against
    the baseline (effect: A12 of the variant against the baseline)."""
    if p_holm is None or math.isnan(p_holm):
        return "-"
    if direction == "neutral":
        return "neutral"
    if p_holm >= alpha or effect is None or effect == 0.5:
        return "n.s."
    return "better" if (effect > 0.5) == (direction == "higher") else "worse"


def _speedup(by_variant: dict[str, list[dict]], order: list[str]) -> dict:
    solo = next((v for v in order if by_variant[v][0]["spec"].get("policy") == "solo"), None)
    out = {"solo": solo, "variants": {}}
    if solo:
        base = summarize(values(by_variant[solo], "wall_clock_ms")).get("mean")
        for v in order:
            wall = summarize(values(by_variant[v], "wall_clock_ms")).get("mean")
            n_workers = sum(1 for a in by_variant[v][0]["spec"]["agents"] if works(a.get("role", "worker")))
            if base and wall:
                out["variants"][v] = {"speedup": base / wall, "efficiency_per_agent": base / wall / max(1, n_workers)}
    return out


def _chosen(named: list[str], claims_use: list[str], by_variant: dict[str, list[dict]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the metrics compared, the agent-coordination group added to them when a variant coordinated)."""
    wanted = list(dict.fromkeys(named + claims_use))
    if not any(values(runs, m) for m in wanted for runs in by_variant.values()):  # none named, or none with values
        wanted = list(DEFAULT_COMPARED)
    group = []
    if any(max(values(runs, "coordination_calls"), default=0) > 0 for runs in by_variant.values()):
        group = [m for m in COORDINATION_COMPARED if m not in wanted]
    carried = tuple(m for m in wanted + group if any(values(runs, m) for runs in by_variant.values()))
    return carried, tuple(m for m in group if m in carried)


def compare(dirs: list[Path], metrics: tuple[str, ...] | None = None, baseline: str | None = None) -> dict:
    """The comparison of the runs below ``dirs`` (versioned JSON shape, see the README)."""
    by_variant = find_runs(dirs)
    ask = asked(_experiments(by_variant))
    order = [v for v in ask.order if v in by_variant] + sorted(v for v in by_variant if v not in ask.order)
    if baseline is not None and baseline not in by_variant:
        raise UsageError(f"--baseline {baseline!r}: no runs of that variant; compared: {', '.join(order)}")
    base = baseline or (ask.baseline if ask.baseline in by_variant else order[0])
    alpha = ask.alpha
    claims_use = [c["metric"] for h in ask.hypotheses for c in h["claims"] if isinstance(c.get("metric"), str)]
    chosen, group = (tuple(dict.fromkeys(metrics)), ()) if metrics else _chosen(list(ask.directions), claims_use, by_variant)
    summary = {v: {m: summarize(values(by_variant[v], m)) for m in chosen} for v in order}

    pairs, compared = [], []
    for m in chosen:
        rows = []
        for a, b in combinations(order, 2):
            x, y = values(by_variant[a], m), values(by_variant[b], m)
            rows.append({"metric": m, "a": a, "b": b, "n_a": len(x), "n_b": len(y), "u_p": mann_whitney_p(x, y), "a12": a12(x, y)})
        tested = [r for r in rows if not math.isnan(r["u_p"])]
        for r, p in zip(tested, holm([r["u_p"] for r in tested])):
            r["p_holm"] = p
        pairs.extend(rows)
        direction = ask.directions.get(m) or default_direction(m)
        base_mean = summary[base][m].get("mean")
        vs = {}
        for v in order:
            if v == base:
                continue
            pair = next(r for r in rows if {r["a"], r["b"]} == {v, base})
            effect = pair["a12"] if pair["a"] == v else 1 - pair["a12"]  # A12 of v against the baseline
            mean_v = summary[v][m].get("mean")
            delta = mean_v - base_mean if mean_v is not None and base_mean is not None else None
            vs[v] = {"delta": delta, "delta_pct": 100 * delta / abs(base_mean) if delta is not None and base_mean else None,
                     "p": pair["u_p"], "p_holm": pair.get("p_holm"), "a12": effect,
                     "mark": _mark(direction, pair.get("p_holm"), effect, alpha)}
        compared.append({"name": m, "direction": direction, "group": "coordination" if m in group else "", "vs_baseline": vs})

    specs = {v: by_variant[v][0]["spec"] for v in order}
    hypotheses = judge(ask.hypotheses, values_of(by_variant), alpha)
    return _no_nan({
        "version": 1,
        "experiments": [e for e in ask.experiments if e],
        "statements": ask.statements,
        "baseline": base,
        "alpha": alpha,
        "holm_family": HOLM_FAMILY,
        "order": order,
        "variants": {v: {"runs": [r["run_dir"] for r in by_variant[v]], "n": len(by_variant[v]), "metrics": summary[v]}
                     for v in order},
        "metrics": compared,
        "pairs": pairs,
        "design": pair_rows({v: len(by_variant[v]) for v in order}, alpha),
        "hypotheses": hypotheses,
        "scaling": scaling_groups(specs, order),
        "speedup": _speedup(by_variant, order),
    })


def coordinated(result: dict) -> bool:
    """Whether any compared variant made coordination-tool calls (its runs' mean is above 0)."""
    return any((body["metrics"].get("coordination_calls") or {}).get("mean", 0) > 0 for body in result["variants"].values())


def draw_scaling(result: dict, charts: Path) -> list[Path]:
    """The scaling curves' PNGs in ``charts``; each group's ``chart`` set to its path (relative to
    the charts directory's parent)."""
    drawn = []
    for g in result["scaling"]:
        charts.mkdir(parents=True, exist_ok=True)
        summaries = {v: result["variants"][v]["metrics"] for v in g["variants"]}
        path = scaling_chart(g, summaries, charts / f"scaling-{g['label']}.png")
        if path is not None:
            g["chart"] = f"{charts.name}/{path.name}"
            drawn.append(path)
    return drawn


def comparison_files(experiment_dir: Path, baseline: str | None = None) -> tuple[dict, list[Path]]:
    """The comparison of ``experiment_dir``'s runs, and the files written: comparison.md, .json,
    .html (and the scaling curves under charts/)."""
    experiment_dir = Path(experiment_dir)
    result = compare([experiment_dir], baseline=baseline)
    draw_scaling(result, experiment_dir / "charts")
    texts = (markdown(result), json.dumps(result, indent=2, sort_keys=True) + "\n",
             html_page("orch comparison", html_body(result)))
    paths = [experiment_dir / f for f in FILES]
    for path, text in zip(paths, texts):
        path.write_text(text)
    return result, paths


def write_comparison(experiment_dir: Path, baseline: str | None = None) -> list[Path]:
    """comparison.md, comparison.json and comparison.html (and the scaling curves under charts/)
    in ``experiment_dir``, the ``<results>/<experiment id>`` directory holding ``<variant>/<run>/``."""
    return comparison_files(experiment_dir, baseline)[1]
