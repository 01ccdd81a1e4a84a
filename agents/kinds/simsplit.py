"""Decomposition by sim agents: a coarse task split into subtasks with ``create_tree`` mid-run.

The store takes children only under a pending task or an open container
(``coordstore/growth.py``), so the flow is:

* **a worker** claims the coarse task first (exactly one agent gets to decide to split it), gives
  it back (``update(status=pending)``: its owner's requeue), then creates the parts under it
  (``create_tree(parent=task)``). The task is now a container, no longer work: it completes when
  its parts do. The agent then looks again, as any worker of its role does (a puller will likely
  claim a part; a pushed worker waits for the coordinator). Should another agent claim the task
  in the moment it was pending, ``create_tree`` is refused and that agent works it whole. An agent
  tries to split a task once.
* **a lead** splits pending tasks directly, before it hands out subtrees: nobody may take them yet
  (its workers wait for their subtrees).

The parts: ``n`` of them (seeded on the run's seed and the task, within ``parts``), titled
``<title> (part i of n)``, the task's points and time estimate divided evenly (the work is
conserved, so decomposition pays only its coordination), the task's needed and wanted tags, no
file scope (each part edits a file of its own: parts of one file worked in parallel would conflict
at merge), one after another when ``sequential``.
"""

from __future__ import annotations

from coordstore.graph import estimate_ms
from coordstore.models import Task

from agents.kinds.simroles import Seat, Split, needed, rng_for, wanted
from agents.toolclient import ToolRefused


def coarse(split: Split | None, points: float | None) -> bool:
    return split is not None and (points or 0) > split.over_points


def parts(split: Split, seed: int, task: Task) -> list[dict]:
    """The ``create_tree`` nodes of ``task``'s parts."""
    lo, hi = split.parts
    n = rng_for(seed, task.id, "split").randint(lo, hi)
    title = (task.title or task.id).strip().splitlines()[0] if (task.title or "").strip() else task.id
    est = estimate_ms(task)
    nodes = []
    for i in range(1, n + 1):
        node = {"title": f"{title} (part {i} of {n})", "description": f"Part {i} of {n} of task {task.id}: {title}",
                "points": max(1, round((task.points or 0) / n)), "time_estimate_ms": max(1, est // n),
                "priority": task.priority}
        if task.needed_tags:
            node["needed_tags"] = list(task.needed_tags)
        if task.wanted_tags:
            node["wanted_tags"] = list(task.wanted_tags)
        nodes.append(node)
    return nodes


def as_task(t: dict) -> Task:
    """A listed task (``list_tasks`` row) as far as splitting needs it."""
    return Task(id=t["id"], title=t.get("title") or "", points=t.get("points"), priority=t.get("priority") or 5,
                time_estimate_ms=t.get("time_estimate_ms"), needed_tags=needed(t), wanted_tags=wanted(t))


class Splitter:
    """The decomposer behaviour of one agent."""

    def __init__(self, seat: Seat):
        self.seat = seat
        self.split = seat.opts.decompose
        self.tried: set[str] = set()

    def wants(self, task: Task) -> bool:
        return coarse(self.split, task.points) and task.id not in self.tried

    def create(self, task: Task) -> bool:
        """``create_tree`` of ``task``'s parts under it; True when they were created."""
        s = self.seat
        self.tried.add(task.id)
        tree = parts(self.split, s.cfg.seed, task)
        args = {"parent": task.id, "tree": tree}
        if self.split.sequential:
            args["sibling_type"] = "sequential"
        made = s.try_call("create_tree", task.id, **args)
        s.settle(task.id)
        if isinstance(made, ToolRefused):
            return False
        created = made.get("created", []) if isinstance(made, dict) else []
        s.events.log(f"split {task.id} into {len(created)} parts: {', '.join(created)}", task=task.id)
        return True

    def give_back_and_split(self, task: Task) -> str:
        """A claimed coarse task: back to pending, then split (module docstring). ``split``: its
        parts exist; ``gone``: given back but another agent took it meanwhile; ``kept``: the
        give-back was refused, the task is still this agent's to work."""
        s = self.seat
        self.tried.add(task.id)
        back = s.try_call("update", task.id, task=task.id, status="pending", reason="decomposing into subtasks")
        if isinstance(back, ToolRefused):
            return "kept"
        return "split" if self.create(task) else "gone"
