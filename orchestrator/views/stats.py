"""The statistics behind comparisons, plans and judged claims, in one place.

Summaries (mean ± sd, median, 95 % CI of the mean from the t distribution), the Mann–Whitney U
test (two-sided; exact when the samples have no ties, the normal approximation otherwise), the
Vargha–Delaney A12 effect size, Holm's correction, and the design questions: the smallest p a
Mann–Whitney test can reach with n1 and n2 runs, and the runs needed to detect an effect.
"""

from __future__ import annotations

import math
from statistics import NormalDist, mean, median, stdev

POWER = 0.8  # the power `orch plan` sizes experiments for
# the exact null distribution up to this many runs per sample (a few ms a test); past it the
# normal approximation agrees to about 1e-3 and scipy's exact one grows slow (seconds at 100)
EXACT_UP_TO = 50


def t975(df: int) -> float:
    """The 97.5 % quantile of Student's t with ``df`` degrees of freedom."""
    from scipy.stats import t  # lazy: orch's start-up (scipy only when comparing)

    return float(t.ppf(0.975, df))


def summarize(values: list[float]) -> dict:
    """n, mean, sd, median and the 95 % CI of the mean; one run has no sd-based CI (``None``)."""
    n = len(values)
    if n == 0:
        return {"n": 0}
    m = mean(values)
    if n == 1:
        return {"n": 1, "mean": m, "sd": 0.0, "median": m, "ci95": None}
    sd = stdev(values)
    half = t975(n - 1) * sd / math.sqrt(n)
    return {"n": n, "mean": m, "sd": sd, "median": median(values), "ci95": [m - half, m + half]}


def a12(x: list[float], y: list[float]) -> float:
    """Vargha–Delaney A12: P(X > Y) + 0.5 P(X = Y); 0.5 is no effect."""
    if not x or not y:
        return float("nan")
    wins = sum((a > b) + 0.5 * (a == b) for a in x for b in y)
    return wins / (len(x) * len(y))


def mann_whitney_p(x: list[float], y: list[float]) -> float:
    """Two-sided Mann–Whitney U p; NaN when a sample is empty, 1 when every value is equal."""
    if not x or not y:
        return float("nan")
    if len(set(x) | set(y)) == 1:
        return 1.0
    from scipy.stats import mannwhitneyu  # lazy: orch's start-up (scipy only when comparing)

    tied = len(set(x) | set(y)) < len(x) + len(y)
    method = "asymptotic" if tied or max(len(x), len(y)) > EXACT_UP_TO else "exact"
    return float(mannwhitneyu(x, y, alternative="two-sided", method=method).pvalue)


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


def smallest_p(n1: int, n2: int) -> float:
    """The smallest two-sided exact Mann–Whitney p with n1 and n2 runs: complete separation, one
    ordering of C(n1 + n2, n1) in each tail."""
    if n1 < 1 or n2 < 1:
        return 1.0
    return min(1.0, 2 / math.comb(n1 + n2, n1))


def smallest_p_holm(n1: int, n2: int, m: int) -> float:
    """The smallest p after Holm over ``m`` tests: the smallest raw p is multiplied by m."""
    return min(1.0, max(1, m) * smallest_p(n1, n2))


def runs_to_reach(alpha: float, m: int) -> int:
    """The fewest runs per variant (equal n) whose smallest p after Holm over m tests is below alpha."""
    n = 1
    while smallest_p_holm(n, n, m) >= alpha:
        n += 1
    return n


def runs_for_effect(effect_a12: float, alpha: float, m: int, power: float = POWER) -> int | None:
    """Runs per variant to detect ``effect_a12`` with ``power`` at ``alpha`` over m tests.

    Noether's (1987) sample size for the Mann–Whitney test with equal groups, n per group =
    (z(1 − α/(2m)) + z(power))² / (6 (A12 − 0.5)²), the two-sided level Bonferroni-split over the
    m tests (the first step of Holm, so it holds for all of them); and never fewer than the runs
    whose smallest reachable p passes Holm (``runs_to_reach``). None for A12 = 0.5 (no effect).
    """
    distance = abs(effect_a12 - 0.5)
    if distance == 0 or math.isnan(distance):
        return None
    z = NormalDist().inv_cdf
    n = (z(1 - alpha / (2 * max(1, m))) + z(power)) ** 2 / (6 * distance ** 2)
    return max(math.ceil(n), runs_to_reach(alpha, m))
