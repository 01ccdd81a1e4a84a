"""The policies of agents that execute tasks: pull, solo, relay, and the workers of push and hybrid."""

from __future__ import annotations

from coordstore.models import Task

from agents.policies.base import OVER, WAIT, Policy, PolicyEnv, flag_option, hybrid_units, order_option
from agents.policies.collisions import Collisions


class Pull(Policy):
    """Claim the best ready task this agent's tags fit; ``within`` narrows it to a subtree."""

    name = "pull"
    default_order = "priority"

    def __init__(self, env: PolicyEnv):
        super().__init__(env)
        self.order = order_option(env, self.name, self.default_order)
        # avoid_conflicts: hold back ready tasks whose files a task in progress holds
        self.collisions = Collisions(env) if flag_option(env, self.name, "avoid_conflicts") else None

    def unpark(self) -> Task | str | None:
        """A task parked after a race on the same files (``collisions``): it, once free; WAIT
        while not; None without one."""
        return self.collisions.release() if self.collisions is not None else None

    def won(self, task: Task) -> None:
        """Called with each task this agent just claimed (before it may be parked)."""

    def claim(self, within: str | None = None) -> Task | None:
        """Look, then claim; the claim names what the look saw best (``seen``), so a race lost
        between the two is a ``lost`` claim row, not a silent second choice. With
        ``avoid_conflicts``: the best task that collides with none in progress, claimed by name."""
        e = self.env
        if self.collisions is not None:
            task = self.collisions.claim(self.order, within)
            if task is None:
                return None
            self.won(task)
            return None if self.collisions.park_if_raced(task) else task
        if within is None:  # the common case: the best one only, not every ready task built
            seen = e.store.best_ready(e.run_id, agent_tags=e.tags, order=self.order)
        else:
            inside = set(e.index().descendants(within))
            seen = next((t.id for t in e.store.ready_tasks(e.run_id, agent_tags=e.tags, order=self.order) if t.id in inside), None)
        if seen is None:
            return None
        task = e.store.claim_next(e.run_id, e.agent_id, agent_tags=e.tags, order=self.order, within=within, seen=seen)
        if task is not None:
            self.won(task)
        return task

    def next(self) -> Task | str:
        task = self.unpark() or self.claim()
        if task is not None:
            return task
        return OVER if self.env.run_over() else WAIT


class Solo(Pull):
    """One agent does everything, in dependency order, longest remaining chain first."""

    name = "solo"
    default_order = "critical-path"


class Relay(Pull):
    """Specialists pull what their tags allow; taking over another specialist's output is a handoff."""

    name = "relay"

    def won(self, task: Task) -> None:
        self.record_handoffs(task)

    def record_handoffs(self, task: Task) -> None:
        e = self.env
        tasks, ix = e.graph()
        leaves: list[str] = []
        for b in sorted(ix.effective_blockers(task.id)):
            leaves += [b] if not ix.is_container(b) else sorted(d for d in ix.descendants(b) if not ix.is_container(d))
        previous: dict[str, list[str]] = {}
        for b in leaves:
            who = tasks[b].completed_by if b in tasks else None
            if who and who != e.agent_id:
                previous.setdefault(who, []).append(b)
        for who, blockers in sorted(previous.items()):
            # not a status change: a note on the task (its row repeats the status, data.action = handoff)
            e.store.note(
                e.run_id, "task", task.id, "handoff", reason=f"handoff from {who}", agent=e.agent_id,
                data={"from": who, "to": e.agent_id, "blockers": blockers, "attempt": task.attempt},
                key=f"handoff:{task.id}:{task.attempt}:{who}",
            )
            e.events.log(f"handoff of {task.id} from {who}", task=task.id)


class PushWorker(Policy):
    """A push worker never claims: it runs what the coordinator assigned to it."""

    name = "push"

    def next(self) -> Task | str:
        e = self.env
        tasks, ix = e.graph()
        mine = [t for t in tasks.values() if t.status == "assigned" and t.owner == e.agent_id and not ix.is_container(t.id)]
        if mine:
            return mine[0]
        return OVER if e.run_over(tasks) else WAIT


class HybridWorker(Pull):
    """Pull inside the containers the lead gave it; when they have nothing ready, steal anywhere
    (only once the lead has handed out every unit, so the initial split is the lead's)."""

    name = "hybrid"

    def next(self) -> Task | str:

        e = self.env
        parked = self.unpark()
        if parked is not None:
            return parked
        tasks, ix = e.graph()
        if e.run_over(tasks):
            return OVER
        mine = [t.id for t in tasks.values() if t.status == "assigned" and t.owner == e.agent_id and ix.is_container(t.id)]
        for c in mine:
            task = self.claim(within=c)
            if task is not None:
                return task
            if self.collisions is not None and self.collisions.parked is not None:
                return WAIT  # claimed, and parked: one task at a time
        if any(tasks[u].status == "pending" for u in hybrid_units(ix)):
            return WAIT  # the lead has not handed everything out yet
        task = self.claim()
        if task is not None:
            inside = any(task.id in set(ix.descendants(c)) for c in mine)
            if not inside:
                e.events.emit("log", task.id, msg=f"stealing {task.id}", level="info", steal=True)
            return task
        return WAIT
