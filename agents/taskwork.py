"""Finishing and preparing one agent's task in git: catch-up before a task, commit + verify after
it, merge into the run's merged ref, and the ``merge`` history rows of each.

Two callers use it for an agent: the agent's own runner (``agents.runner``), and the coordination
server (``orchestrator.coordination``), which completes a task for whichever agent calls
``update(status=completed)``. The server is another process: it must not write into the agent's
events directory, so ``events`` is optional; without it the changed files go into the result's
``data["files"]`` (the completion data) instead of ``file_changed`` events, and failures are
left to the caller to report.

Git and the kinds' command helpers are imported lazily: the runner's start-up stays cheap and an
agent that never works never loads them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coordstore.errors import GitError, OrchError
from coordstore.graph import GraphIndex
from coordstore.models import Transition


class _Nap:
    """How a verify command waits when no runner pulse is there (the coordination server): plain
    sleeps on the monotonic clock; the agent's own runner keeps its lease meanwhile."""

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def clock(self) -> float:
        return time.monotonic() * 1000.0


class TaskWork:
    """The git side of one agent's tasks in ``worktree`` (a checkout of ``repo``).

    ``index`` gives the run's graph index; by default it is built from the store on each use (the
    graph may grow mid-run), the runner passes its policy's cached one. ``pulse`` paces verify
    commands (the runner's beats its lease while it waits); ``events`` receives file_changed,
    verify steps and merge errors when given. ``merger``: a ``gitwork.merging.Merger`` shared by
    every agent a process serves (it serializes their merges in-process instead of letting them
    race on the ref's compare-and-swap); by default one of its own, made at its first merge.
    """

    def __init__(self, store, run_id: str, agent_id: str, worktree: str | Path, repo: str | Path | None,
                 merged_ref: str | None, merge_mode: str, kind_options: dict[str, Any] | None = None,
                 events=None, pulse=None, index: Callable[[], GraphIndex] | None = None,
                 seed: int = 0, time_scale: float = 1.0, merger=None, remote: str | None = None,
                 remote_branch: str | None = None):
        self.store = store
        self.run_id = run_id
        self.agent_id = agent_id
        self.worktree = Path(worktree)
        self.repo = repo
        self.merged_ref = merged_ref
        self.merge_mode = merge_mode
        self.kind_options = dict(kind_options or {})
        self.events = events
        self.pulse = pulse if pulse is not None else _Nap()
        self.index = index if index is not None else self._fresh_index
        self.seed = seed
        self.time_scale = time_scale
        self._identity: dict[str, str] | None = None
        self._merger = merger
        self.last_head: str | None = None  # HEAD after the last commit_and_verify that passed
        self.remote = remote  # a worker on another host: blockers come from, and work goes to, this git remote
        self.remote_branch = remote_branch

    def _fresh_index(self) -> GraphIndex:
        edges = self.store.dependencies(self.run_id)  # first: every edge then names a task listed after it
        return GraphIndex(self.store.list_tasks(self.run_id), edges)

    @property
    def identity(self) -> dict[str, str]:
        """The agent's git author/committer variables."""
        if self._identity is None:
            from gitwork.agentgit import identity  # lazy: the runner's start-up; git only for working agents

            self._identity = identity(self.agent_id)
        return self._identity

    def _error(self, msg: str, task: str) -> None:
        if self.events is not None:
            self.events.error(msg, task=task)

    # ------------------------------------------------------------------ after the work
    def commit_and_verify(self, task, base: str, result):
        """Commit what the kind left (if it did not commit itself), announce the changed files,
        run the task's verify command. A failure here fails the task (``Result.ok`` False)."""
        # lazy: the runner's start-up; kinds and git only for working agents, after their first task
        from gitwork import agentgit as gitops
        from agents.kinds import KindContext, Result, output_tail
        from agents.kinds.script import pass_env_list, run_command

        tid = task.id
        title = (task.title or "").strip().splitlines()[0] if (task.title or "").strip() else tid
        self.last_head = None
        try:
            # the kind may have committed by itself: HEAD is then read, not known
            head = gitops.commit_all(self.worktree, f"task {tid}: {title}", self.identity) or gitops.head(self.worktree)
            changes = gitops.changed_files(self.worktree, base, head)
        except OrchError as e:
            return Result(ok=False, reason=f"commit failed: {e}", data=result.data)
        if self.events is not None:
            for change, path in changes:
                self.events.file_changed(path, change, task=tid)
        else:  # no events of ours to write: the completion data carries them
            result.data["files"] = [{"path": path, "change": change} for change, path in changes]
        verify = task.meta.get("verify")
        if verify:
            if not (isinstance(verify, str) or (isinstance(verify, list) and verify and all(isinstance(a, str) for a in verify))):
                return Result(ok=False, reason=f"task {tid}: meta.verify must be an argv list (or a shell string)")
            try:  # a template command like the script kind's: the same filtered environment
                passed = pass_env_list(self.kind_options.get("pass_env"), "kind_options.pass_env") + \
                    pass_env_list(task.meta.get("pass_env"), f"task {tid}: meta.pass_env")
            except ValueError as e:
                return Result(ok=False, reason=str(e), data=result.data)
            ctx = KindContext(self.run_id, self.agent_id, self.worktree, self.seed, self.time_scale, task.attempt,
                              self.events, self.pulse, self.identity)
            if self.events is not None:
                self.events.step("verify", args=verify, task=tid)
            rc, out = run_command(verify, ctx, tid, shell=isinstance(verify, str), pass_env=passed)
            if rc != 0:
                if self.events is not None:
                    self.events.emit("log", tid, msg=f"verify failed (exit {rc}); dropping commit {head[:12]}", level="warning",
                                     verify_failed=head)
                return Result(ok=False, reason=f"verify exited {rc}: {output_tail(out)}", data=result.data)
        self.last_head = head
        return result

    # ------------------------------------------------------------------ git: taking in and handing out
    def record_merge(self, tid: str, key: str, ok: bool, data: dict, reason: str | None = None) -> None:
        self.store.record(Transition(
            run_id=self.run_id, ts_ms=self.store.clock(), entity="merge", entity_id=tid,
            to_state="merged" if ok else ("conflict" if data.get("conflicts") else "error"), agent=self.agent_id,
            reason=reason, data=data, key=key,
        ))

    def merge(self, task, head: str, author: str | None = None) -> dict:
        """Merge the branch head into the merged ref; record the outcome as a ``merge`` transition.
        ``author``: whose work ``head`` is when it is not this agent's (a best-of round's winner)."""
        tid = task.id
        try:
            if self._merger is None:
                from gitwork.merging import Merger  # lazy: the runner's start-up; merging only in immediate mode, after a task

                self._merger = Merger(self.repo, self.merged_ref)
            t0 = time.monotonic()
            res = self._merger.merge(head, f"merge task {tid}: {task.title or tid} ({author or self.agent_id})", self.identity)
            out = {"ok": res.ok, "sha": res.sha, "source": res.source, "conflicts": list(res.conflicts), "already_merged": res.already_merged,
                   "ms": round((time.monotonic() - t0) * 1000)}  # the merge's own time (the metrics' merge_ms)
            reason = None if res.ok else f"conflict in {', '.join(res.conflicts)}"
        except GitError as e:
            out, reason = {"ok": False, "error": str(e), "source": head, "conflicts": []}, str(e)
        self.record_merge(tid, f"merge:{tid}:{task.attempt}", out["ok"], {**out, "attempt": task.attempt}, reason)
        if not out["ok"]:
            self._error(f"merge of task {tid} into {self.merged_ref} failed: {reason}", tid)
        return out

    def take_in_blockers(self, task) -> list[str]:
        """Bring the worktree up to date before a task with start-blockers: catch up with the
        merged ref (immediate) or merge each completed blocker's commit (deferred). A conflict is
        recorded and the task runs on the base it has (the merge metrics show the cost).
        Returns what went wrong, one line each (empty when all went well)."""
        from gitwork import agentgit as gitops  # lazy: the runner's start-up; git only for working agents

        tid, att = task.id, task.attempt
        problems: list[str] = []
        try:
            if self.merge_mode == "immediate":
                from gitwork.merging import catch_up  # lazy: the runner's start-up; merging only in immediate mode

                res = catch_up(self.worktree, self.merged_ref, self.identity)
                if not res.ok:
                    self.record_merge(tid, f"catch-up:{tid}:{att}", False, {"kind": "catch-up", "conflicts": list(res.conflicts), "attempt": att},
                                      f"catch-up conflict in {', '.join(res.conflicts)}")
                    problems.append(f"catching up with {self.merged_ref} conflicts in {', '.join(res.conflicts)}")
                    self._error(problems[-1], tid)
                return problems
            blockers = self.blocker_commits(tid)
            if self.remote and blockers:  # their commits were pushed by whichever worker did them
                from gitwork.remote import fetch_commits  # lazy: the runner's start-up; only for remote workers

                fetch_commits(self.worktree, self.remote, self.run_id, [c for _, c in blockers])
            for b, commit in blockers:
                if gitops.is_ancestor(self.worktree, commit, "HEAD"):
                    continue
                conflicts = gitops.merge_into_worktree(self.worktree, commit, f"orch: take in task {b} before task {tid}", self.identity)
                if conflicts:
                    self.record_merge(tid, f"take-in:{tid}:{att}:{b}", False,
                                      {"kind": "take-in", "blocker": b, "commit": commit, "conflicts": conflicts, "attempt": att},
                                      f"taking in {b} conflicts in {', '.join(conflicts)}")
                    problems.append(f"taking in blocker {b} conflicts in {', '.join(conflicts)}")
                    self._error(problems[-1], tid)
        except GitError as e:
            problems.append(f"could not bring the worktree up to date before {tid}: {e}")
            self._error(problems[-1], tid)
        return problems

    def push(self, task, head: str) -> str | None:
        """A remote worker's task commit onto the remote, before the task is reported done, so
        nothing is lost between "done" and the coordinator's merge. The problem, or None."""
        from gitwork.remote import push_task  # lazy: the runner's start-up; only for remote workers

        try:
            push_task(self.worktree, self.remote, self.run_id, head, self.remote_branch)
        except GitError as e:
            self._error(f"push of task {task.id} failed: {e}", task.id)
            return f"push failed: {e}"
        return None

    def blocker_commits(self, tid: str) -> list[tuple[str, str]]:
        """(blocker, commit) for each completed work task among ``tid``'s effective blockers,
        the commit as recorded on its ``complete`` transition."""
        ix = self.index()
        leaves: list[str] = []
        for b in sorted(ix.effective_blockers(tid)):
            leaves += [b] if not ix.is_container(b) else sorted(d for d in ix.descendants(b) if not ix.is_container(d))
        out = []
        for b in leaves:
            done = [r for r in self.store.history(self.run_id, entity="task", entity_id=b) if r.to_state == "completed"]
            commit = done[-1].data.get("commit") if done else None
            if commit:
                out.append((b, commit))
        return out
