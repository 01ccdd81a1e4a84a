"""What every policy shares: the answers ``next()`` gives, the options each policy understands
and their checks, the environment a policy may use. ``agents.policies`` says what each policy does."""


from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from coordstore.errors import InputError
from coordstore.graph import GraphIndex
from coordstore.models import TASK_STATUSES, TERMINAL, Task
from coordstore.numbers import is_number

WAIT = "wait"  # nothing to do now: sleep poll_ms
OVER = "over"  # every task terminal (or the run closed): finish
AGAIN = "again"  # progress was made (e.g. assignments): ask again at once
ORDERS = ("priority", "critical-path", "fifo")
OPEN = tuple(s for s in TASK_STATUSES if s not in TERMINAL)
# policy -> options it understands (a typo in an experiment must not silently use a default)
OPTIONS: dict[str, tuple[str, ...]] = {
    "pull": ("order", "avoid_conflicts"),
    "solo": ("order",),
    "relay": ("order", "avoid_conflicts"),
    "push": ("order", "dispatch_latency_ms", "avoid_conflicts"),
    "hybrid": ("order", "dispatch_latency_ms", "settle_ms", "avoid_conflicts"),
    "best_of": ("n", "order", "wait_ms"),  # n: agents per task (agents.policies.bestof)
}
FLAGS = ("avoid_conflicts",)  # options that are true or false (``agents.policies.collisions``)
MAX_N = 256  # best-of n: never more than a variant's agents (checked at plan time, where they are known)


def run_over(store, run_id: str, tasks: Iterable[Task] | None = None) -> bool:
    """Every task terminal, or the run no longer running (closed or interrupted): when a runner,
    whatever decides its tasks, is done. ``tasks``: the run's tasks if the caller just read them."""
    if tasks is None:  # counted, not read: idle runners ask this every poll
        if store.count_tasks(run_id, status=OPEN) == 0:
            return True
    elif all(t.status in TERMINAL for t in tasks):
        return True
    return store.get_run(run_id).status != "running"


@dataclass
class PolicyEnv:
    """What a policy may use: the store, who the agent is, its options, and how to wait."""

    store: Any
    run_id: str
    agent_id: str
    role: str
    tags: list[str] | None
    options: dict[str, Any]
    pulse: Any  # agents.pulse.Pulse: sleep() keeps the heartbeats going; its clock is the policy's
    events: Any  # agents.events.EventWriter
    _index: Any = field(default=None, repr=False)
    _edges: Any = field(default=None, repr=False)

    def index(self, *task_ids: str) -> GraphIndex:
        """The run's graph index, rebuilt when the graph grew: agents add tasks and link or unlink
        edges mid-run (coordination tools), so it is rebuilt when the edges changed (one cheap
        read per call) or when one of ``task_ids`` is not in it (a task added with no edge)."""
        edges = self.store.dependencies(self.run_id)
        stale = self._index is None or edges != self._edges or any(t not in self._index.tasks for t in task_ids)
        if stale:
            self._index = GraphIndex(self.store.list_tasks(self.run_id), edges)
            self._edges = edges
        return self._index

    def tasks(self) -> dict[str, Task]:
        return {t.id: t for t in self.store.list_tasks(self.run_id)}

    def graph(self) -> tuple[dict[str, Task], GraphIndex]:
        """The tasks and an index that knows each of them and nothing more: tasks are read again
        if the graph grew between the two reads (tasks are only ever added)."""
        tasks = self.tasks()
        ix = self.index(*tasks)
        if len(ix.tasks) > len(tasks):
            tasks = self.tasks()
        return tasks, ix

    def run_over(self, tasks: dict[str, Task] | None = None) -> bool:
        return run_over(self.store, self.run_id, None if tasks is None else tasks.values())

    def option(self, key: str, default: Any) -> Any:
        return self.options.get(key, default)


def order_option(env: PolicyEnv, policy: str, default: str) -> str:
    return _order_value(policy, env.option("order", default))


def _order_value(policy: str, order: Any) -> str:
    if order not in ORDERS:
        raise InputError(f"policy {policy}: policy_options.order={order!r} is not one of {', '.join(ORDERS)}")
    return order


def ms_option(env: PolicyEnv, policy: str, key: str, default: int) -> int:
    return _ms_value(policy, key, env.option(key, default))


def _ms_value(policy: str, key: str, v: Any) -> int:
    if not is_number(v) or v < 0:
        raise InputError(f"policy {policy}: policy_options.{key}={v!r} must be a number >= 0 (milliseconds)")
    return int(v)


def flag_option(env: PolicyEnv, policy: str, key: str) -> bool:
    return _flag_value(policy, key, env.option(key, False)) if key in OPTIONS.get(policy, ()) else False


def _flag_value(policy: str, key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise InputError(f"policy {policy}: policy_options.{key}={v!r} must be true or false")
    return v


def check_options(name: str, options: dict[str, Any]) -> None:
    """The policy's name and options, checked as its agents will read them (``order`` one of
    ORDERS, FLAGS true or false, best-of's ``n`` a count of agents, every other option
    milliseconds): at plan time, before a run directory exists."""
    if name not in OPTIONS:
        raise InputError(f"policy {name!r} is unknown; known: {', '.join(OPTIONS)}")
    unknown = sorted(set(options) - set(OPTIONS[name]))
    if unknown:
        raise InputError(f"policy {name}: unknown policy_options.{unknown[0]} (known: {', '.join(OPTIONS[name])})")
    for key, v in options.items():
        if key == "order":
            _order_value(name, v)
        elif key in FLAGS:
            _flag_value(name, key, v)
        elif key == "n":
            _n_value(name, v)
        else:
            _ms_value(name, key, v)


def _n_value(policy: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 2 <= v <= MAX_N:
        raise InputError(f"policy {policy}: policy_options.n={v!r} must be an integer from 2 to {MAX_N} (agents per task)")
    return v


class Policy:
    name = ""

    def __init__(self, env: PolicyEnv):
        self.env = env

    def next(self) -> Task | str:
        raise NotImplementedError


def hybrid_units(ix: GraphIndex) -> list[str]:
    """The subtrees a hybrid lead hands out: the top-level containers. A graph under a single
    root container is split one level lower (repeatedly), or one worker would get everything."""
    units = [t for t in ix.order if t not in ix.parent and ix.is_container(t)]
    while len(units) == 1:
        inner = [c for c in ix.children.get(units[0], ()) if ix.is_container(c)]
        if not inner:
            break
        units = inner
    return units
