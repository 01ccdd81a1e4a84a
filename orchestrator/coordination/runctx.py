"""What the coordination server knows of its run, read once at start: the frozen spec, the agents,
their tokens, where each one's worktree is, and a store per thread.

Tool calls run in worker threads (the SDK runs sync tools there) and a store instance belongs to
one thread (sqlite connections are thread-bound), so each thread opens its own store on its
first call and keeps it; ``ThreadStore`` stands for "this thread's store" wherever one object
must serve every thread (an agent's ``TaskWork``). Nothing here reads a file per call.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from coordstore import open_store
from coordstore.errors import InputError, StoreError

from agents.taskwork import TaskWork

from orchestrator.coordination.tokens import TokenBook, ensure_tokens
from orchestrator.rundir import AgentSpec, RunPaths, RunSpec


class ThreadStore:
    """The store of the calling thread, opened on its first use; attribute access forwards to it."""

    def __init__(self, url: str):
        self.url = url
        self._local = threading.local()
        self._opened: list = []
        self._mutex = threading.Lock()

    def here(self):
        s = getattr(self._local, "store", None)
        if s is None:
            s = self._local.store = open_store(self.url)
            with self._mutex:
                self._opened.append(s)
        return s

    def __getattr__(self, name: str):
        return getattr(self.here(), name)

    def close_all(self) -> None:
        """Close what can be closed from this thread; a sqlite connection of another thread
        refuses, and the process ending closes it anyway."""
        with self._mutex:
            opened, self._opened = self._opened, []
        for s in opened:
            try:
                s.close()
            except (sqlite3.ProgrammingError, StoreError):
                pass


class RunContext:
    """One run, as the coordination server serves it."""

    def __init__(self, run_dir: str | Path):
        self.paths = RunPaths(Path(run_dir))
        self.spec: RunSpec = self.paths.read_spec()
        self.run_id = self.spec.run_id
        self.agents: dict[str, AgentSpec] = {a.id: a for a in self.spec.agents}
        self.tokens = TokenBook(self.run_id, ensure_tokens(self.paths, self.spec))
        self.store = ThreadStore(self.spec.store_url)
        self.merged_ref = f"refs/heads/{self.spec.merged_branch}"
        self._work: dict[str, TaskWork] = {}
        self._locks: dict[str, threading.Lock] = {a: threading.Lock() for a in self.agents}
        self._mutex = threading.Lock()
        # (agent, task, attempt) -> the worktree's HEAD when the agent started it: what "its changes" are
        self.bases: dict[tuple[str, str, int], str] = {}

    def check(self) -> None:
        """Fail early, naming the problem, when the run's store does not hold the run."""
        try:
            self.store.get_run(self.run_id)
        except StoreError as e:
            raise InputError(f"{self.paths.root}: store {self.spec.store_url}: {e}") from e

    def works(self, agent: str) -> bool:
        return self.agents[agent].works

    def worktree(self, agent: str) -> Path:
        return self.paths.worktree_of(agent)

    def lock(self, agent: str) -> threading.Lock:
        """Held while the server changes an agent's worktree (two calls must not interleave git)."""
        return self._locks[agent]

    def work(self, agent: str) -> TaskWork:
        """The git side of ``agent``'s tasks (no events: they are the agent's own directory)."""
        with self._mutex:
            w = self._work.get(agent)
            if w is None:
                s = self.spec
                w = self._work[agent] = TaskWork(self.store, self.run_id, agent, self.worktree(agent), s.repo, self.merged_ref,
                                                 s.merge_mode, {**s.kind_options, **self.agents[agent].options}, events=None,
                                                 seed=s.seed, time_scale=s.time_scale)
            return w

    def close(self) -> None:
        self.store.close_all()
