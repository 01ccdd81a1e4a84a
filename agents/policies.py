"""Distribution policies: which task an agent runs next. Selected by name, enforced in code.

``policy.next()`` returns a ``Task`` the agent now owns (status ``assigned``, owner = the agent),
``WAIT`` (nothing for it now: the runner sleeps ``poll_ms``), ``AGAIN`` (a dispatcher made progress:
ask again at once) or ``OVER`` (every task is terminal, or the run was closed). Roles per policy:

=========  ==========================================  =====================================
policy     executes tasks                              hands out tasks
=========  ==========================================  =====================================
pull       worker: ``claim_next(order)``               -
solo       solo (one agent): pull, critical-path first -
relay      specialist: pull routed by its tags;        -
           records ``handoff`` notes
push       worker: only tasks assigned to it           coordinator (``dispatch.PushCoordinator``)
hybrid     worker: pull within its containers, steal   lead (``dispatch.HybridLead``)
=========  ==========================================  =====================================

Pulling agents look with the read-only ``ready_tasks`` before they claim, so an idle agent
polling an empty queue does not write an ``empty`` claim row every ``poll_ms``; a claim that
loses a race is still recorded by the store (``lost``), which is what contention measures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from coordstore.errors import InputError
from coordstore.models import TERMINAL, Task
from coordstore.numbers import is_number

WAIT = "wait"  # nothing to do now: sleep poll_ms
OVER = "over"  # every task terminal (or the run closed): finish
AGAIN = "again"  # progress was made (e.g. assignments): ask again at once
ORDERS = ("priority", "critical-path", "fifo")
# policy -> options it understands (a typo in an experiment must not silently use a default)
OPTIONS: dict[str, tuple[str, ...]] = {
    "pull": ("order",),
    "solo": ("order",),
    "relay": ("order",),
    "push": ("order", "dispatch_latency_ms"),
    "hybrid": ("order", "dispatch_latency_ms", "settle_ms"),
}


@dataclass
class PolicyEnv:
    """What a policy may use: the store, who the agent is, its options, and how to wait."""

    store: Any
    run_id: str
    agent_id: str
    role: str
    tags: list[str] | None
    options: dict[str, Any]
    pulse: Any  # agents.pulse.Pulse: sleep() keeps the heartbeats going
    events: Any  # agents.events.EventWriter
    _index: Any = field(default=None, repr=False)

    def index(self):
        """The run's graph index (the structure never changes during a run), built once."""
        if self._index is None:
            from coordstore.graph import GraphIndex

            self._index = GraphIndex(self.store.list_tasks(self.run_id), self.store.dependencies(self.run_id))
        return self._index

    def tasks(self) -> dict[str, Task]:
        return {t.id: t for t in self.store.list_tasks(self.run_id)}

    def run_over(self, tasks: dict[str, Task] | None = None) -> bool:
        """Every task terminal, or the run no longer running (closed or interrupted)."""
        tasks = self.tasks() if tasks is None else tasks
        if all(t.status in TERMINAL for t in tasks.values()):
            return True
        return self.store.get_run(self.run_id).status != "running"

    def option(self, key: str, default: Any) -> Any:
        return self.options.get(key, default)


def _order(env: PolicyEnv, policy: str, default: str) -> str:
    return _order_value(policy, env.option("order", default))


def _order_value(policy: str, order: Any) -> str:
    if order not in ORDERS:
        raise InputError(f"policy {policy}: policy_options.order={order!r} is not one of {', '.join(ORDERS)}")
    return order


def _ms(env: PolicyEnv, policy: str, key: str, default: int) -> int:
    return _ms_value(policy, key, env.option(key, default))


def _ms_value(policy: str, key: str, v: Any) -> int:
    if not is_number(v) or v < 0:
        raise InputError(f"policy {policy}: policy_options.{key}={v!r} must be a number >= 0 (milliseconds)")
    return int(v)


