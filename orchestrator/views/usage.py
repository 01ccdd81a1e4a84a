"""Token usage and cost per agent, from one source per agent so nothing is counted twice.

An agent's ``tokens`` events (the runner's and the kinds' own accounting) are its usage. An agent
that sent none but reported usage through the ``log_metrics`` coordination tool (an agent-driven
agent following task-graph-mcp's instructions) is counted from those calls: slots 0-3 of
``data.metrics`` (in, out, cached, thinking) and ``data.cost_usd``.
"""

from __future__ import annotations

from collections import defaultdict

from coordstore.models import RunDump

TOKEN_KINDS = ("in", "out", "cached", "thinking")  # the tokens event's keys = log_metrics slots 0-3
USAGE_TOOL = "log_metrics"


def _int(v) -> int:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0


def usage_by_agent(dump: RunDump) -> dict[str, dict[str, float]]:
    """agent -> {in, out, cached, thinking, cost_usd}; agents that reported nothing are absent."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys((*TOKEN_KINDS, "cost_usd"), 0))
    for e in dump.events:
        if e.type == "tokens":
            u = out[e.agent]
            for k in TOKEN_KINDS:
                u[k] += _int(e.data.get(k, 0))
            u["cost_usd"] += float(e.data.get("cost_usd", 0) or 0)
    by_events = set(out)
    for r in dump.history:
        if r.entity == "tool" and r.entity_id == USAGE_TOOL and r.to_state == "ok" and r.agent \
                and r.agent not in by_events:
            data = r.data or {}
            slots = data.get("metrics") or []
            u = out[r.agent]
            for k, v in zip(TOKEN_KINDS, slots):
                u[k] += _int(v)
            cost = data.get("cost_usd")
            u["cost_usd"] += float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else 0.0
    return dict(out)


def total_tokens(u: dict[str, float]) -> int:
    """in + out + cached + thinking (the ``tokens.total`` of the run metrics)."""
    return int(sum(u[k] for k in TOKEN_KINDS))
