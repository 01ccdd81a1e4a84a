"""The run loop: spawn, watch, supervise, finish, export — and resume after the orchestrator died.

``Orchestrator.step(now)`` is one turn of the loop (ingest events, judge agents, check the end);
``run()`` repeats it, waking on new events. All state lives in the store and the run directory,
so ``Orchestrator.resume(run_dir)`` can pick a run up where a killed orchestrator left it.
"""

from __future__ import annotations

import time
from pathlib import Path

from coordstore import open_store
from coordstore.models import TERMINAL

from .control import RunController
from .rundir import RunPaths, RunSpec

TICK_S = 0.25  # how often the supervisor judges when no event wakes the loop
DRAIN_S = 5.0  # how long runners get to exit by themselves once every task is terminal


class Orchestrator:
    def __init__(self, spec: RunSpec, paths: RunPaths, clock=time.time):
        from .supervisor import Supervisor
        from .watcher import EventWatcher

        self.spec = spec
        self.paths = paths
        self.clock = clock
        self.store = open_store(spec.store_url)
        self.controller = RunController(spec, paths, self.store)
        self.watcher = EventWatcher(paths.events, self.store, spec.run_id)
        self.supervisor = Supervisor(self.store, spec.run_id, self.controller.supervision, self.controller)
        self.deadline = self.clock() + spec.timeout_s
        self.progress = None  # optional callback(done, total)
        self.model_server = None
        self._last_tick_ms = -1 << 62  # the first step always judges

    def _start_model_server(self) -> None:
        """The variant's scripted model server; runners (re)spawned from now on point at it."""
        if not self.spec.model_server:
            return
        from agents.clis.base import MODEL_SERVER_ENV

        from .modelserver import ModelServer
        from .modelserver.context import agent_env
        from .modelserver.tasksource import StoreTasks

        options = {"repo": self.spec.repo} if self.spec.model_server == "replay" else None
        self.model_server = ModelServer(self.spec.model_server, script_options=options,
                                        tasks=StoreTasks(self.spec.store_url, self.spec.run_id),
                                        record=self.paths.root / "model-requests.jsonl")
        self.model_server.start()
        self.controller.extra_env = {**agent_env(self.model_server.url), MODEL_SERVER_ENV: self.model_server.url}

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        from .runinfo import write_pidfile

        write_pidfile(self.paths)  # lets `orch runs`/`status` tell a live run from an interrupted one
        self._start_model_server()
        self.watcher.start()
        self.controller.spawn_all()

    def reattach(self) -> None:
        """Resume: re-attach live runners, respawn dead ones after requeueing their tasks."""
        from .runinfo import write_pidfile

        write_pidfile(self.paths)
        self._start_model_server()  # a new port: re-attached runners keep the old URL and get requeued if they fail
        self.watcher.start()
        for agent_id in self.controller.attach_all():
            for t in self.store.list_tasks(self.spec.run_id, status=("assigned", "working"), owner=agent_id):
                self.store.requeue(self.spec.run_id, t.id, reason="runner gone after orchestrator restart", by="orchestrator")
            self.controller.spawn(agent_id)

    def counts(self) -> tuple[int, int]:
        tasks = self.store.list_tasks(self.spec.run_id)
        return sum(t.status in TERMINAL for t in tasks), len(tasks)

    def step(self, now_ms: int | None = None) -> bool:
        """One turn: ingest events, judge agents, report progress. True when every task is terminal."""
        now_ms = int(self.clock() * 1000) if now_ms is None else now_ms
        self.watcher.poll()
        # events wake the loop many times a second; judging agents (a few queries each) need not
        if now_ms - self._last_tick_ms >= TICK_S * 1000:
            self._last_tick_ms = now_ms
            self.supervisor.tick(now_ms)
        done, total = self.counts()
        if self.progress:
            self.progress(done, total)
        return done == total

    def run(self) -> str:
        """Loop until every task is terminal (``finished``, or ``failed`` for failed tasks the
        experiment does not allow) or the timeout (``interrupted``)."""
        status = "finished"
        while not self.step():
            if self.clock() > self.deadline:
                status = "interrupted"
                break
            self.watcher.wait(TICK_S)
        return self.finish(status)

    def finish(self, status: str) -> str:
        """Let runners exit, stop the rest, merge what waited, export, close the run; returns
        the run's final status."""
        end = self.clock() + DRAIN_S
        while not self.controller.all_exited() and self.clock() < end:
            self.watcher.wait(0.05)
            self.watcher.poll()
        self.controller.stop_all()
        self.watcher.poll()
        self.watcher.stop()
        for a in self.store.list_agents(self.spec.run_id):
            if a.status not in ("stopped", "dead"):
                self.store.set_agent_status(self.spec.run_id, a.id, "stopped", reason=f"run {status}")
        if self.spec.merge_mode == "deferred":
            from .finalmerge import merge_completed

            merge_completed(self.spec, self.store)
        from .outcome import settle

        status, reason = settle(self.spec, self.store, status)
        self.store.finish_run(self.spec.run_id, status, reason=reason)
        from .exports import export_run

        export_run(self.spec, self.paths, self.store)
        return status

    def close(self) -> None:
        if self.model_server is not None:
            self.model_server.stop()
            self.model_server = None
        self.store.close()

    @classmethod
    def resume(cls, run_dir: Path) -> "Orchestrator":
        paths = RunPaths(run_dir)
        orch = cls(paths.read_spec(), paths)
        orch.reattach()
        return orch
