"""A run's budget (``execution.budget: {usd, tokens}``): what the run spent, and the stop.

Spend is counted as the metrics count it (``views.usage``): the agents' ``tokens`` events, as the
watcher ingests them; tokens are ``tokens.total`` (in + out + cached + thinking), dollars their
``cost_usd``. Once either reaches its budget the orchestrator records the stop once (a run note,
``agents.budgetstop``, with what was spent and the budget): runners claim and assign nothing new,
tasks already dispatched (running or assigned) finish, and the run ends when none is left
running. Tasks never dispatched stay ``pending``: not started, not failed. The run is
``finished`` with the reason ``stopped by budget: ...`` (or ``failed`` if tasks failed and the
experiment does not allow it, the budget named in the reason all the same).

Usage an agent reports only through the ``log_metrics`` coordination tool (agent-driven
variants) is not seen here, and agent-driven runners are not stopped (their agents claim through
the coordination tools): a budget acts on orch-coordinated runs.
"""

from __future__ import annotations

from coordstore.models import ACTIVE

from agents.budgetstop import STOP_ACTION, STOP_KEY

from orchestrator.views.usage import TOKEN_KINDS


def spent_in(events) -> tuple[float, int]:
    """(dollars, tokens.total) of the ``tokens`` events among ``events``."""
    usd, tokens = 0.0, 0
    for e in events:
        if e.type == "tokens":
            d = e.data or {}
            usd += float(d.get("cost_usd", 0) or 0)
            tokens += sum(int(d.get(k, 0) or 0) for k in TOKEN_KINDS)
    return usd, tokens


def describe(usd: float, tokens: int, budget: dict) -> str:
    parts = []
    if budget.get("usd") is not None:
        parts.append(f"${usd:.4f} of ${budget['usd']:g}")
    if budget.get("tokens") is not None:
        parts.append(f"{tokens} of {budget['tokens']} tokens")
    return ", ".join(parts)


class BudgetMeter:
    def __init__(self, budget: dict, store, run_id: str):
        self.budget, self.store, self.run_id = budget, store, run_id
        self.usd, self.tokens = spent_in(store.read_events(run_id))  # a resumed run's spend so far
        self.reason: str | None = next((r.reason for r in store.history(run_id, entity="run")
                                        if (r.data or {}).get("action") == STOP_ACTION), None)

    @property
    def stopped(self) -> bool:
        return self.reason is not None

    def add(self, batch) -> None:
        """The watcher's ``on_ingested``: each committed batch of events."""
        usd, tokens = spent_in(batch)
        self.usd += usd
        self.tokens += tokens

    def reached(self) -> bool:
        b = self.budget
        return (b.get("usd") is not None and self.usd >= b["usd"]) or (b.get("tokens") is not None and self.tokens >= b["tokens"])

    def check(self, now_ms: int) -> bool:
        """Record the stop the first time the budget is reached; True once stopped."""
        if self.reason is None and self.reached():
            pending = self.store.count_tasks(self.run_id, status="pending")
            reason = f"stopped by budget: {describe(self.usd, self.tokens, self.budget)}"
            self.store.note(self.run_id, "run", self.run_id, STOP_ACTION, reason=reason, key=STOP_KEY, now=now_ms,
                            data={"spent_usd": round(self.usd, 6), "spent_tokens": self.tokens, "budget": dict(self.budget),
                                  "pending": pending})
            self.reason = reason
        return self.reason is not None

    def drained(self) -> bool:
        """Stopped, and nothing dispatched is still assigned or running."""
        return self.stopped and self.store.count_tasks(self.run_id, status=ACTIVE) == 0

    def final_reason(self, reason: str | None) -> str | None:
        """The run's reason with the stop in front (and how many tasks never started)."""
        if self.reason is None:
            return reason
        pending = self.store.count_tasks(self.run_id, status="pending")
        said = f"{self.reason} when it stopped; {describe(self.usd, self.tokens, self.budget)} in the end; {pending} tasks not started"
        return f"{said}; {reason}" if reason else said
