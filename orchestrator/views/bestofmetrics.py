"""Best-of-N metrics: who wins, and what the redundancy cost (``agents.policies.bestof``).

Read from the rounds' notes on their tasks: a round counts once its ``bestof-round`` note is in
(its task completed or failed); its attempts are every ``bestof-attempt`` note of that task's
attempt, also one reported after the round closed (its work was spent all the same). A run
without rounds has them all: counts 0, mappings empty, ratios null.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from coordstore.models import RunDump

from orchestrator.views.usage import BILLABLE_KINDS

BESTOF_KEYS = ("bestof_rounds", "bestof_no_winner", "bestof_attempts", "bestof_wins", "bestof_win_rate",
               "bestof_win_rate_by_kind", "bestof_loser_ms", "bestof_loser_tokens", "bestof_loser_cost_usd",
               "bestof_redundancy_ms", "bestof_redundancy_tokens", "bestof_redundancy_cost")


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def bestof_metrics(dump: RunDump) -> dict[str, Any]:
    closed: dict[tuple[str, int], dict] = {}
    attempts: dict[tuple[str, int], dict[str, dict]] = defaultdict(dict)
    for r in dump.history:
        d = r.data or {}
        if r.entity != "task" or not r.is_note:
            continue
        if d.get("action") == "bestof-round":
            closed[(r.entity_id, d.get("attempt"))] = d
        elif d.get("action") == "bestof-attempt":
            attempts[(r.entity_id, d.get("attempt"))][r.agent or ""] = d
    tried: dict[str, int] = defaultdict(int)
    won: dict[str, int] = defaultdict(int)
    kind_tried: dict[str, int] = defaultdict(int)
    kind_won: dict[str, int] = defaultdict(int)
    spent = {"win": defaultdict(float), "lose": defaultdict(float)}
    for key, rnd in closed.items():
        winner = rnd.get("winner")
        for agent, a in attempts.get(key, {}).items():
            kind = a.get("kind") or "?"
            tried[agent] += 1
            kind_tried[kind] += 1
            side = "win" if agent == winner else "lose"
            if side == "win":
                won[agent] += 1
                kind_won[kind] += 1
            tokens = a.get("tokens") or {}
            spent[side]["ms"] += a.get("ms") or 0
            spent[side]["tokens"] += sum(int(tokens.get(k, 0) or 0) for k in BILLABLE_KINDS)
            spent[side]["cost_usd"] += float(a.get("cost_usd") or 0.0)
    lose, win = spent["lose"], spent["win"]
    return {
        "bestof_rounds": len(closed),
        "bestof_no_winner": sum(1 for rnd in closed.values() if not rnd.get("winner")),
        "bestof_attempts": sum(tried.values()),
        "bestof_wins": {a: won[a] for a in sorted(tried)},
        "bestof_win_rate": {a: round(won[a] / tried[a], 4) for a in sorted(tried)},
        "bestof_win_rate_by_kind": {k: round(kind_won[k] / kind_tried[k], 4) for k in sorted(kind_tried)},
        "bestof_loser_ms": int(lose["ms"]),
        "bestof_loser_tokens": int(lose["tokens"]),
        "bestof_loser_cost_usd": round(lose["cost_usd"], 6),
        "bestof_redundancy_ms": _ratio(lose["ms"], win["ms"]),
        "bestof_redundancy_tokens": _ratio(lose["tokens"], win["tokens"]),
        "bestof_redundancy_cost": _ratio(lose["cost_usd"], win["cost_usd"]),
    }
