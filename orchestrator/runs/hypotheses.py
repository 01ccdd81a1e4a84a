"""What an experiment claims and how it is compared: ``experiment.hypotheses`` with testable
claims, and ``comparison: {baseline, alpha}``.

A claim ``{metric, a, op, b}`` says that the variant ``a``'s metric is below or above ``b``, a
variant's or a number (``views.claims`` judges it). The loader checks, once, that every name
means something: claim variants and the baseline are variants of the experiment, a claim's metric
is one orch computes or one the experiment defines (``unknown_name`` returns the key and the line
to say otherwise).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.views.metrics import METRIC_KEYS

Key = tuple


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Claim(_Strict):
    metric: str = Field(min_length=1)
    a: str = Field(min_length=1)  # a variant
    op: Literal["<", ">", "<=", ">="]
    b: float | str  # a variant or a number


class Hypothesis(_Strict):
    id: str = Field(min_length=1)
    text: str = ""
    claims: list[Claim] = Field(default_factory=list)


class Comparison(_Strict):
    baseline: str | None = None  # None: the first variant
    alpha: float = Field(default=0.05, gt=0, lt=1)


def unknown_name(variants: list[str], metrics: list[str], hypotheses: list[Hypothesis], comparison: Comparison) -> tuple[Key, str] | None:
    """The first name that names nothing, as (key path, message); ``metrics``: those the experiment defines."""
    known = ", ".join(variants)
    if comparison.baseline is not None and comparison.baseline not in variants:
        return ("comparison", "baseline"), f"{comparison.baseline!r} is not a variant of the experiment; it has: {known}"
    for i, h in enumerate(hypotheses):
        for j, c in enumerate(h.claims):
            key = ("experiment", "hypotheses", i, "claims", j)
            if c.metric not in METRIC_KEYS and c.metric not in metrics:
                return key + ("metric",), f"{c.metric!r}: neither a metric orch computes nor one the experiment defines under metrics:"
            for side in ("a", "b"):
                name = getattr(c, side)
                if isinstance(name, str) and name not in variants:
                    return key + (side,), f"{name!r} is not a variant of the experiment; it has: {known}"
    return None
