"""The dispatching roles: the push coordinator and the hybrid lead. They execute no task.

Each ``next()`` makes one round of decisions and returns ``WAIT`` or ``OVER``, like a worker's
policy, so the runner loop is the same for every role. The coordinator's thinking time is part
of the model: each assignment decision costs ``dispatch_latency_ms`` (default 0).

Agents that can receive work: role ``worker``, status not in ``UNAVAILABLE``. An agent with no
tags takes any task (the orchestrator stores "takes anything" as an empty tag list).
"""

from __future__ import annotations

from coordstore.errors import MOVED_ON
from coordstore.graph import GraphIndex, estimate_ms, tags_fit, wanted_score
from coordstore.models import ACTIVE, TERMINAL, UNAVAILABLE, Task

from agents.policies.base import AGAIN, OVER, WAIT, Policy, PolicyEnv, flag_option, hybrid_units, ms_option, order_option
from agents.policies.collisions import Collisions, Screen

SETTLE_MS = 100  # the lead waits until the worker set has not changed for this long (they
# are registered at spawn, well before the lead has imported anything, so this is a safety net)


def _workers(env: PolicyEnv) -> list:
    return [a for a in env.store.list_agents(env.run_id) if a.role == "worker" and a.status not in UNAVAILABLE]


class PushCoordinator(Policy):
    """Assigns every task: ready tasks best first, each to an idle worker whose tags fit."""

    name = "push"

    def __init__(self, env: PolicyEnv):
        super().__init__(env)
        self.order = order_option(env, "push", "priority")
        self.latency_s = ms_option(env, "push", "dispatch_latency_ms", 0) / 1000.0
        self.last_given: dict[str, int] = {}  # worker -> round it last got a task (fairness)
        self.round = 0
        # avoid_conflicts: hold back ready tasks whose files a task in progress holds
        self.collisions = Collisions(env) if flag_option(env, "push", "avoid_conflicts") else None

    def next(self) -> str:
        e = self.env
        tasks, ix = e.graph()
        if e.run_over(tasks):
            return OVER
        self.round += 1
        busy = {t.owner for t in tasks.values() if t.status in ACTIVE and not ix.is_container(t.id)}
        idle = [w for w in _workers(e) if w.id not in busy]
        if not idle:
            return WAIT
        made = 0
        screen = Screen(self.collisions.held(tasks)) if self.collisions is not None else None
        for task in e.store.ready_tasks(e.run_id, order=self.order):
            fit = [w for w in idle if tags_fit(task, w.tags or None)]
            if not fit or (screen is not None and not screen.admits(task)):
                continue
            if task.attempt:  # requeued: give it to another worker than the one it failed on, if any fits
                failed_on = self._previous_owner(task.id)
                fit = [w for w in fit if w.id != failed_on] or fit
            # wanted-tag match first, then whoever waited longest, then by id
            w = max(fit, key=lambda a: (wanted_score(task, a.tags or None), -self.last_given.get(a.id, 0)))
            if self.latency_s:
                e.pulse.sleep(self.latency_s)  # the coordinator deciding
            try:
                e.store.assign(e.run_id, task.id, w.id, by=e.agent_id)
            except MOVED_ON:
                continue
            e.events.step("assign", args={"task": task.id, "to": w.id})
            if screen is not None:
                screen.take(task)
            self.last_given[w.id] = self.round
            idle.remove(w)
            made += 1
            if not idle:
                break
        if screen is not None:
            self.collisions.note(screen)
        return WAIT if made == 0 else AGAIN

    def _previous_owner(self, task_id: str) -> str | None:
        """Who held the task when it was last taken back (the requeue row's ``data.previous``)."""
        rows = [r for r in self.env.store.history(self.env.run_id, entity="task", entity_id=task_id)
                if r.to_state == "pending" and r.from_state in ACTIVE]
        return (rows[-1].data or {}).get("previous") if rows else None


class HybridLead(Policy):
    """Hands top-level containers to workers, balanced by estimated work (longest first to the
    least loaded); reassigns a container that came back (its worker died)."""

    name = "hybrid"

    def __init__(self, env: PolicyEnv):
        super().__init__(env)
        self.latency_s = ms_option(env, "hybrid", "dispatch_latency_ms", 0) / 1000.0
        self.settle_ms = ms_option(env, "hybrid", "settle_ms", SETTLE_MS)
        self.settled = False
        self._seen: tuple[frozenset, int] | None = None

    def _settle(self, workers: list) -> bool:
        """True once the set of workers stopped changing (they register as they start), on the
        pulse's clock (the one the runner waits on)."""
        ids = frozenset(w.id for w in workers)
        now = self.env.pulse.clock()
        if self._seen is None or self._seen[0] != ids:
            self._seen = (ids, now)
        self.settled = bool(ids) and now - self._seen[1] >= self.settle_ms
        return self.settled

    def work_of(self, ix: GraphIndex, tasks: dict[str, Task], container: str) -> int:
        """Estimated work left in a container: its unfinished leaves."""
        return sum(estimate_ms(tasks[d]) for d in ix.descendants(container)
                   if not ix.is_container(d) and tasks[d].status not in TERMINAL)

    def next(self) -> str:
        e = self.env
        tasks, ix = e.graph()
        if e.run_over(tasks):
            return OVER
        workers = _workers(e)
        if not workers or (not self.settled and not self._settle(workers)):
            return WAIT
        units = hybrid_units(ix)
        pending = sorted((u for u in units if tasks[u].status == "pending"),
                         key=lambda u: (-self.work_of(ix, tasks, u), ix.order.index(u)))
        if not pending:
            return WAIT
        load = {w.id: 0 for w in workers}
        for u in units:
            if tasks[u].status in ACTIVE and tasks[u].owner in load:
                load[tasks[u].owner] += self.work_of(ix, tasks, u)
        for u in pending:
            w = min(load, key=lambda a: (load[a], a))
            if self.latency_s:
                e.pulse.sleep(self.latency_s)
            try:
                e.store.assign(e.run_id, u, w, by=e.agent_id)
            except MOVED_ON:
                continue
            e.events.step("assign", args={"task": u, "to": w})
            load[w] += self.work_of(ix, tasks, u)
        return WAIT
