"""Can an experiment reach an answer? The smallest p its design allows, and the runs it needs.

With n1 and n2 runs, no two-sided exact Mann–Whitney test can give a p below 2 / C(n1 + n2, n1);
Holm over m tests multiplies the smallest p by m. A comparison compares every pair of variants on
each metric (m = the pairs), a hypothesis's claims one family across the experiment (m = its
variant-against-variant claims). The runs needed for an effect come from Noether's formula
(``stats.runs_for_effect``), for an A12 the user names or, from pilot runs, the A12 observed per
metric. ``orch plan`` prints this before an experiment runs; ``comparison.md`` states the first
part for the design that ran.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations

from orchestrator.views.stats import POWER, a12, runs_for_effect, runs_to_reach, smallest_p, smallest_p_holm

Values = Callable[[str, str], list[float]]  # (metric, variant) -> the pilot runs' values


def pair_rows(runs: dict[str, int], alpha: float, pairs: list[tuple[str, str]] | None = None) -> list[dict]:
    """Per pair (every pair of ``runs``' variants unless given): runs, smallest p before and after
    Holm over the pairs, and whether that reaches alpha."""
    pairs = list(combinations(runs, 2)) if pairs is None else pairs
    m = len(pairs)
    rows = []
    for a, b in pairs:
        na, nb = runs.get(a, 0), runs.get(b, 0)
        low = smallest_p_holm(na, nb, m)
        rows.append({"a": a, "b": b, "n_a": na, "n_b": nb, "m": m, "smallest_p": smallest_p(na, nb),
                     "smallest_p_holm": low, "reachable": low < alpha})
    return rows


def variant_claims(hypotheses: list[dict]) -> list[dict]:
    """The claims that compare two variants (one Holm family), each with its hypothesis id."""
    return [{**c, "hypothesis": h.get("id")} for h in hypotheses for c in h.get("claims", [])
            if isinstance(c.get("b"), str)]


def plan(runs: dict[str, int], alpha: float, effect: float, metrics: list[str] = (),
         pilot: Values | None = None, hypotheses: list[dict] = ()) -> dict:
    """The design of an experiment with ``runs`` per variant (in the file's order): pairs and
    claims with their smallest p and the runs each needs for A12 ``effect``; with ``pilot``, the
    runs each metric of each pair needs at the A12 the pilot runs show."""
    pairs = pair_rows(runs, alpha)
    for r in pairs:
        r["runs_needed"] = runs_for_effect(effect, alpha, r["m"])
    claims = variant_claims(list(hypotheses))
    claim_rows = pair_rows(runs, alpha, [(c["a"], c["b"]) for c in claims])
    for c, r in zip(claims, claim_rows):
        r.update(metric=c["metric"], op=c["op"], hypothesis=c["hypothesis"], runs_needed=runs_for_effect(effect, alpha, r["m"]))
    out = {"version": 1, "alpha": alpha, "power": POWER, "a12": effect, "runs": dict(runs), "pairs": pairs,
           "claims": claim_rows, "pilot": [], "runs_to_reach": runs_to_reach(alpha, len(pairs)) if pairs else None}
    if pilot is not None:
        for r in pairs:
            for metric in metrics:
                x, y = pilot(metric, r["a"]), pilot(metric, r["b"])
                if x and y:
                    seen = a12(x, y)
                    out["pilot"].append({"a": r["a"], "b": r["b"], "metric": metric, "n_a": len(x), "n_b": len(y),
                                         "a12": seen, "runs_needed": runs_for_effect(seen, alpha, r["m"])})
        for r in claim_rows:
            x, y = pilot(r["metric"], r["a"]), pilot(r["metric"], r["b"])
            if x and y:
                r["pilot_a12"] = a12(x, y)
                r["pilot_runs_needed"] = runs_for_effect(r["pilot_a12"], alpha, r["m"])
    return out


def _p(x: float) -> str:
    return f"{x:.2g}"


def _n(x: int | None) -> str:
    return "never (A12 0.5)" if x is None else str(x)


FORMULA = ("runs per variant: Noether's n = (z(1 - alpha/(2m)) + z(power))^2 / (6 (A12 - 0.5)^2), power {power:g}, "
           "and at least the runs whose smallest p after Holm is below alpha")


def design_lines(pairs: list[dict], alpha: float, what: str = "pair(s) of variants of each metric") -> list[str]:
    """Markdown: the smallest reachable p, one row per distinct (n_a, n_b) of the pairs."""
    if not pairs:
        return []
    m = pairs[0]["m"]
    groups: dict[tuple[int, int], list[dict]] = {}
    for r in pairs:
        groups.setdefault((r["n_a"], r["n_b"]), []).append(r)
    lines = [f"Exact two-sided Mann–Whitney U: with n1 and n2 runs p ≥ 2 / C(n1 + n2, n1); Holm over the {m} {what} "
             f"multiplies the smallest by {m}. The fewest runs per variant that can pass at {alpha:g}: {runs_to_reach(alpha, m)}.", "",
             "| runs | pairs | smallest p | after Holm | below alpha " + f"{alpha:g} |", "|---|---|---|---|---|"]
    for (na, nb), rows in groups.items():
        r = rows[0]
        names = ", ".join(f"{x['a']}–{x['b']}" for x in rows[:4]) + (f", … ({len(rows)})" if len(rows) > 4 else "")
        lines.append(f"| {na}/{nb} | {names} | {_p(r['smallest_p'])} | {_p(r['smallest_p_holm'])} | "
                     f"{'yes' if r['reachable'] else 'no'} |")
    return lines


def plan_text(p: dict, title: str) -> str:
    """``orch plan``'s markdown."""
    alpha = p["alpha"]
    lines = [f"# Plan: {title}", "", f"alpha {alpha:g}, A12 to detect {p['a12']:g}; " + FORMULA.format(power=p["power"]) + ".", ""]
    if not p["pairs"]:
        lines.append("One variant: nothing to compare.")
    else:
        lines += [f"## Pairs of variants (Holm over {p['pairs'][0]['m']} per metric)", "",
                  f"The fewest runs per variant whose smallest p can pass Holm at {alpha:g}: {p['runs_to_reach']}.", "",
                  f"| a | b | runs | smallest p | after Holm | below {alpha:g} | runs needed for A12 {p['a12']:g} |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['a']} | {r['b']} | {r['n_a']}/{r['n_b']} | {_p(r['smallest_p'])} | {_p(r['smallest_p_holm'])} | "
                  f"{'yes' if r['reachable'] else 'no'} | {_n(r['runs_needed'])} |" for r in p["pairs"]]
    if p["claims"]:
        lines += ["", f"## Claims (Holm over the {p['claims'][0]['m']} variant-against-variant claims)", "",
                  f"| hypothesis | claim | runs | smallest p | after Holm | below {alpha:g} | runs needed |",
                  "|---|---|---|---|---|---|---|"]
        for r in p["claims"]:
            needed = _n(r["runs_needed"])
            if "pilot_a12" in r:
                needed += f"; pilot A12 {r['pilot_a12']:.2f}: {_n(r['pilot_runs_needed'])}"
            lines.append(f"| {r['hypothesis']} | {r['metric']} {r['a']} {r['op']} {r['b']} | {r['n_a']}/{r['n_b']} | "
                         f"{_p(r['smallest_p'])} | {_p(r['smallest_p_holm'])} | {'yes' if r['reachable'] else 'no'} | {needed} |")
    if p["pilot"]:
        lines += ["", "## From the pilot runs (observed A12 per metric)", "",
                  "| a | b | metric | pilot runs | A12 | runs needed |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['a']} | {r['b']} | {r['metric']} | {r['n_a']}/{r['n_b']} | {r['a12']:.2f} | {_n(r['runs_needed'])} |"
                  for r in p["pilot"]]
    return "\n".join(lines) + "\n"
