"""Best-of-N: one task to N agents, each on its own branch from the same base; the task's verify
command picks the winner.

The store's rule stays: a task has one owner and completes once. The agent that claims a ready
task (pull, by ``order``) *holds* it and opens a *round* for that attempt of it; N - 1 other
agents *enter* the round and work the same task beside the holder. A round is notes on the task
(rows that repeat its status, ``data.action``), keyed ``bestof:<task>:<attempt>:...`` so each is
written once:

* ``bestof-open``   (the holder) the round's base commit and N; the holder is slot 1;
* ``bestof-join``   (an entrant) slot 2..N: a slot's key is taken by one agent only (the store
                    refuses a second row with a key), which is how N bounds a round atomically;
* ``bestof-attempt`` (every entrant, the holder too) its outcome: verify passed or why not, the
  commit and the branch that keeps it, the size of its change, its time, tokens and cost;
* ``bestof-round``  (the holder, once the task completed or failed) the winner and the attempts.

An idle agent enters the oldest round that still has a free slot and that it has not tried yet
before it claims anything new; a holder does not claim another task while its round is open, but
enters others' rounds while it waits for its own (so no two half-filled rounds wait on each other).
What a round's attempts do in git and how the holder closes it is ``agents.bestof``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from coordstore.graph import tags_fit
from coordstore.models import ACTIVE, UNAVAILABLE, Task, works

from agents.policies.base import OVER, WAIT, PolicyEnv
from agents.policies.workers import Pull

DEFAULT_N = 3
OPEN, JOIN, ATTEMPT, ROUND = "bestof-open", "bestof-join", "bestof-attempt", "bestof-round"


def round_key(task_id: str, attempt: int, part: str) -> str:
    return f"bestof:{task_id}:{attempt}:{part}"


@dataclass
class Round:
    """One round (a task's attempt) as its notes tell it."""

    task: str
    attempt: int
    base: str | None = None
    n: int = DEFAULT_N
    holder: str | None = None
    opened_ms: int = 0
    entrants: dict[str, int] = field(default_factory=dict)  # agent -> slot
    joined_ms: dict[str, int] = field(default_factory=dict)
    attempts: dict[str, dict[str, Any]] = field(default_factory=dict)  # agent -> its bestof-attempt data
    closed: dict[str, Any] | None = None  # the bestof-round data

    @property
    def free_slots(self) -> list[int]:
        return [s for s in range(2, self.n + 1) if s not in self.entrants.values()]


def read_round(rows, task_id: str, attempt: int) -> Round:
    """The round of ``task_id``'s ``attempt`` from the task's history rows."""
    r = Round(task_id, attempt)
    for row in rows:
        d = row.data or {}
        if not row.is_note or d.get("attempt") != attempt or d.get("action") not in (OPEN, JOIN, ATTEMPT, ROUND):
            continue
        action, who = d["action"], row.agent or ""
        if action == OPEN:
            r.base, r.n, r.holder, r.opened_ms = d.get("base"), int(d.get("n", DEFAULT_N)), who, row.ts_ms
            r.entrants[who] = 1
            r.joined_ms[who] = row.ts_ms
        elif action == JOIN:
            r.entrants[who] = int(d.get("slot", 0))
            r.joined_ms[who] = row.ts_ms
        elif action == ATTEMPT:
            r.attempts[who] = d
        else:
            r.closed = d
    return r


def n_option(options: dict[str, Any]) -> int:
    return int(options.get("n", DEFAULT_N))


class BestOf(Pull):
    """Enter an open round first; else claim the best ready task and hold its round."""

    name = "best_of"

    def __init__(self, env: PolicyEnv):
        super().__init__(env)
        self.n = n_option(env.options)
        self.wait_ms = env.option("wait_ms", None)

    def next(self) -> Task | str | "Entry":
        entry = self.enter()
        if entry is not None:
            return entry
        task = self.claim()
        if task is not None:
            return task
        return OVER if self.env.run_over() else WAIT

    def enter(self, besides: str | None = None) -> "Entry | None":
        """Take a free slot in the oldest open round of a task this agent's tags fit and that it
        has not tried (``besides``: the task this agent holds itself), or None."""
        e = self.env
        tasks, ix = e.graph()
        rounds = []
        for t in tasks.values():
            if t.status not in ACTIVE or ix.is_container(t.id) or t.owner in (None, e.agent_id) or t.id == besides:
                continue
            if not tags_fit(t, e.tags):
                continue
            rnd = read_round(e.store.history(e.run_id, entity="task", entity_id=t.id), t.id, t.attempt)
            if rnd.base and rnd.closed is None and rnd.free_slots and e.agent_id not in rnd.entrants and e.agent_id not in rnd.attempts:
                rounds.append((rnd.opened_ms, t.id, t, rnd))
        for _, _, t, rnd in sorted(rounds, key=lambda x: x[:2]):
            for slot in rnd.free_slots:
                row = e.store.note(e.run_id, "task", t.id, JOIN, agent=e.agent_id, reason=f"best-of: slot {slot} of {rnd.n}",
                                   data={"attempt": t.attempt, "slot": slot}, key=round_key(t.id, t.attempt, f"slot{slot}"))
                if row is not None:
                    return Entry(t, t.attempt, rnd.base or "", slot)
        return None

    def live_workers(self, task: Task) -> int:
        """Working agents that can still enter a round of ``task``: alive (not dead, stopped,
        killed, stalled ...) and with the tags it needs (no tags: any task)."""
        return sum(1 for a in self.env.store.list_agents(self.env.run_id)
                   if works(a.role) and a.status not in UNAVAILABLE and tags_fit(task, a.tags or None))


@dataclass
class Entry:
    """A slot this agent took in another agent's round: work ``task`` from ``base``."""

    task: Task
    attempt: int
    base: str
    slot: int
