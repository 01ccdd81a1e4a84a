"""Whether the run stopped dispatching because its budget was spent.

The orchestrator (``orchestrator.runs.budget``) records it once, as a note on the run
(``data.action`` = STOP_ACTION, key STOP_KEY). A runner of a budgeted run looks before each
decision: from then on it claims nothing new, finishes the tasks already given to it (running or
assigned: they were dispatched before the stop) and ends; a coordinator or lead assigns nothing.
A claim made in the instant the note is written may still run: the check is the runner's, not
part of the store's claim.
"""

from __future__ import annotations

STOP_ACTION = "budget-stop"
STOP_KEY = "budget-stop"


class DispatchStop:
    """Reads the run's notes since the last look (a budgeted run's runners only)."""

    def __init__(self, store, run_id: str):
        self.store, self.run_id = store, run_id
        self.cursor = 0
        self.reason: str | None = None

    @property
    def stopped(self) -> bool:
        return self.reason is not None

    def check(self) -> bool:
        if self.reason is None:
            for r in self.store.history(self.run_id, since_seq=self.cursor, entity="run"):
                self.cursor = max(self.cursor, r.seq)
                if (r.data or {}).get("action") == STOP_ACTION:
                    self.reason = r.reason or "budget reached"
                    break
        return self.reason is not None
