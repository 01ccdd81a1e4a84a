"""Token usage and cost per agent, from one source per agent so nothing is counted twice.

An agent's ``tokens`` events (the runner's and the kinds' own accounting) are its usage. An agent
that sent none but reported usage through the ``log_metrics`` coordination tool (an agent-driven
agent following task-graph-mcp's instructions) is counted from those calls: ``data.metrics`` slots
0-7 and ``data.cost_usd``.

The 8 counts are task-graph-mcp's metric slots (seed 004), keyed as in a ``tokens`` event
(``coordstore.models.USAGE_KEYS``): in, out, cached, thinking, image, audio, slot6, slot7. ``in``
is the input NOT served from a cache; ``cached`` the input read from one (agents/clis/base.py).
Totals add the four disjoint slots only: providers report image and audio tokens as a modality
breakdown of input or output (OpenAI's ``*_tokens_details.audio_tokens``, Gemini's per-modality
counts), so adding them would count tokens twice; slots 6-7 have no fixed meaning. Those four are
carried and reported, in no total.
"""

from __future__ import annotations

from collections import defaultdict

from coordstore.models import USAGE_KEYS, RunDump

TOKEN_KINDS = USAGE_KEYS[:4]  # the disjoint token slots a total adds: in, out, cached, thinking
BILLABLE_KINDS = ("in", "out", "thinking")  # seed 004: metric_0 + metric_1 + metric_3
USAGE_TOOL = "log_metrics"


def _int(v) -> int:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0


def usage_by_agent(dump: RunDump) -> dict[str, dict[str, float]]:
    """agent -> {in, out, cached, thinking, image, audio, slot6, slot7, cost_usd}; agents that
    reported nothing are absent. A missing count is 0 (events leave slots 4-7 out when 0)."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys((*USAGE_KEYS, "cost_usd"), 0))
    for e in dump.events:
        if e.type == "tokens":
            u = out[e.agent]
            for k in USAGE_KEYS:
                u[k] += _int(e.data.get(k, 0))
            u["cost_usd"] += float(e.data.get("cost_usd", 0) or 0)
    by_events = set(out)
    for r in dump.history:
        if r.entity == "tool" and r.entity_id == USAGE_TOOL and r.to_state == "ok" and r.agent \
                and r.agent not in by_events:
            data = r.data or {}
            slots = data.get("metrics") or []
            u = out[r.agent]
            for k, v in zip(USAGE_KEYS, slots):
                u[k] += _int(v)
            cost = data.get("cost_usd")
            u["cost_usd"] += float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else 0.0
    return dict(out)


def total_tokens(u: dict[str, float]) -> int:
    """in + out + cached + thinking (the ``tokens.total`` of the run metrics; see the module doc on
    why image, audio and the free slots are not added)."""
    return int(sum(u[k] for k in TOKEN_KINDS))


def billable_tokens(u: dict[str, float]) -> int:
    """in + out + thinking (seed 004's billable tokens: cached input is apart)."""
    return int(sum(u[k] for k in BILLABLE_KINDS))