def check_options(name: str, options: dict[str, Any]) -> None:
    """The policy's name and options, checked as its agents will read them (``order`` one of
    ORDERS, every other option milliseconds): at plan time, before a run directory exists."""
    if name not in OPTIONS:
        raise InputError(f"policy {name!r} is unknown; known: {', '.join(OPTIONS)}")
    unknown = sorted(set(options) - set(OPTIONS[name]))
    if unknown:
        raise InputError(f"policy {name}: unknown policy_options.{unknown[0]} (known: {', '.join(OPTIONS[name])})")
    for key, v in options.items():
        _order_value(name, v) if key == "order" else _ms_value(name, key, v)


class Policy:
    name = ""

    def __init__(self, env: PolicyEnv):
        self.env = env

    def next(self) -> Task | str:
        raise NotImplementedError


class Pull(Policy):
    """Claim the best ready task this agent's tags fit; ``within`` narrows it to a subtree."""

    name = "pull"
    default_order = "priority"

    def __init__(self, env: PolicyEnv):
        super().__init__(env)
        self.order = _order(env, self.name, self.default_order)

    def claim(self, within: str | None = None) -> Task | None:
        e = self.env
        ready = e.store.ready_tasks(e.run_id, agent_tags=e.tags, order=self.order)
        if within is not None:
            inside = set(e.index().descendants(within))
            ready = [t for t in ready if t.id in inside]
        if not ready:
            return None
        return e.store.claim_next(e.run_id, e.agent_id, agent_tags=e.tags, order=self.order, within=within)

    def next(self) -> Task | str:
        task = self.claim()
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

    def next(self) -> Task | str:
        task = self.claim()
        if task is None:
            return OVER if self.env.run_over() else WAIT
        self.record_handoffs(task)
        return task

    def record_handoffs(self, task: Task) -> None:
        e = self.env
        ix = e.index()
        tasks = e.tasks()
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
        tasks = e.tasks()
        ix = e.index()
        mine = [t for t in tasks.values() if t.status == "assigned" and t.owner == e.agent_id and not ix.is_container(t.id)]
        if mine:
            return mine[0]
        return OVER if e.run_over(tasks) else WAIT


class HybridWorker(Pull):
    """Pull inside the containers the lead gave it; when they have nothing ready, steal anywhere
    (only once the lead has handed out every unit, so the initial split is the lead's)."""

    name = "hybrid"

    def next(self) -> Task | str:
        from agents.dispatch import hybrid_units

        e = self.env
        tasks = e.tasks()
        if e.run_over(tasks):
            return OVER
        ix = e.index()
        mine = [t.id for t in tasks.values() if t.status == "assigned" and t.owner == e.agent_id and ix.is_container(t.id)]
        for c in mine:
            task = self.claim(within=c)
            if task is not None:
                return task
        if any(tasks[u].status == "pending" for u in hybrid_units(ix)):
            return WAIT  # the lead has not handed everything out yet
        task = self.claim()
        if task is not None:
            inside = any(task.id in set(ix.descendants(c)) for c in mine)
            if not inside:
                e.events.emit("log", task.id, msg=f"stealing {task.id}", level="info", steal=True)
            return task
        return WAIT


WORKER_POLICIES = {"pull": Pull, "solo": Solo, "relay": Relay, "push": PushWorker, "hybrid": HybridWorker}


def make_policy(name: str, env: PolicyEnv) -> Policy:
    """The policy object for this agent's role under policy ``name`` (``InputError`` if the pair
    makes no sense, e.g. a coordinator under pull)."""
    check_options(name, env.options)
    if env.role in ("coordinator", "lead"):
        from agents.dispatch import HybridLead, PushCoordinator

        wanted = {"coordinator": ("push", PushCoordinator), "lead": ("hybrid", HybridLead)}[env.role]
        if name != wanted[0]:
            raise InputError(f"role {env.role} only exists under policy {wanted[0]}, not {name}")
        return wanted[1](env)
    return WORKER_POLICIES[name](env)
