"""The coordinator's git for a run with external workers: the base onto the remote at setup, each
completed task's commit from the remote into the merged branch as it completes, what is left at
the end, and the agents' branches and the merged branch exchanged with the remote at the end.

A task's completion row (``data.commit``) names its commit; the worker pushed it before reporting
the task done (``gitwork.remote.commit_ref``), so fetching it cannot miss. Merges are recorded
exactly as a local runner records them (``agents.taskwork.TaskWork.merge``: a ``merge`` row keyed
``merge:<task>:<attempt>``), so metrics read both alike.
"""

from __future__ import annotations

from pathlib import Path

from coordstore.errors import GitError, NotFound

from gitwork.merging import Merger
from gitwork.remote import base_ref, ensure_bare, fetch, fetch_commits, push
from gitwork.runner import git, git_out

from agents.taskwork import TaskWork

from orchestrator.rundir import RunSpec


def publish_base(spec: RunSpec) -> None:
    """Create the bare remote when it is a local path that does not exist, push the run's base."""
    ensure_bare(spec.remote)
    push(spec.repo, spec.remote, [f"{spec.base}:{base_ref(spec.run_id)}"])


class RemoteMerges:
    def __init__(self, spec: RunSpec, store):
        self.spec = spec
        self.store = store
        self.repo = Path(spec.repo)
        self.cursor = 0
        self.pending: list[tuple[str, str, str]] = []  # (agent, task, commit), in completion order
        self._merger: Merger | None = None
        self._works: dict[str, TaskWork] = {}
        self.fetch_error: str | None = None  # the last failed fetch, retried at the next step

    def _collect(self) -> None:
        for r in self.store.history(self.spec.run_id, since_seq=self.cursor, entity="task"):
            self.cursor = max(self.cursor, r.seq)
            if r.to_state == "completed" and not r.is_note and r.agent and r.data.get("commit"):
                self.pending.append((r.agent, r.entity_id, r.data["commit"]))

    def _work(self, agent: str) -> TaskWork:
        if self._merger is None:
            self._merger = Merger(self.repo, f"refs/heads/{self.spec.merged_branch}")
        if agent not in self._works:
            self._works[agent] = TaskWork(self.store, self.spec.run_id, agent, self.repo, self.repo,
                                          f"refs/heads/{self.spec.merged_branch}", "immediate", merger=self._merger)
        return self._works[agent]

    def step(self) -> int:
        """Merge what completed since the last step; returns how many merges were attempted."""
        self._collect()
        if not self.pending:
            return 0
        try:
            fetch_commits(self.repo, self.spec.remote, self.spec.run_id, [c for _, _, c in self.pending])
            self.fetch_error = None
        except GitError as e:  # the remote is briefly unreachable: the commits wait for the next step
            self.fetch_error = str(e)
            return 0
        todo, self.pending = self.pending, []
        for agent, tid, commit in todo:
            try:
                task = self.store.get_task(self.spec.run_id, tid)
            except NotFound:
                continue
            self._work(agent).merge(task, commit)
        return len(todo)

    def finish(self) -> None:
        """Merge whatever is left (a fetch still failing is then recorded as each merge's error),
        bring the agents' branches home, and leave the merged branch on the remote too."""
        self._collect()
        if self.pending and self.step() == 0 and self.pending:
            for agent, tid, commit in self.pending:
                try:
                    self._work(agent).merge(self.store.get_task(self.spec.run_id, tid), commit)
                except NotFound:
                    continue
            self.pending = []
        prefix, there = f"refs/heads/{self.spec.branch_prefix}", f"refs/orch-remote/{self.spec.run_id}"
        try:  # the agents' branches as their workers last pushed them, under the names a local run uses
            fetch(self.repo, self.spec.remote, [f"+{prefix}/*:{there}/*"])
            have = set(_refs(self.repo, f"{there}/"))
            for a in self.spec.agents:
                if a.works and a.id in have:
                    git(self.repo, "update-ref", f"{prefix}/{a.id}", f"{there}/{a.id}")
            push(self.repo, self.spec.remote, [f"+refs/heads/{self.spec.merged_branch}:refs/heads/{self.spec.merged_branch}"])
        except GitError:
            pass  # the merged branch is complete here; the remote's copies are a convenience


def _refs(repo: Path, prefix: str) -> list[str]:
    out = git_out(repo, "for-each-ref", "--format=%(refname)", prefix)
    return [r[len(prefix):] for r in out.splitlines() if r]

