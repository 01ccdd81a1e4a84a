"""Agent slots of a run whose runners live on workers (``workers: external``), kept in the store as
notes on the agents, so coordinator and workers share nothing but the store.

A slot is one agent of the run; each time it is (re)opened it gets a new generation G. The
coordinator opens generation 1 at the start (``slot-open``, key ``open:<agent>:<G>``); a worker
takes it with ``slot-taken`` (key ``slot:<agent>:<G>``: the store keeps one row per key, so exactly
one worker wins). When the supervisor gives up on the slot's runner (its lease expired, it
stalled) the coordinator closes the next generation (``slot-closed``, key ``close:<agent>:<G+1>``):
the worker running generation G stops it, nobody takes a closed slot; the respawn reopens G+1.
Degrading closes a slot for good. ``SlotTable`` folds these notes, incrementally, into each
slot's current state; both sides read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

OPEN, CLOSED, TAKEN = "slot-open", "slot-closed", "slot-taken"
SAME_MACHINE_ENV = "ORCH_SAME_MACHINE"  # "1": every worker runs on this machine (tests): a sqlite/file store will do


@dataclass
class Slot:
    gen: int = 0
    closed: bool = False
    why: str | None = None  # the reason of the note that closed it ("run over", "supervisor: ...")
    taken: dict | None = None  # the taking note's data (worker, host, pid, gen) for this generation
    kind: str | None = None  # the kind to run now (a fallback kind after the supervisor switched it)
    history: list[dict] = field(default_factory=list)  # every taker of the slot, oldest first

    @property
    def open(self) -> bool:
        return self.gen > 0 and not self.closed and self.taken is None


def open_slot(store, run_id: str, agent: str, gen: int, kind: str | None = None, reason: str | None = None, now=None):
    return store.note(run_id, "agent", agent, OPEN, reason=reason or f"slot open (generation {gen})",
                      data={"gen": gen, "kind": kind}, key=f"open:{agent}:{gen}", now=now)


def close_slot(store, run_id: str, agent: str, gen: int, reason: str, now=None):
    return store.note(run_id, "agent", agent, CLOSED, reason=reason, data={"gen": gen}, key=f"close:{agent}:{gen}", now=now)


def take_slot(store, run_id: str, agent: str, gen: int, worker: dict) -> bool:
    """Whether this worker won generation ``gen`` of the slot (SPEC16: a keyed note)."""
    row = store.note(run_id, "agent", agent, TAKEN, reason=f"taken by worker {worker.get('worker')}",
                     data={"gen": gen, **worker}, key=f"slot:{agent}:{gen}")
    return row is not None


class SlotTable:
    """Each slot's current generation, state and taker, from the run's agent notes (read since
    the last refresh only)."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.cursor = 0
        self.slots: dict[str, Slot] = {}

    def refresh(self, store) -> dict[str, Slot]:
        for r in store.history(self.run_id, since_seq=self.cursor, entity="agent"):
            self.cursor = max(self.cursor, r.seq)
            action = r.data.get("action")
            if action not in (OPEN, CLOSED, TAKEN):
                continue
            s = self.slots.setdefault(r.entity_id, Slot())
            gen = int(r.data.get("gen") or 0)
            if gen < s.gen:
                continue
            if gen > s.gen:
                s.gen, s.taken = gen, None
            if action == OPEN:
                s.closed = False
                s.kind = r.data.get("kind")
            elif action == CLOSED:
                s.closed, s.why = True, r.reason
            else:
                s.taken = dict(r.data)
                s.history.append(s.taken)
        return self.slots

    def open_ones(self) -> list[str]:
        return sorted(a for a, s in self.slots.items() if s.open)
