"""The dispatching roles for real CLIs: ``coordinator`` (push) and ``lead`` (hybrid). They work no
task; each turn follows from the conversation (``conversation``) and decides as the sim's
dispatchers do (``agents.kinds.simdispatch``: the same choice functions).

* coordinator: ``list_tasks(status=pending, ready=true)``; with ready tasks ``list_agents``, then
  one ``update(task, assignee=worker)`` per turn for idle workers whose tags fit, best first (a
  task that came back goes to another worker when one fits), then looks again at once. Nothing
  ready: ``list_tasks()`` -- every task terminal ends the session with "The run is over." --
  else a wait (shell ``sleep``) and a new look.
* lead: ``list_tasks()``; with ``decompose`` it first splits every coarse pending leaf (``get``,
  ``create_tree``, ``link`` when sequential); while a subtree waits to be handed out it asks
  ``list_agents``, and once the set of workers is the one of its previous ``list_agents`` it hands
  the subtrees out (``update(container, assignee=w)``), biggest first to the least loaded worker.
"""

from __future__ import annotations

from agents.kinds.simdispatch import (coarse_leaves, idle_workers, pick_holder, pick_worker, subtree_plan,
                                      worker_ids)
from agents.kinds.simroles import best_first, top_units

from orchestrator.modelserver.conversation import Conversation, RoleScript, link_turn, tree_turn
from orchestrator.modelserver.turns import Turn


def _assignments_before(c: Conversation, end: int) -> tuple[dict[str, str], dict[str, int]]:
    """(task -> the agent it was last given to; agent -> the look it was last given one in) over
    the successful ``update(assignee=...)`` steps before step ``end``."""
    given: dict[str, str] = {}
    look_of: dict[str, int] = {}
    look = 0
    for i, s in enumerate(c.steps[:end]):
        if s.tool == "list_agents":
            look = i + 1
        elif s.tool == "update" and s.ok and isinstance(s.args.get("assignee"), str) and s.task:
            given[s.task] = s.args["assignee"]
            look_of[s.args["assignee"]] = look
    return given, look_of


class CoordinatorScript(RoleScript):
    name = "coordinator"

    @staticmethod
    def look(c: Conversation) -> Turn:
        return c.mcp("list_tasks", "Looking for ready tasks to assign.", status="pending", ready=True)

    def decide(self, c: Conversation) -> Turn:
        last = c.last
        if last.tool == "list_tasks":
            if last.unfiltered:
                return c.over_turn(last) if c.over(last) else c.wait(self.look(c))
            if [t for t in last.listed() if not t.get("container")]:
                return c.mcp("list_agents", "Who is free?")
            return c.mcp("list_tasks", "Nothing ready; checking whether every task is done.")
        if last.tool in ("list_agents", "update"):
            at = c.find("list_agents")
            if at is not None:
                nxt = self.next_assignment(c, at)
                if nxt is not None:
                    task, worker = nxt
                    return c.mcp("update", f"Assigning {task} to {worker}.", task=task, assignee=worker)
                made = any(s.tool == "update" and s.ok for s in c.steps[at + 1:])
                return self.look(c) if made else c.wait(self.look(c))
        return self.look(c)

    @staticmethod
    def next_assignment(c: Conversation, at: int) -> tuple[str, str] | None:
        """The next (task, worker) of the look whose ``list_agents`` is step ``at``: ready tasks best
        first to the idle workers left, each task tried once per look."""
        listing = c.find("list_tasks", before=at, status="pending", ready=True)
        if listing is None:
            return None
        ready = [t for t in c.steps[listing].listed() if not t.get("container")]
        since = [s for s in c.steps[at + 1:] if s.tool == "update"]
        tried = {s.task for s in since}
        busy = {s.args.get("assignee") for s in since if s.ok}
        idle = [a for a in idle_workers(c.steps[at].listed()) if a["id"] not in busy]
        given, look_of = _assignments_before(c, at)
        for t in best_first(ready, None):
            if not idle:
                break
            if t["id"] in tried:
                continue
            w = pick_worker(t, idle, given.get(t["id"]), look_of)
            if w is not None:
                return t["id"], w["id"]
        return None


class LeadScript(RoleScript):
    name = "lead"

    @staticmethod
    def look(c: Conversation) -> Turn:
        return c.mcp("list_tasks", "Looking at the task graph.")

    def decide(self, c: Conversation) -> Turn:
        last = c.last
        split = c.opts.split
        if last.tool == "list_tasks":
            if c.over(last):
                return c.over_turn(last)
            tasks = last.listed()
            leaf = self.next_leaf(c)
            if leaf is not None:
                return leaf
            status = {t["id"]: t.get("status") for t in tasks}
            if any(status[u] == "pending" for u in top_units(tasks)):
                return c.mcp("list_agents", "Which workers are there to hand subtrees to?")
            return c.wait(self.look(c))
        if last.tool == "get" and last.ok and split is not None:
            return tree_turn(c, last.task, last.value, split)
        if last.tool in ("get", "create_tree", "link"):
            return link_turn(c, split, c.find("create_tree")) or self.next_leaf(c) or self.look(c)
        if last.tool == "list_agents":
            prev = c.find("list_agents", before=len(c.steps) - 1)
            workers = worker_ids(last.listed())
            if not workers or prev is None or worker_ids(c.steps[prev].listed()) != workers:
                return c.wait(self.look(c))  # the workers register as they spawn: wait until the set holds
        if last.tool in ("list_agents", "update"):
            at = c.find("list_agents")
            nxt = self.next_handout(c, at) if at is not None else None
            if nxt is not None:
                unit, worker = nxt
                return c.mcp("update", f"Handing subtree {unit} to {worker}.", task=unit, assignee=worker)
        return self.look(c)

    @staticmethod
    def next_leaf(c: Conversation) -> Turn | None:
        """``get`` of the next coarse pending leaf of the last look not split yet (None: none left)."""
        listing = c.find("list_tasks")
        if c.opts.split is None or listing is None:
            return None
        tried = {s.args.get("parent") for s in c.steps if s.tool == "create_tree"}
        tried |= {s.task for s in c.steps[listing + 1:] if s.tool == "get" and not s.ok}
        leaves = coarse_leaves(c.steps[listing].listed(), c.opts.split, tried)
        return c.mcp("get", f"Reading {leaves[0]['id']} to split it.", task=leaves[0]["id"]) if leaves else None

    @staticmethod
    def next_handout(c: Conversation, at: int) -> tuple[str, str] | None:
        """The next (subtree, worker) of the look whose ``list_agents`` is step ``at``."""
        listing = c.find("list_tasks", before=at)
        if listing is None:
            return None
        workers = worker_ids(c.steps[at].listed())
        if not workers:
            return None
        pending, work, load = subtree_plan(c.steps[listing].listed(), workers)
        tried = set()
        for s in c.steps[at + 1:]:
            if s.tool == "update":
                tried.add(s.task)
                if s.ok and s.args.get("assignee") in load:
                    load[s.args["assignee"]] += work.get(s.task, 0)
        had, _ = _assignments_before(c, at)
        for u in pending:
            if u not in tried:
                return u, pick_holder(u, workers, had.get(u), load)
        return None
