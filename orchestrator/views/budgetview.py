"""Cost and tokens against a run's budget (``execution.budget``), for summary.md and `orch report`.

Spend is the run's metrics (``cost_usd``, ``tokens.total``); whether dispatch stopped on the
budget is the run's ``budget-stop`` note (``orchestrator.runs.budget``) in its transitions.
"""

from __future__ import annotations

import json
from pathlib import Path

from agents.budgetstop import STOP_ACTION


def _share(spent: float, limit: float) -> str:
    return f"{spent / limit:.0%}" if limit else "-"


def against_budget(budget: dict | None, m: dict) -> str | None:
    """``$0.4100 of $0.5 (82%), 12345 of 20000 tokens (62%)``; None without a budget."""
    if not budget:
        return None
    parts = []
    if budget.get("usd") is not None:
        parts.append(f"${m['cost_usd']:.4f} of ${budget['usd']:g} ({_share(m['cost_usd'], budget['usd'])})")
    if budget.get("tokens") is not None:
        total = m["tokens"]["total"]
        parts.append(f"{total} of {budget['tokens']} tokens ({_share(total, budget['tokens'])})")
    return ", ".join(parts)


def stop_note(run_dir: Path) -> dict | None:
    """The run's budget-stop row (as exported in transitions.jsonl), or None."""
    path = Path(run_dir) / "transitions.jsonl"
    if not path.is_file():
        return None
    for line in path.read_text().splitlines():
        if STOP_ACTION in line:
            r = json.loads(line)
            if r.get("entity") == "run" and (r.get("data") or {}).get("action") == STOP_ACTION:
                return r
    return None


def budget_table(by_variant: dict[str, list[dict]]) -> list[str]:
    """Markdown lines of the report's budget section: one row per budgeted run (none: no lines)."""
    rows = []
    for variant, runs in sorted(by_variant.items()):
        for r in runs:
            budget = r["spec"].get("budget")
            shown = against_budget(budget, r["metrics"])
            if shown is None:
                continue
            note = stop_note(Path(r["run_dir"]))
            stopped = f"yes, {note['data'].get('pending', '?')} tasks pending then" if note else "no"
            done = f"{r['metrics']['tasks_completed']}/{r['metrics']['tasks_total']}"
            rows.append(f"| {variant} | {Path(r['run_dir']).name} | {shown} | {stopped} | {done} |")
    if not rows:
        return []
    return ["## Cost against budget", "", "| variant | run | spent of budget | stopped by budget | completed |",
            "|---|---|---|---|---|", *rows, ""]
