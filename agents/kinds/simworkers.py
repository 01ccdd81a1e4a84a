"""The sim's working roles in agent-driven variants: push worker, swarm worker, hybrid worker.

Each ``step()`` is one look and what follows from it; it returns False when the look found
nothing to do (the runner waits ``seat.wait_s()`` and looks again), True otherwise.

* push worker: ``list_tasks(owner=me, status=assigned)``; the first one it was given is claimed,
  worked and completed.
* swarm worker: ``list_tasks(ready=true)``; of the tasks its tags fit, it picks (seeded) one of
  the best ``choose_among`` and claims it -- agents looking at the same list sometimes pick the
  same task, and the loser of a claim looks again at once.
* hybrid worker: ``list_tasks()``; it pulls the best ready task inside the subtrees the lead gave
  it; once they hold nothing ready and the lead has handed every subtree out, it steals a ready
  task anywhere (a ``log`` event with ``steal``).

A worker with ``decompose`` splits a claimed coarse task instead of working it (``simsplit``).
"""

from __future__ import annotations

from coordstore.models import ACTIVE

from agents.kinds.simroles import Seat, best_first, descendants, fits, top_units
from agents.kinds.simsplit import Splitter


def ready_for(listed: list[dict], tags: list[str] | None) -> list[dict]:
    """The listed tasks a worker with ``tags`` may claim now."""
    return [t for t in listed if t.get("ready") is not False and t.get("status", "pending") == "pending"
            and not t.get("container") and fits(t, tags)]


def hybrid_choice(tasks: list[dict], me: str, tags: list[str] | None) -> tuple[dict | None, list[dict]]:
    """A hybrid worker's look at every task: (the best ready task inside its subtrees, or None;
    the ready tasks it may steal -- none while the lead has a subtree left to hand out)."""
    mine = [t["id"] for t in tasks if t.get("owner") == me and t.get("container") and t.get("status") in ACTIVE]
    inside: set[str] = set()
    for c in mine:
        inside |= descendants(tasks, c)
    ready = ready_for(tasks, tags)
    own = [t for t in ready if t["id"] in inside]
    if own:
        return best_first(own, tags)[0], []
    status = {t["id"]: t.get("status") for t in tasks}
    if any(status[u] == "pending" for u in top_units(tasks)):
        return None, []  # the lead has not handed every subtree out yet
    return None, ready


class Worker:
    def __init__(self, seat: Seat):
        self.seat = seat
        self.splitter = Splitter(seat)

    def step(self) -> bool:
        raise NotImplementedError

    def take(self, tid: str) -> None:
        """Claim ``tid`` and work it (or split it); a lost claim just returns."""
        s = self.seat
        task = s.claim(tid)
        if task is None:
            return
        if self.splitter.wants(task) and self.splitter.give_back_and_split(task) != "kept":
            return
        s.work(task)

    def ready(self, listed: list[dict]) -> list[dict]:
        return ready_for(listed, self.seat.tags)

    def pick(self, ready: list[dict]) -> dict:
        """Seeded choice among the best ``choose_among``."""
        s = self.seat
        return s.rng.choice(best_first(ready, s.tags)[: s.opts.choose_among])


class PushWorker(Worker):
    def step(self) -> bool:
        s = self.seat
        mine = [t for t in s.call("list_tasks", owner=s.me, status="assigned") if not t.get("container")]
        if not mine:
            return False
        self.take(mine[0]["id"])
        return True


class SwarmWorker(Worker):
    def step(self) -> bool:
        ready = self.ready(self.seat.call("list_tasks", ready=True))
        if not ready:
            return False
        self.take(self.pick(ready)["id"])
        return True


class HybridWorker(Worker):
    def step(self) -> bool:
        s = self.seat
        own, stealable = hybrid_choice(s.call("list_tasks"), s.me, s.tags)
        if own is not None:
            self.take(own["id"])
            return True
        if not stealable:
            return False  # nothing to steal, or the lead has not handed every subtree out yet
        pick = self.pick(stealable)
        s.events.emit("log", pick["id"], msg=f"stealing {pick['id']}", level="info", steal=True)
        self.take(pick["id"])
        return True
