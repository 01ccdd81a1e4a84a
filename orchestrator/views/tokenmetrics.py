"""The run's token and cost metrics (seed 004's token efficiency), from every agent's usage.

Usage is ``usage.usage_by_agent``: each agent's ``tokens`` events, else its ``log_metrics`` calls,
so every token the run spent counts once -- workers' and coordinators', failed attempts' included.
Per-task and per-point figures divide that whole spend by what was achieved (completed work tasks,
their points): the price of the result, not the mean of the tasks that succeeded.
"""

from __future__ import annotations

from typing import Any

from coordstore.models import USAGE_KEYS, RunDump

from orchestrator.views.usage import billable_tokens, total_tokens, usage_by_agent

TOKEN_METRIC_KEYS = (
    "tokens", "cost_usd", "cost_per_completed_task", "billable_tokens", "cached_tokens", "cache_hit_rate",
    "tokens_per_completed_task", "cost_per_point",
)


def token_metrics(dump: RunDump, completed: list[str]) -> dict[str, Any]:
    """The keys of TOKEN_METRIC_KEYS, in that order. ``completed``: ids of the completed work tasks."""
    usage = list(usage_by_agent(dump).values())
    run = {k: int(sum(u[k] for u in usage)) for k in USAGE_KEYS}
    cost = sum(u["cost_usd"] for u in usage)
    billable = billable_tokens(run)
    done = set(completed)
    points = sum(t.points or 0 for t in dump.tasks if t.id in done)
    read = run["in"] + run["cached"]  # all input: uncached + served from a cache
    return {
        "tokens": {**run, "total": total_tokens(run), "billable": billable},
        "cost_usd": round(cost, 6),
        "cost_per_completed_task": round(cost / len(completed), 6) if completed else 0.0,
        "billable_tokens": billable,
        "cached_tokens": run["cached"],
        "cache_hit_rate": round(run["cached"] / read, 4) if read else 0.0,
        "tokens_per_completed_task": round(billable / len(completed), 3) if completed else None,
        "cost_per_point": round(cost / points, 6) if points else None,
    }
