"""The sim's dispatching roles in agent-driven variants: the push coordinator and the hybrid lead.
They execute no task; every decision is a tool call (a turn: ``simroles``), so what coordination
costs comes from the calls they make, not from a configured constant.

* push coordinator: each look is ``list_tasks(status=pending, ready=true)`` then ``list_agents``;
  ready tasks, best first, go to idle workers whose tags fit (``update(task, assignee=w)``), a
  wanted-tag match first, then whoever waited longest. A task that comes back pending (its worker
  failed it and the supervisor requeued it, or its worker died) is assigned again, to another
  worker when one fits. It never stops by itself: the runner ends it when every task is terminal.
* hybrid lead: each look is ``list_tasks()``; while a subtree waits to be handed out it asks
  ``list_agents`` too, and once the set of workers is the same two looks in a row it hands the
  top-level subtrees out, biggest first to the least loaded worker (``update(container,
  assignee=w)``), like the orch policy ``agents.policies.dispatch.HybridLead``; a subtree that
  comes back pending (its worker died) goes to another worker. With ``decompose`` it first splits every coarse pending leaf
  (``create_tree``), before any subtree is handed out (seed 004's pre-decomposed variant).
"""

from __future__ import annotations

from coordstore.models import ACTIVE, TERMINAL, UNAVAILABLE

from agents.kinds.simroles import Seat, best_first, descendants, fits, top_units, wanted_score
from agents.kinds.simsplit import Splitter, coarse
from agents.toolclient import ToolRefused


def _workers(agents: list[dict]) -> list[dict]:
    return [a for a in agents if a.get("role") == "worker" and a.get("status") not in UNAVAILABLE]


def idle_workers(agents: list[dict]) -> list[dict]:
    """The workers of a ``list_agents`` answer that hold no task."""
    return [a for a in _workers(agents) if not a.get("tasks")]


def worker_ids(agents: list[dict]) -> list[str]:
    return sorted(a["id"] for a in _workers(agents))


def pick_worker(task: dict, idle: list[dict], before: str | None, last_given: dict[str, int]) -> dict | None:
    """The push coordinator's choice for ``task`` among ``idle`` workers: one whose tags fit, not the
    one it came back from (``before``) when another fits, a wanted-tag match first, then whoever
    was given a task longest ago (``last_given``: worker -> the look it last got one in)."""
    fit = [a for a in idle if fits(task, a.get("tags"))]
    if not fit:
        return None
    fit = [a for a in fit if a["id"] != before] or fit
    return max(fit, key=lambda a: (wanted_score(task, a.get("tags")), -last_given.get(a["id"], 0)))


def coarse_leaves(tasks: list[dict], split, tried: set[str]) -> list[dict]:
    """Pending leaves a lead splits before handing subtrees out (each tried once)."""
    return [t for t in tasks if t.get("status") == "pending" and not t.get("container")
            and coarse(split, t.get("points"), t.get("tags")) and t["id"] not in tried]


def subtree_plan(tasks: list[dict], workers: list[str]) -> tuple[list[str], dict[str, float], dict[str, float]]:
    """The hybrid lead's look: (the pending subtrees, biggest first; the work left in each subtree;
    the work each worker holds in the subtrees it has)."""
    by_id = {t["id"]: t for t in tasks}
    units = top_units(tasks)
    work = {u: work_of(tasks, by_id, u) for u in units}
    load = {w: 0.0 for w in workers}
    for u in units:
        owner = by_id[u].get("owner")
        if by_id[u].get("status") in ACTIVE and owner in load:
            load[owner] += work[u]
    pending = [u for u in units if by_id[u].get("status") == "pending"]
    return sorted(pending, key=lambda u: (-work[u], units.index(u))), work, load


def pick_holder(unit: str, workers: list[str], had: str | None, load: dict[str, float]) -> str:
    """Who gets subtree ``unit``: the least loaded worker, not the one it came back from (``had``)."""
    candidates = [w for w in workers if w != had] or workers
    return min(candidates, key=lambda a: (load[a], a))


def work_of(tasks: list[dict], by_id: dict[str, dict], unit: str) -> float:
    """Points left in a subtree: its unfinished leaves (a leaf without points counts one)."""
    return sum(by_id[d].get("points") or 1 for d in descendants(tasks, unit)
               if not by_id[d].get("container") and by_id[d].get("status") not in TERMINAL)


class Coordinator:
    def __init__(self, seat: Seat):
        self.seat = seat
        self.gave: dict[str, str] = {}  # task -> the worker it was last given to
        self.last_given: dict[str, int] = {}  # worker -> the look it last got a task in (fairness)
        self.looks = 0

    def step(self) -> bool:
        s = self.seat
        ready = [t for t in s.call("list_tasks", status="pending", ready=True) if not t.get("container")]
        if not ready:
            return False
        idle = idle_workers(s.call("list_agents"))
        if not idle:
            return False
        self.looks += 1
        made = 0
        for t in best_first(ready, None):
            before = self.gave.get(t["id"])
            w = pick_worker(t, idle, before, self.last_given)
            if w is None:
                continue
            done = s.try_call("update", t["id"], task=t["id"], assignee=w["id"])
            s.settle(t["id"])
            if isinstance(done, ToolRefused):
                continue
            if before is not None:
                s.events.log(f"reassigning {t['id']} (came back from {before}) to {w['id']}", task=t["id"])
            self.gave[t["id"]] = w["id"]
            self.last_given[w["id"]] = self.looks
            idle.remove(w)
            made += 1
            if not idle:
                break
        return made > 0


class Lead:
    def __init__(self, seat: Seat):
        self.seat = seat
        self.splitter = Splitter(seat)
        self.workers_seen: list[str] | None = None
        self.had: dict[str, str] = {}  # subtree -> the worker it was last given to

    def step(self) -> bool:
        s = self.seat
        tasks = s.call("list_tasks")
        sp = self.splitter
        leaves = coarse_leaves(tasks, sp.split, sp.tried)
        if leaves:
            for t in leaves:  # read each first: its estimate is not in the listing
                sp.create(s.record(s.call("get", t["id"], task=t["id"]), t["id"]))
            return True
        status = {t["id"]: t.get("status") for t in tasks}
        if not any(status[u] == "pending" for u in top_units(tasks)):
            return False
        workers = worker_ids(s.call("list_agents"))
        if not workers or workers != self.workers_seen:
            self.workers_seen = workers  # the workers register as they spawn: wait until the set holds
            return False
        pending, work, load = subtree_plan(tasks, workers)
        for u in pending:
            w = pick_holder(u, workers, self.had.get(u), load)
            done = s.try_call("update", u, task=u, assignee=w)
            s.settle(u)
            if isinstance(done, ToolRefused):
                continue
            self.had[u] = w
            load[w] += work[u]
        return True

