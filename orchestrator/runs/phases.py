"""The orchestrator's phases (setup, spawn, drain, final merge) written into the run's history.

One run note per phase (``orchestrator.views.overhead`` reads them back as the overhead metrics),
written when the phase ends, with its start and end on the run's clock. ``Spawning`` follows a
spawn phase across the run loop's steps until every runner has reported in.
"""

from __future__ import annotations

from typing import Any

from orchestrator.views.overhead import PHASE_ACTION, PHASES


def note_phase(store, run_id: str, phase: str, start_ms: int, end_ms: int, **data: Any) -> None:
    if phase not in PHASES:
        raise ValueError(f"phase {phase!r}: one of {', '.join(PHASES)}")
    store.note(run_id, "run", run_id, PHASE_ACTION, data={"phase": phase, "start_ms": start_ms, "end_ms": end_ms, **data})


class Spawning:
    """A spawn phase under way: from ``start_ms`` until every awaited agent's runner is up, that is
    has heartbeated since its (re-)registration (the orchestrator registers an agent when it
    spawns its runner; the runner's first act is a heartbeat)."""

    def __init__(self, start_ms: int, resume: bool = False):
        self.start_ms = start_ms
        self.resume = resume

    def waiting(self, store, run_id: str, agents: list[str]) -> list[str]:
        """The ``agents`` whose runner has not reported in yet."""
        recs = {a.id: a for a in store.list_agents(run_id)}
        return [a for a in agents if a not in recs or (recs[a].last_heartbeat or 0) <= (recs[a].registered_at or 0)]

    def close(self, store, run_id: str, end_ms: int, waiting: list[str] = ()) -> None:
        """Record the phase; ``waiting``: agents never up when it had to be closed (the run ended first)."""
        extra: dict[str, Any] = {"resume": True} if self.resume else {}
        if waiting:
            extra["never_up"] = list(waiting)
        note_phase(store, run_id, "spawn", self.start_ms, end_ms, **extra)
