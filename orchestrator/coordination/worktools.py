"""Tools that move tasks between agents and statuses: ``claim`` and ``update``.

Starting a task (a claim, or ``update(status=working)`` on a task assigned to the caller) first
brings the caller's worktree up to date with what blocks the task, as the runner does; completing
one commits the worktree as ``task <id>: <title>``, runs its verify command, merges it into the
run's merged ref (immediate mode) and then completes it in the store, with the commit and merge
on the completion row -- all through ``agents.taskwork``, the runner's own code. Git work on one
agent's worktree is serialized (``RunContext.lock``).
"""

from __future__ import annotations

from typing import Any

from coordstore.errors import MOVED_ON
from coordstore.graph import tags_fit
from coordstore.models import ACTIVE, Task

from gitwork import agentgit as gitops
from gitwork.runner import git

from agents.kinds import Result

from orchestrator.coordination.args import Call

STATUSES = ("pending", "working", "completed", "failed", "cancelled")  # what update(status=...) may set


class WorkTools:
    ctx: Any
    run_id: str
    store: Any

    # ------------------------------------------------------------------ claim / start
    def tool_claim(self, c: Call) -> dict[str, Any]:
        if c.args.flag("force"):
            raise c.args.refuse("force", "is not supported: to take a task from another agent use "
                                         "update(task, assignee=..., force=true)")
        return self._start(c, self.task_of(c))

    def _start(self, c: Call, t: Task) -> dict[str, Any]:
        if not self.ctx.works(c.agent):
            raise c.refuse(f"agent {c.agent!r} is a {self.ctx.agents[c.agent].role}: it hands tasks out and works none")
        if t.owner == c.agent and t.status == "working":
            return {"success": True, "task": self._brief(t), "already": True}
        ix, _ = self.ctx.look()  # one look: once claimed, no edge may newly block the task (growth rules)
        if ix.is_container(t.id):
            raise c.refuse(f"task {t.id!r} is a container: claim its children (a container assigned to you is your subtree)")
        # one worktree, one task at a time: completing one would commit the other's changes too
        busy = [w.id for w in self.store.list_tasks(self.run_id, status="working", owner=c.agent) if w.id != t.id]
        if busy:
            raise c.refuse(f"agent {c.agent!r} is working on task {busy[0]!r}: complete it or give it back "
                           f"(update status=pending) before starting {t.id!r}")
        if not (t.owner == c.agent and t.status == "assigned"):
            if c.tool == "update":
                raise c.refuse(f"task {t.id!r} is {t.status}{self._owned(t)}; only its owner starts an assigned task "
                               f"(claim takes a ready one)")
            if not tags_fit(t, self.ctx.agents[c.agent].tags):
                raise c.refuse(f"task {t.id!r} needs tags {t.needed_tags} that agent {c.agent!r} lacks")
            won = self.store.claim(self.run_id, t.id, c.agent)
            if won is None:
                raise c.refuse(self._why_not(t.id), "lost")
            t = won
        with self.ctx.lock(c.agent):
            problems = []
            if ix.effective_blockers(t.id):
                problems = self.ctx.work(c.agent).take_in_blockers(t)
            base = gitops.head(self.ctx.worktree(c.agent))
            try:
                t = self.store.start(self.run_id, t.id, c.agent, t.attempt)
            except MOVED_ON as e:
                raise c.refuse(f"task {t.id!r} was taken away before it started ({e})") from None
            self.ctx.bases[(c.agent, t.id, t.attempt)] = base
        out = {"success": True, "task": self._brief(t), "worktree": str(self.ctx.worktree(c.agent)), "base": base}
        if problems:
            out["catch_up"] = problems
        return out

    def _why_not(self, tid: str) -> str:
        """Why a claim of ``tid`` lost: taken meanwhile, or still waiting for its blockers."""
        ix, status = self.ctx.look()
        now = self.store.get_task(self.run_id, tid)
        if now.status == "pending":
            waiting = sorted(b for b in ix.effective_blockers(tid) if status.get(b) != "completed")
            return f"task {tid!r} is not ready: it waits for {', '.join(waiting)}"
        return f"task {tid!r} is no longer available: it is {now.status}{self._owned(now)}"

    @staticmethod
    def _owned(t: Task) -> str:
        return f" (owner {t.owner})" if t.owner else ""

    @staticmethod
    def _brief(t: Task) -> dict[str, Any]:
        return {"id": t.id, "title": t.title, "description": t.description, "status": t.status, "worker_id": t.owner,
                "attempt": t.attempt, "claimed_at": t.claimed_at}

    # ------------------------------------------------------------------ update
    def tool_update(self, c: Call) -> dict[str, Any]:
        a = c.args
        if a.has("status") and a.has("state"):
            raise c.refuse("give status or state (task-graph-mcp's name for it), not both")
        status = a.choice("status" if a.has("status") else "state", STATUSES)
        assignee = a.text("assignee")
        force = a.flag("force")
        reason = a.text("reason")
        if status is None and assignee is None:
            raise c.refuse("nothing to change: give status or assignee")
        if status is not None and assignee is not None:
            raise c.refuse("give status or assignee, not both (assign first, then the assignee changes the status)")
        t = self.task_of(c)
        if assignee is not None:
            c.data["assignee"] = assignee
            return self._assign(c, t, assignee, force, reason)
        c.data["status"] = status
        if status == "working":
            return self._start(c, t)
        mine = t.owner == c.agent and t.status in ACTIVE
        if t.owner not in (None, c.agent) and t.status in ACTIVE and not force:
            raise c.refuse(f"task {t.id!r} is {t.status} by {t.owner}; only its owner changes it (or force=true)")
        if status == "completed":
            if not mine:
                raise c.refuse(f"task {t.id!r} is {t.status}{self._owned(t)}; only the agent working on it completes it")
            return self._complete(c, t)
        self._drop_work(c, t, mine)
        if status == "cancelled":
            t = self.store.cancel(self.run_id, t.id, reason or f"cancelled by {c.agent}", by=c.agent)
        elif status == "failed":
            t = self.store.fail(self.run_id, t.id, c.agent if mine else None, t.attempt if mine else None,
                                reason or f"failed by {c.agent}")
        else:  # pending: given back (the owner) or taken back (force)
            t = self.store.requeue(self.run_id, t.id, reason or (f"given back by {c.agent}" if mine else f"taken back by {c.agent}"),
                                   by=c.agent)
        return {"success": True, "task": self._brief(t)}

    def _drop_work(self, c: Call, t: Task, mine: bool) -> None:
        """The caller's uncommitted work on its own task is dropped (back to where the task began)."""
        if mine and self.ctx.works(c.agent):
            with self.ctx.lock(c.agent):
                gitops.discard(self.ctx.worktree(c.agent), self.ctx.bases.pop((c.agent, t.id, t.attempt), None))

    def _assign(self, c: Call, t: Task, to: str, force: bool, reason: str | None) -> dict[str, Any]:
        if to not in self.ctx.agents:
            raise c.refuse(f"assignee {to!r} is not an agent of run {self.run_id} (agents: {', '.join(self.ctx.agents)})")
        container = self.ctx.look()[0].is_container(t.id)
        if not container:
            if not self.ctx.works(to):
                raise c.refuse(f"assignee {to!r} is a {self.ctx.agents[to].role}: it works no tasks")
            if not tags_fit(t, self.ctx.agents[to].tags):
                raise c.refuse(f"assignee {to!r} lacks tags {t.needed_tags} that task {t.id!r} needs")
        if t.status in ACTIVE and t.owner != to and force:
            self.store.requeue(self.run_id, t.id, reason or f"reassigned to {to} by {c.agent}", by=c.agent)
        elif t.status == "working":
            raise c.refuse(f"task {t.id!r} is working by {t.owner}; force=true takes it back first")
        t = self.store.assign(self.run_id, t.id, to, by=c.agent)
        return {"success": True, "task": self._brief(t), "assignee": to}

    # ------------------------------------------------------------------ completing
    def _complete(self, c: Call, t: Task) -> dict[str, Any]:
        work, wt = self.ctx.work(c.agent), self.ctx.worktree(c.agent)
        with self.ctx.lock(c.agent):
            base = self.ctx.bases.pop((c.agent, t.id, t.attempt), None) or self._fork_point(wt)
            result = work.commit_and_verify(t, base, Result(ok=True))
            now = self.store.get_task(self.run_id, t.id)
            if not (now.owner == c.agent and now.attempt == t.attempt and now.status in ACTIVE):
                gitops.discard(wt, base)
                raise c.refuse(f"task {t.id!r} was taken away meanwhile (it is {now.status}{self._owned(now)}); its work is dropped")
            if not result.ok:
                gitops.discard(wt, base)
                self.store.fail(self.run_id, t.id, c.agent, t.attempt, reason=result.reason or "failed")
                raise c.refuse(f"task {t.id!r} failed: {result.reason}", status="failed")
            head = gitops.head(wt)
            data = {"commit": head, **result.data}
            if self.ctx.spec.merge_mode == "immediate":
                data["merge"] = work.merge(t, head)
            self.store.complete(self.run_id, t.id, c.agent, t.attempt, data=data)
        return {"success": True, "task": t.id, "status": "completed", "commit": head, "merge": data.get("merge"),
                "files": data.get("files", [])}

    def _fork_point(self, wt) -> str:
        """Where the task's changes start when the server did not see it start (it restarted): the
        last commit the worktree shares with the merged ref, or HEAD."""
        p = git(wt, "merge-base", "HEAD", self.ctx.merged_ref, ok=(0, 1))
        return p.stdout.strip() or gitops.head(wt)
