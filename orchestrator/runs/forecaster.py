"""Live conflict forecasts: while agents work, which of their tasks will conflict when merged.

Every ``INTERVAL_MS`` the run loop calls ``Forecaster.step``. For each agent with a task in
progress in a local worktree it takes a snapshot (``gitwork.forecast.snapshot``: the branch plus
the uncommitted work, the worktree untouched), then computes with ``git merge-tree``, as the
merged ref's own merges would:

* the snapshot against the merged branch: the task's merge would conflict now;
* each pair of snapshots X, Y: Y merged after X (onto the merged branch with X merged cleanly)
  conflicts in paths that Y alone would not -- the two tasks collide.

A prediction is recorded as a run note ``conflict-forecast`` (``data``: ``tasks``, their
``attempts`` and ``agents``, ``against`` = ``merged`` | ``task``, the predicted ``paths``), once per
prediction and set of paths (an idempotency key). The metrics (``views.forecastmetrics``) hold
them against the merge conflicts that happened.

Cost is bounded: an agent's snapshot is taken again only when its branch tip or its latest event
changed (an agent that did nothing changed no file), at most ``MAX_SNAPSHOTS`` per round, oldest
first; a merge-tree is computed once per combination of merged tip and snapshots, at most
``MAX_MERGES`` per round (the rest wait for the next). A git failure (a worktree changing under the
snapshot) skips that agent for the round, and a failing round (a busy store) is left for the next:
forecasts never fail a run. Runs with external workers are not forecast (their worktrees are on
other hosts).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from coordstore.errors import GitError, StoreError

from gitwork import forecast
from gitwork.runner import git, identity_env

from orchestrator.rundir import RunPaths, RunSpec
from orchestrator.views.forecastmetrics import FORECAST_ACTION

INTERVAL_MS = 1000
MAX_SNAPSHOTS = 4
MAX_MERGES = 12
IDENTITY = identity_env("orchestrator")


@dataclass
class _Live:
    task: str
    attempt: int
    key: tuple = ()  # (tip, last event seq) now: the snapshot is taken again when it differs from ...
    snap_key: tuple | None = None  # ... the key at the snapshot
    snap: str | None = None
    at_ms: int = -1  # when the snapshot was taken (oldest first under the cap; never taken: first)


class Forecaster:
    def __init__(self, spec: RunSpec, paths: RunPaths, store):
        self.spec, self.paths, self.store = spec, paths, store
        self.repo = Path(spec.repo)
        self.live: dict[str, _Live] = {}
        self.done: dict[tuple, list[str]] = {}  # merge-tree combinations computed -> their conflicting paths
        self.clean: dict[tuple[str, str], str | None] = {}  # (merged tip, snapshot) -> clean merge commit
        self.recorded: set[str] = set()
        self.last_ms = -(1 << 62)

    def step(self, now_ms: int) -> int:
        """One round if INTERVAL_MS passed; returns the forecasts recorded."""
        if now_ms - self.last_ms < INTERVAL_MS:
            return 0
        self.last_ms = now_ms
        try:
            return self._round(now_ms)
        except (GitError, StoreError):
            return 0  # a ref moved under us, a busy store: the next round tries again; a forecast never fails a run

    def _round(self, now_ms: int) -> int:
        run = self.spec.run_id
        working = {t.owner: t for t in self.store.list_tasks(run, status="working") if t.owner}
        agents = sorted(a for a in working if self.paths.worktree_of(a).is_dir())
        self.live = {a: v for a, v in self.live.items() if a in agents}
        refs = [f"refs/heads/{self.spec.merged_branch}"] + [f"refs/heads/{self.spec.agent_branch(a)}" for a in agents]
        tips = git(self.repo, "rev-parse", *refs).stdout.split()
        merged_tip, tips = tips[0], dict(zip(agents, tips[1:]))
        stale = []
        for a in agents:
            t = working[a]
            live = self.live.get(a)
            if live is None or (live.task, live.attempt) != (t.id, t.attempt):
                live = self.live[a] = _Live(t.id, t.attempt)
            live.key = (tips[a], self.store.last_event_seq(run, a))
            if live.snap_key != live.key:
                stale.append(a)
        for a in sorted(stale, key=lambda a: self.live[a].at_ms)[:MAX_SNAPSHOTS]:
            live = self.live[a]
            try:
                live.snap = forecast.snapshot(self.paths.worktree_of(a), IDENTITY)
            except GitError:
                continue
            live.snap_key, live.at_ms = live.key, now_ms
        return self._merges(merged_tip)

    def _merges(self, merged_tip: str) -> int:
        budget, made = MAX_MERGES, 0
        ready = [(a, v) for a, v in sorted(self.live.items()) if v.snap is not None]
        current = {merged_tip} | {v.snap for _, v in ready}  # forget what no longer exists
        self.done = {k: p for k, p in self.done.items() if all(x in current for x in k[1:])}
        self.clean = {k: c for k, c in self.clean.items() if all(x in current for x in k)}
        alone: dict[str, list[str]] = {}
        for a, v in ready:  # each against the merged branch
            combo = ("merged", merged_tip, v.snap)
            if combo in self.done:
                alone[a] = self.done[combo]
                continue
            if budget <= 0:
                return made
            budget -= 1
            ours, paths = forecast.merged(self.repo, merged_tip, v.snap, IDENTITY)
            self.clean[(merged_tip, v.snap)] = ours
            self.done[combo] = alone[a] = paths
            if paths:
                made += self._record([(a, v)], "merged", paths)
        for i, (a, va) in enumerate(ready):  # each pair: b merged after a
            base = self.clean.get((merged_tip, va.snap))
            if base is None:
                continue  # a conflicts with the merged branch already (or not computed yet)
            for b, vb in ready[i + 1:]:
                combo = ("pair", merged_tip, va.snap, vb.snap)
                if combo in self.done:
                    continue
                if budget <= 0 or b not in alone:
                    return made
                budget -= 1
                paths = [p for p in forecast.conflicts(self.repo, base, vb.snap) if p not in alone[b]]
                self.done[combo] = paths
                if paths:
                    made += self._record([(a, va), (b, vb)], "task", paths)
        return made

    def _record(self, who: list[tuple[str, _Live]], against: str, paths: list[str]) -> int:
        tasks = [v.task for _, v in who]
        attempts = [v.attempt for _, v in who]
        digest = hashlib.blake2b("\0".join(sorted(paths)).encode(), digest_size=6).hexdigest()
        key = f"forecast:{'+'.join(f'{t}@{n}' for t, n in zip(tasks, attempts))}:{against}:{digest}"
        if key in self.recorded:
            return 0
        self.recorded.add(key)
        what = " and ".join(tasks) + (" with the merged branch" if against == "merged" else "")
        row = self.store.note(self.spec.run_id, "run", self.spec.run_id, FORECAST_ACTION,
                              reason=f"conflict foreseen: {what} in {', '.join(sorted(paths))}",
                              data={"tasks": tasks, "attempts": attempts, "agents": [a for a, _ in who],
                                    "against": against, "paths": sorted(paths)}, key=key)
        return int(row is not None)
