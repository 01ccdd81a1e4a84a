"""A graph that grows during a run: the rules of ``add_tasks``, ``link`` and ``unlink``, written once
for every backend (``base.py`` documents the verbs).

A backend hands these functions the run's graph as it stands (tasks in template order, edges in
import order, current statuses); they validate the grown graph as one (``graph.validate``: dangling
ids, two parents, a cycle named, unsafe file_scope), apply the status rules below and say which
history rows to write. The backend then stores the new tasks and edges and rebuilds what readiness
depends on (effective blockers, containers, blocker counts) inside the same atomic step.

Status rules (the simplest safe ones):
* children go under a pending task (a leaf becomes a container: no longer work) or a container
  that is not terminal (an assigned container's owner owns the grown subtree too);
* an edge may newly block only a pending task (work already taken is not taken back);
* a failed or cancelled task blocks nothing new (it would never complete);
* only start edges (blocks, follows) are linked or unlinked; tasks get a parent when added.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from coordstore.errors import InvalidTransition, NotFound
from coordstore.graph import GraphIndex, validate
from coordstore.models import TERMINAL, UNSUCCESSFUL, Dependency, Task, TaskGraph

CONTAINS = "contains"
ADDED = "added"  # the reason of a new task's first row
LINKED, UNLINKED = "linked", "unlinked"  # data.action of the note-style row on the task an edge constrains


class Growth(NamedTuple):
    ix: GraphIndex  # the grown graph
    deps: list[Dependency]  # the new edges (a given parent's contains edges included)


def edge_name(d: Dependency) -> str:
    return f"{d.from_id} -{d.type}-> {d.to_id}"


def constrained(d: Dependency) -> str:
    """The task an edge constrains: the blocked one of a start edge, the parent of a contains edge."""
    return d.from_id if d.start_edge is None else d.start_edge[1]


def _exists(run_id: str, status: Mapping[str, str], tid: str) -> str:
    if tid not in status:
        raise NotFound(f"run {run_id!r}: no task {tid!r}")
    return status[tid]


def _check_edge(run_id: str, d: Dependency, status: Mapping[str, str], deps: list[Dependency]) -> None:
    """The status rules (module docstring) for one new edge, on its ends that already exist."""
    if d.start_edge is None:
        if d.to_id in status:
            raise InvalidTransition(f"run {run_id!r}: task {d.to_id!r} already exists; only new tasks are "
                                    f"added under a parent")
        p = d.from_id
        s = status.get(p)
        container = any(e.type == CONTAINS and e.from_id == p for e in deps)
        if s is not None and s != "pending" and not (container and s not in TERMINAL):
            raise InvalidTransition(f"run {run_id!r}: task {p!r} is {s}; children can be added under a pending "
                                    f"task or an open container")
        return
    blocker, blocked = d.start_edge
    if status.get(blocked, "pending") != "pending":
        raise InvalidTransition(f"run {run_id!r}: task {blocked!r} is {status[blocked]}; only a pending task can "
                                f"gain a blocker ({edge_name(d)})")
    if status.get(blocker) in UNSUCCESSFUL:
        raise InvalidTransition(f"run {run_id!r}: task {blocker!r} is {status[blocker]}; it can block nothing "
                                f"new ({edge_name(d)})")


def _grown(tasks: list[Task], deps: list[Dependency], new: list[Task], new_deps: list[Dependency]) -> GraphIndex:
    return validate(TaskGraph.model_construct(tasks=[*tasks, *new], dependencies=[*deps, *new_deps]))


def plan_add(run_id: str, tasks: list[Task], deps: list[Dependency], status: Mapping[str, str], new: list[Task],
             new_deps: list[Dependency], parent: str | None) -> Growth:
    """Check ``add_tasks``; the grown graph and every new edge. ``status``: the run's tasks' statuses."""
    clash = [t.id for t in new if t.id in status]
    if clash:
        raise InvalidTransition(f"run {run_id!r}: task id(s) already exist: {', '.join(clash[:5])}")
    started = [t.id for t in new if t.status != "pending"]
    if started:
        raise InvalidTransition(f"run {run_id!r}: added tasks start pending; not {', '.join(started[:5])}")
    edges = list(new_deps)
    if parent is not None:
        _exists(run_id, status, parent)
        placed = {d.to_id for d in new_deps if d.type == CONTAINS}
        edges += [Dependency(from_id=parent, to_id=t.id, type=CONTAINS) for t in new if t.id not in placed]
    ix = _grown(tasks, deps, new, edges)  # GraphError names the dangling id or the cycle
    for d in edges:
        _check_edge(run_id, d, status, deps)
    return Growth(ix, edges)


def _start_edge(run_id: str, verb: str, d: Dependency, status: Mapping[str, str]) -> None:
    if d.type == CONTAINS:
        raise InvalidTransition(f"run {run_id!r}: {verb} takes a start edge (blocks, follows), not {edge_name(d)}; "
                                f"add_tasks places new tasks under a parent")
    for tid in (d.from_id, d.to_id):
        _exists(run_id, status, tid)


def plan_link(run_id: str, tasks: list[Task], deps: list[Dependency], status: Mapping[str, str],
              d: Dependency) -> GraphIndex:
    """Check ``link``; the grown graph."""
    _start_edge(run_id, "link", d, status)
    if d in deps:
        raise InvalidTransition(f"run {run_id!r}: already linked: {edge_name(d)}")
    ix = _grown(tasks, deps, [], [d])
    _check_edge(run_id, d, status, deps)
    return ix


def plan_unlink(run_id: str, deps: list[Dependency], status: Mapping[str, str], d: Dependency) -> int:
    """Check ``unlink``; the position of the edge in ``deps`` (removing an edge cannot make a cycle)."""
    _start_edge(run_id, "unlink", d, status)
    if d not in deps:
        raise NotFound(f"run {run_id!r}: no dependency {edge_name(d)}")
    return deps.index(d)


def emit_added(st, new: list[Task], edges: list[Dependency], status: Mapping[str, str], by: str | None,
               now: int) -> None:
    """The rows of ``add_tasks`` through a ``statemachine.Storage``: ``None -> pending`` per new task
    (``agent`` and ``data.created_by`` name the author), then a ``linked`` row per new edge that
    constrains a task that was already there (``emit_linked``)."""
    for t in new:
        st.emit("task", t.id, None, t.status, now, agent=by, reason=ADDED, data={"created_by": by})
    for d in edges:
        if constrained(d) in status:
            emit_linked(st, LINKED, d, status[constrained(d)], by, now)


def emit_linked(st, action: str, d: Dependency, task_status: str, by: str | None, now: int) -> None:
    """One note-style row (its status repeated) on the task ``d`` constrains, naming the edge."""
    st.emit("task", constrained(d), task_status, task_status, now, agent=by,
            data={"action": action, "from": d.from_id, "to": d.to_id, "type": d.type, "by": by})
