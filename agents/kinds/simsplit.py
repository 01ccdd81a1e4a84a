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
at merge), ids ``<task>-part<i>``, the descriptive tag ``part`` (a part is never split again), each
blocking the next when ``sequential`` (``link``).
"""

from __future__ import annotations

from coordstore.graph import estimate_ms
from coordstore.models import Task

from agents.kinds.simroles import Seat, Split, rng_for
from agents.toolclient import ToolRefused


PART_TAG = "part"  # a descriptive tag on every part: parts are never split again


def coarse(split: Split | None, points: float | None, tags: list[str] | None = None) -> bool:
    """Whether a task is worth splitting: more points than ``over_points``, and not a part itself."""
    return split is not None and (points or 0) > split.over_points and PART_TAG not in (tags or ())


def parts(split: Split, seed: int, task: Task) -> list[dict]:
    """The ``create_tree`` nodes of ``task``'s parts."""
    lo, hi = split.parts
    n = rng_for(seed, task.id, "split").randint(lo, hi)
    title = (task.title or task.id).strip().splitlines()[0] if (task.title or "").strip() else task.id
    est = estimate_ms(task)
    nodes = []
    for i in range(1, n + 1):
        node = {"id": part_id(task.id, i), "title": f"{title} (part {i} of {n})", "description": f"Part {i} of {n} of task {task.id}: {title}",
                "points": max(1, round((task.points or 0) / n)), "time_estimate_ms": max(1, est // n),
                "priority": task.priority, "tags": [PART_TAG]}
        if task.needed_tags:
            node["needed_tags"] = list(task.needed_tags)
        if task.wanted_tags:
            node["wanted_tags"] = list(task.wanted_tags)
        nodes.append(node)
    return nodes


def part_id(task_id: str, i: int) -> str:
    """A part's id: fixed by its task, so two agents splitting one task cannot both succeed (the
    second ``create_tree`` names ids the run already has and adds nothing)."""
    return f"{task_id}-part{i}"


class Splitter:
    """The decomposer behaviour of one agent."""

    def __init__(self, seat: Seat):
        self.seat = seat
        self.split = seat.opts.decompose
        self.tried: set[str] = set()

    def wants(self, task: Task) -> bool:
        return coarse(self.split, task.points, task.tags) and task.id not in self.tried

    def create(self, task: Task) -> bool:
        """``create_tree`` of ``task``'s parts under it; True when they were created."""
        s = self.seat
        self.tried.add(task.id)
        tree = parts(self.split, s.cfg.seed, task)
        made = s.try_call("create_tree", task.id, parent=task.id, tree=tree)
        if isinstance(made, ToolRefused):
            s.settle(task.id)
            return False
        created = made.get("created", []) if isinstance(made, dict) else []
        if self.split.sequential:  # one after another: each part blocks the next
            for before, after in zip(created, created[1:]):
                s.try_call("link", task.id, **{"from": before, "to": after, "type": "blocks"})
        s.settle(task.id)
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
