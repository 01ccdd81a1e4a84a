"""Comparing variants: per-metric summaries and pairwise tests over replicated runs.

For each variant and metric: n, mean ± sd, median, 95 % CI of the mean (t distribution). For each
pair of variants: Mann–Whitney U (two-sided) with the Vargha–Delaney A12 effect size, p-values
Holm-corrected across the pairs of one metric. Speedup against a solo baseline where present.
"""

from __future__ import annotations

import json
import math
from itertools import combinations
from pathlib import Path
from statistics import mean, median, stdev

from coordstore.errors import InputError, OrchError
from coordstore.models import works

# the agent-coordination group (orchestrator/views/coordmetrics.py): its own table, shown when a
# compared variant coordinated through the tools
COORDINATION_COMPARED = ("coordination_calls", "coordination_calls_per_task", "coordinator_busy_ms",
                         "coordinator_tokens", "assignment_latency_ms", "claim_contention", "decomposition_ms",
                         "subtasks_per_decomposed_task", "duplicated_work")
COMPARED = tuple(dict.fromkeys((
    "wall_clock_ms", "efficiency", "lower_bound_ms", "throughput_tasks_per_h", "completion_rate", "queue_wait_ms",
    "dispatch_latency_ms", "pickup_latency_ms", "claim_contention", "gini_tasks", "gini_busy", "retries",
    "merge_conflicts", "cost_usd", *COORDINATION_COMPARED)))


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


def _t975(df: int) -> float:
    try:
        from scipy.stats import t  # lazy: scipy (optional, the analysis extra) only for comparisons

        return float(t.ppf(0.975, df))
    except ImportError:  # normal approximation when scipy (analysis extra) is absent
        return 1.96


def summarize(values: list[float]) -> dict:
    n = len(values)
    if n == 0:
        return {"n": 0}
    m = mean(values)
    sd = stdev(values) if n > 1 else 0.0
    half = _t975(n - 1) * sd / math.sqrt(n) if n > 1 else 0.0
    return {"n": n, "mean": m, "sd": sd, "median": median(values), "ci95": [m - half, m + half]}


def a12(x: list[float], y: list[float]) -> float:
    """Vargha–Delaney A12: P(X > Y) + 0.5 P(X = Y)."""
    if not x or not y:
        return float("nan")
    wins = sum((a > b) + 0.5 * (a == b) for a in x for b in y)
    return wins / (len(x) * len(y))


def mann_whitney_p(x: list[float], y: list[float]) -> float:
    if len(x) < 1 or len(y) < 1:
        return float("nan")
    if len(set(x) | set(y)) == 1:
        return 1.0
    try:
        from scipy.stats import mannwhitneyu  # lazy: scipy (optional, the analysis extra) only for comparisons
    except ImportError as e:
        raise OrchError("comparisons need scipy: python -m pip install scipy") from e
    return float(mannwhitneyu(x, y, alternative="two-sided").pvalue)


def holm(pvalues: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def _values(runs: list[dict], metric: str) -> list[float]:
    vals = []
    for r in runs:
        v = r["metrics"].get(metric)
        if isinstance(v, dict):
            v = v.get("mean")
        if isinstance(v, (int, float)):
            vals.append(float(v))
    return vals


def compare(dirs: list[Path], metrics: tuple[str, ...] = COMPARED) -> dict:
    metrics = tuple(dict.fromkeys(metrics))
    by_variant = find_runs(dirs)
    variants = sorted(by_variant)
    table = {v: {m: summarize(_values(by_variant[v], m)) for m in metrics} for v in variants}
    pairs = []
    for m in metrics:
        rows = []
        for a, b in combinations(variants, 2):
            x, y = _values(by_variant[a], m), _values(by_variant[b], m)
            rows.append({"metric": m, "a": a, "b": b, "u_p": mann_whitney_p(x, y), "a12": a12(x, y)})
        valid = [r for r in rows if not math.isnan(r["u_p"])]
        for r, p in zip(valid, holm([r["u_p"] for r in valid])):
            r["p_holm"] = p
        pairs.extend(rows)
    solo = next((v for v in variants if by_variant[v][0]["spec"]["policy"] == "solo"), None)
    speedup = {}
    if solo:
        base = summarize(_values(by_variant[solo], "wall_clock_ms")).get("mean")
        for v in variants:
            wall = summarize(_values(by_variant[v], "wall_clock_ms")).get("mean")
            workers = sum(1 for a in by_variant[v][0]["spec"]["agents"] if works(a["role"]))
            if base and wall:
                speedup[v] = {"speedup": base / wall, "efficiency_per_agent": base / wall / workers}
    return {
        "version": 1,
        "variants": {v: {"runs": [r["run_dir"] for r in by_variant[v]], "metrics": table[v]} for v in variants},
        "pairs": pairs,
        "baseline": solo,
        "speedup": speedup,
    }


def _table(result: dict, metrics: tuple[str, ...]) -> list[str]:
    lines = ["| variant | n | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for v, body in result["variants"].items():
        cells = []
        for m in metrics:
            s = body["metrics"].get(m, {})
            cells.append("-" if not s.get("n") else f"{s['mean']:.3g} ± {s['sd']:.2g} (med {s['median']:.3g})")
        n = max((s.get("n", 0) for s in body["metrics"].values()), default=0)
        lines.append(f"| {v} | {n} | " + " | ".join(cells) + " |")
    return lines


def coordinated(result: dict) -> bool:
    """Whether any compared variant made coordination-tool calls (its runs' mean is above 0)."""
    return any((body["metrics"].get("coordination_calls") or {}).get("mean", 0) > 0 for body in result["variants"].values())


def markdown(result: dict, metrics: tuple[str, ...] = ("wall_clock_ms", "efficiency", "claim_contention", "dispatch_latency_ms")) -> str:
    """The chosen metrics' table, the agent-coordination table when a variant coordinated through
    the tools (orch-coordinated variants show their zeros there: the ideal baseline), the Holm-
    corrected pairs of the chosen metrics, and the speedups."""
    lines = _table(result, metrics)
    if coordinated(result):
        group = tuple(m for m in COORDINATION_COMPARED if any(m in b["metrics"] for b in result["variants"].values()))
        lines += ["", "Agent coordination:", ""] + _table(result, group)
    sig = [p for p in result["pairs"] if p["metric"] in metrics and "p_holm" in p]
    if sig:
        lines += ["", "| metric | a | b | p (Holm) | A12 |", "|---|---|---|---|---|"]
        lines += [f"| {p['metric']} | {p['a']} | {p['b']} | {p['p_holm']:.3g} | {p['a12']:.2f} |" for p in sig]
    if result["speedup"]:
        lines += ["", f"Speedup vs `{result['baseline']}`:", ""]
        lines += [f"- {v}: {s['speedup']:.2f}× ({s['efficiency_per_agent']:.2f} per agent)" for v, s in result["speedup"].items()]
    return "\n".join(lines) + "\n"
