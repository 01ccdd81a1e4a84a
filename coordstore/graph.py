"""Task-graph semantics: validation, readiness, critical path and tag routing.

Pure functions over a ``TaskGraph`` (no store), shared by every backend, the linter and the
policies, so the meaning of an edge is written down exactly once.

Happens-before relation used for validation: a start edge (blocker -> blocked); a containment
edge (child -> parent: a container completes after its children); and a container's blockers
also block every descendant (a child cannot start before its parent could). A cycle in that
relation is a deadlock, reported with the cycle named.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping

from coordstore.errors import GraphError
from coordstore.models import Dependency, Task, TaskGraph
from coordstore.paths import path_problem, refusal

# Estimates for tasks that carry none (used for critical path and by the sim agent).
DEFAULT_MS_PER_POINT = 60_000  # one story point ~ one minute of agent time at time scale 1
DEFAULT_ESTIMATE_MS = 120_000  # a task with neither estimate nor points


class GraphIndex:
    """Adjacency of one graph, built once: parents, children, start blockers, dependents."""

    def __init__(self, tasks: Iterable[Task], deps: Iterable[Dependency]):
        self.tasks: dict[str, Task] = {}
        for t in tasks:
            if t.id in self.tasks:
                raise GraphError(f"task id {t.id!r} appears twice")
            self.tasks[t.id] = t
        self.order = list(self.tasks)  # template order, the fifo order
        self.parent: dict[str, str] = {}
        self.children: dict[str, list[str]] = defaultdict(list)
        self.blockers: dict[str, set[str]] = defaultdict(set)  # own start blockers
        self.dependents: dict[str, set[str]] = defaultdict(set)
        for d in deps:
            for end in (d.from_id, d.to_id):
                if end not in self.tasks:
                    raise GraphError(f"dependency {d.from_id} -{d.type}-> {d.to_id}: no task {end!r}")
            if d.from_id == d.to_id:
                raise GraphError(f"cycle: {d.from_id} -> {d.from_id} ({d.type} edge to itself)")
            edge = d.start_edge
            if edge is None:
                if d.to_id in self.parent and self.parent[d.to_id] != d.from_id:
                    raise GraphError(
                        f"task {d.to_id!r} has two parents: {self.parent[d.to_id]!r} and {d.from_id!r}"
                    )
                if d.to_id not in self.parent:
                    self.parent[d.to_id] = d.from_id
                    self.children[d.from_id].append(d.to_id)
            else:
                blocker, blocked = edge
                self.blockers[blocked].add(blocker)
                self.dependents[blocker].add(blocked)

    def ancestors(self, task_id: str) -> list[str]:
        out, seen = [], set()
        p = self.parent.get(task_id)
        while p is not None and p not in seen:
            seen.add(p)
            out.append(p)
            p = self.parent.get(p)
        return out

    def descendants(self, task_id: str) -> list[str]:
        out, stack = [], list(self.children.get(task_id, ()))
        while stack:
            c = stack.pop()
            out.append(c)
            stack.extend(self.children.get(c, ()))
        return out

    def is_container(self, task_id: str) -> bool:
        """A task with children is a container: it is not work itself."""
        return bool(self.children.get(task_id))

    def effective_blockers(self, task_id: str) -> set[str]:
        """The task's own start blockers plus those of every ancestor."""
        out = set(self.blockers.get(task_id, ()))
        for a in self.ancestors(task_id):
            out |= self.blockers.get(a, set())
        return out

    def effective_blocker_pairs(self) -> list[tuple[str, str]]:
        """(blocker, blocked) for every task's effective blockers, deterministic order."""
        return sorted((b, t) for t in self.order for b in self.effective_blockers(t))


def happens_before(ix: GraphIndex) -> dict[str, set[str]]:
    succ: dict[str, set[str]] = defaultdict(set)
    for t in ix.order:
        for b in ix.effective_blockers(t):
            succ[b].add(t)
        p = ix.parent.get(t)
        if p is not None:
            succ[t].add(p)
    return succ


