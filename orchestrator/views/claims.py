"""Hypotheses judged: each testable claim ``{metric, a, op, b}`` supported, not supported or
inconclusive, with the test behind the verdict.

Variant against variant: a two-sided Mann–Whitney U test of the metric's runs, p Holm-corrected
across every variant-against-variant claim of the experiment. Supported when the corrected p is
below alpha and the effect points the claimed way (A12 on the claimed side of 0.5, the medians
not the other way); not supported when it is significant and points the other way; inconclusive
otherwise, saying why (the p, the runs, the smallest p those runs could reach). ``<=`` and ``<``
are tested alike: runs can show a difference, never an equality.

Variant against a number: the 95 % CI of the variant's mean. Supported when the CI lies wholly on
the claimed side (for ``<=``/``>=`` a bound on the number counts as that side), not supported when
wholly on the other, else inconclusive; one run has no CI.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import median

from orchestrator.views.stats import a12, holm, mann_whitney_p, smallest_p, summarize

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
LOWER = ("<", "<=")
Values = Callable[[str, str], list[float]]  # (metric, variant) -> the runs' values


def _is_number(b) -> bool:
    return isinstance(b, (int, float)) and not isinstance(b, bool)


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def claim_text(c: dict) -> str:
    return f"{c.get('metric')} {c.get('a')} {c.get('op')} {c.get('b')}"


def _side(sign: float, op: str) -> str:
    """"claimed", "other" or "none": where a signed effect (negative: a below b) points."""
    if sign == 0:
        return "none"
    return "claimed" if (sign < 0) == (op in LOWER) else "other"


def _against_variant(c: dict, x: list[float], y: list[float], p: float, p_holm: float, m: int, alpha: float) -> dict:
    n = (len(x), len(y))
    test = {"kind": "mann-whitney", "n_a": n[0], "n_b": n[1], "m": m, "p": p, "p_holm": p_holm, "a12": a12(x, y) if x and y else None,
            "median_a": median(x) if x else None, "median_b": median(y) if y else None,
            "smallest_p": smallest_p(*n), "smallest_p_holm": min(1.0, m * smallest_p(*n))}
    if not x or not y:
        missing = c["a"] if not x else c["b"]
        return {"verdict": INCONCLUSIVE, "why": f"no runs of {missing} with {c['metric']}", "test": test}
    effect = _side(test["a12"] - 0.5, c["op"])
    medians = _side(test["median_a"] - test["median_b"], c["op"])
    said = (f"p {_fmt(p_holm)} (Holm over {m}), A12 {test['a12']:.2f}, medians {_fmt(test['median_a'])} vs "
            f"{_fmt(test['median_b'])}, n {n[0]}/{n[1]}")
    if p_holm < alpha and effect == "claimed" and medians != "other":
        return {"verdict": SUPPORTED, "why": said, "test": test}
    if p_holm < alpha and effect == "other" and medians != "claimed":
        return {"verdict": NOT_SUPPORTED, "why": f"significant the other way: {said}", "test": test}
    if p_holm < alpha:
        why = f"A12 and the medians disagree: {said}"
    else:
        why = (f"{said}: not below {alpha:g}; the smallest p {n[0]}/{n[1]} runs can reach is "
               f"{_fmt(test['smallest_p'])} ({_fmt(test['smallest_p_holm'])} after Holm)")
    return {"verdict": INCONCLUSIVE, "why": why, "test": test}


def _against_number(c: dict, x: list[float]) -> dict:
    s = summarize(x)
    b, op = float(c["b"]), c["op"]
    test = {"kind": "ci95", "n": s["n"], "mean": s.get("mean"), "ci95": s.get("ci95")}
    if s["n"] < 2:
        return {"verdict": INCONCLUSIVE, "why": f"{s['n']} run(s) of {c['a']} with {c['metric']}: no CI", "test": test}
    lo, hi = s["ci95"]
    ci = f"95% CI [{_fmt(lo)}, {_fmt(hi)}], n {s['n']}"
    # (wholly on the claimed side, wholly on the other): a bound on b belongs to <= and >=
    claimed, other = {"<": (hi < b, lo >= b), "<=": (hi <= b, lo > b), ">": (lo > b, hi <= b), ">=": (lo >= b, hi < b)}[op]
    if claimed:
        return {"verdict": SUPPORTED, "why": f"{ci}: wholly {op} {_fmt(b)}", "test": test}
    if other:
        return {"verdict": NOT_SUPPORTED, "why": f"{ci}: wholly on the other side of {_fmt(b)}", "test": test}
    return {"verdict": INCONCLUSIVE, "why": f"{ci}: reaches across {_fmt(b)}", "test": test}


def judge(hypotheses: list[dict], values: Values, alpha: float) -> list[dict]:
    """Each hypothesis with its claims judged (``verdict``, ``why``, ``test``); Holm over the
    variant-against-variant claims of each experiment."""
    out = [{**h, "claims": [dict(c) for c in h.get("claims", [])]} for h in hypotheses]
    by_experiment: dict[str, list[dict]] = {}
    for h in out:
        for c in h["claims"]:
            if not _is_number(c.get("b")):
                by_experiment.setdefault(h.get("experiment", ""), []).append(c)
    for claims in by_experiment.values():
        samples = [(values(c["metric"], c["a"]), values(c["metric"], str(c["b"]))) for c in claims]
        tested = [i for i, (x, y) in enumerate(samples) if x and y]
        raw = {i: mann_whitney_p(*samples[i]) for i in tested}
        adjusted = dict(zip(tested, holm([raw[i] for i in tested])))
        nan = float("nan")
        for i, c in enumerate(claims):
            c.update(_against_variant(c, *samples[i], raw.get(i, nan), adjusted.get(i, nan), len(tested), alpha))
    for h in out:
        for c in h["claims"]:
            if _is_number(c.get("b")):
                c.update(_against_number(c, values(c["metric"], c["a"])))
    return out