def find_cycle(nodes: list[str], succ: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A cycle as [a, b, ..., a], or None. Iterative DFS (graphs can be deep)."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(nodes, WHITE)
    for root in nodes:
        if color[root] != WHITE:
            continue
        stack = [(root, iter(sorted(succ.get(root, ()))))]
        path = [root]
        color[root] = GREY
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                path.pop()
                color[node] = BLACK
            elif color.get(nxt, WHITE) == GREY:
                return path[path.index(nxt):] + [nxt]
            elif color.get(nxt, WHITE) == WHITE:
                color[nxt] = GREY
                path.append(nxt)
                stack.append((nxt, iter(sorted(succ.get(nxt, ())))))
    return None


def validate(graph: TaskGraph) -> GraphIndex:
    """Check a graph is usable; return its index. Raises GraphError naming the problem."""
    ix = GraphIndex(graph.tasks, graph.dependencies)
    cycle = find_cycle(ix.order, happens_before(ix))
    if cycle:
        raise GraphError("cycle: " + " -> ".join(cycle))
    unsafe = unsafe_scope_entries(graph.tasks)
    if unsafe:
        more = f" (and {len(unsafe) - 1} more unsafe entr{'y' if len(unsafe) == 2 else 'ies'})" if len(unsafe) > 1 else ""
        raise GraphError(unsafe[0][1] + more)
    return ix


def unsafe_scope_entries(tasks: Iterable[Task]) -> list[tuple[str, str]]:
    """(task id, message) for each ``file_scope`` entry that is not a path within the repository's
    work tree (absolute, ``..`` out of it, inside ``.git``): the demo builder and the agents would
    write there."""
    return [(t.id, str(refusal(f"task {t.id!r}: file_scope entry", e, problem)))
            for t in tasks for e in t.file_scope if (problem := path_problem(e))]


def estimate_ms(task: Task) -> int:
    """The task's estimate, else points x DEFAULT_MS_PER_POINT, else DEFAULT_ESTIMATE_MS."""
    if task.time_estimate_ms is not None:
        return task.time_estimate_ms
    if task.points is not None:
        return int(task.points * DEFAULT_MS_PER_POINT)
    return DEFAULT_ESTIMATE_MS


def work_ids(ix: GraphIndex) -> list[str]:
    """Tasks that are work: everything but containers with children."""
    return [t for t in ix.order if not ix.is_container(t)]


def _work_durations(ix: GraphIndex, durations: Mapping[str, float] | None) -> dict[str, float]:
    return {
        t: float(durations[t]) if durations is not None and t in durations else float(estimate_ms(ix.tasks[t]))
        for t in work_ids(ix)
    }


def work_successors(ix: GraphIndex) -> dict[str, set[str]]:
    """Start-blocking successors between work tasks (containers expanded to their leaves)."""

    def leaves(t: str) -> list[str]:
        return [t] if not ix.is_container(t) else [d for d in ix.descendants(t) if not ix.is_container(d)]

    succ: dict[str, set[str]] = defaultdict(set)
    for t in work_ids(ix):
        for b in ix.effective_blockers(t):
            for leaf in leaves(b):
                succ[leaf].add(t)
    return succ


def post_order(roots: Iterable[str], succ: Mapping[str, Iterable[str]]) -> Iterator[str]:
    """Every node reachable from ``roots`` once, each after all its successors (``succ`` acyclic);
    iterative, so deep chains do not hit the recursion limit."""
    seen: set[str] = set()
    for root in roots:
        stack = [(root, False)]
        while stack:
            node, done = stack.pop()
            if node in seen:
                continue
            if done:
                seen.add(node)
                yield node
            else:
                stack.append((node, True))
                stack.extend((s, False) for s in succ.get(node, ()) if s not in seen)


def tail_lengths(ix: GraphIndex, durations: Mapping[str, float] | None = None) -> dict[str, float]:
    """For each work task: the longest duration-weighted path from its start to the graph's end.

    This is the ``critical-path`` claim order's rank. Containers get the max over their leaves.
    """
    dur = _work_durations(ix, durations)
    succ = work_successors(ix)
    memo: dict[str, float] = {}
    for node in post_order(dur, succ):
        memo[node] = dur[node] + max((memo[s] for s in succ.get(node, ())), default=0.0)
    for t in ix.order:
        if ix.is_container(t):
            memo[t] = max((memo[d] for d in ix.descendants(t) if d in memo), default=0.0)
    return memo


def critical_path(ix: GraphIndex, durations: Mapping[str, float] | None = None) -> tuple[float, list[str]]:
    """(length, task ids) of the longest duration-weighted chain of work tasks."""
    tails = tail_lengths(ix, durations)
    dur = _work_durations(ix, durations)
    succ = work_successors(ix)
    if not dur:
        return 0.0, []
    blocked = {s for ss in succ.values() for s in ss}
    node = max((t for t in dur if t not in blocked), key=lambda t: (tails[t], -ix.order.index(t)))
    length, path = tails[node], [node]
    while succ.get(node):
        node = max(succ[node], key=lambda s: (tails[s], -ix.order.index(s)))
        path.append(node)
    return length, path


def is_ready(task_id: str, ix: GraphIndex, status: Mapping[str, str]) -> bool:
    """Pending, not a container, and every effective blocker completed."""
    return (
        status.get(task_id) == "pending"
        and not ix.is_container(task_id)
        and all(status.get(b) == "completed" for b in ix.effective_blockers(task_id))
    )


def tags_fit(task: Task, agent_tags: Iterable[str] | None) -> bool:
    """An agent may take a task when it has every needed tag (None = an agent that takes anything)."""
    if agent_tags is None:
        return True
    return set(task.needed_tags) <= set(agent_tags)


def wanted_score(task: Task, agent_tags: Iterable[str] | None) -> int:
    """1 when the agent has one of the task's wanted tags (or the task wants none), else 0."""
    if not task.wanted_tags or agent_tags is None:
        return 1
    return int(bool(set(task.wanted_tags) & set(agent_tags)))
