"""The run loop: spawn, watch, supervise, finish, export — and resume after the orchestrator died.

``Orchestrator.step(now)`` is one turn of the loop (ingest events, judge agents, check the end);
``run()`` repeats it, waking on new events; time comes from injected clocks (``coordstore.clock``),
so a test steps the loop with a fake one; ``conduct()`` wraps start and run so that a stop signal
leaves the run interrupted, not orphaned. All state lives in the store and the run directory, so
``Orchestrator.of_run(run_dir).conduct(resume=True)`` picks a run up however its orchestrator stopped.
"""

from __future__ import annotations

from pathlib import Path

import filelock

from coordstore import open_store
from coordstore.clock import MONOTONIC, WALL, Clock
from coordstore.errors import InputError
from coordstore.models import ACTIVE, RUN_OVER, TASK_STATUSES, TERMINAL

from agents.clis.base import MODEL_SERVER_ENV
from agents.clis.serverurl import agent_env
from agents.config import MCP_URL_ENV

from orchestrator.runs.budget import BudgetMeter
from orchestrator.runs.exports import export_run
from orchestrator.runs.external import ExternalController
from orchestrator.runs.finalmerge import merge_completed
from orchestrator.runs.forecaster import Forecaster
from orchestrator.runs.mergeverify import MergeVerifier, clear_leftovers, verify_final
from orchestrator.runs.outcome import settle
from orchestrator.runs.phases import Spawning, note_phase
from orchestrator.runs.remotemerge import RemoteMerges
from orchestrator.runs.toolserver import ToolServer
from orchestrator.runs.watcher import EventWatcher
from orchestrator.supervision.control import RunController
from orchestrator.supervision.interrupts import Interrupted, catch_signals, deferred
from orchestrator.supervision.supervisor import Supervisor
from orchestrator.views.runinfo import RunRef, live_processes, open_run, write_pidfile
from orchestrator.rundir import RunPaths, RunSpec

TICK_S = 0.25  # how often the supervisor judges when no event wakes the loop
DRAIN_S = 5.0  # how long runners get to exit by themselves once every task is terminal
RESUME_LOCK = ".orchestrator.lock"  # held while a resume checks liveness and writes its pid file
RESUME_LOCK_TIMEOUT_S = 30.0
OPEN = tuple(s for s in TASK_STATUSES if s not in TERMINAL)


class Orchestrator:
    def __init__(self, spec: RunSpec, paths: RunPaths, wall: Clock = WALL, clock: Clock = MONOTONIC):
        """``wall``: the run's time, compared with leases and event stamps (the store's clock and
        the supervisor's ``now``); ``clock``: this process's deadlines and the watcher's waits.
        A test passes one fake clock for both and calls ``step()``."""
        self.spec = spec
        self.paths = paths
        self.wall = wall
        self.clock = clock
        self.store = open_store(spec.store_url, clock=wall)
        self.external = spec.workers == "external"  # runners on `orch worker`s: slots, not processes
        self.controller = ExternalController(spec, paths, self.store) if self.external else RunController(spec, paths, self.store)
        self.remote_merges = RemoteMerges(spec, self.store) if self.external else None
        self.watcher = EventWatcher(paths.events, self.store, spec.run_id, clock=clock)
        self.supervisor = Supervisor(self.store, spec.run_id, self.controller.supervision, self.controller)
        self.forecaster = None if self.external else Forecaster(spec, paths, self.store)  # live conflict forecasts
        self.budget = BudgetMeter(spec.budget, self.store, spec.run_id) if spec.budget else None
        if self.budget is not None:
            self.watcher.on_ingested = self.budget.add
        self.deadline = self.clock() + round(spec.timeout_s * 1000)
        self.progress = None  # optional callback(done, total)
        self.model_server = None
        self.tool_server: ToolServer | None = None  # agent-driven variants: the coordination tools
        self._last_tick_ms = -1 << 62  # the first step always judges
        self._owner = False  # this process is the run's orchestrator (pid file written)
        self._spawning: Spawning | None = None  # a spawn phase until every runner reported in
        self._took_over_ms = 0  # when start() or reattach() began (the run's clock)
        self.merge_verifier: MergeVerifier | None = None  # verify: with after_each_merge

    def _start_merge_verifier(self) -> None:
        if self.spec.verify:
            clear_leftovers(self.spec, self.paths)  # of an orchestrator killed mid-verification
        if self.spec.verify and self.spec.verify.get("after_each_merge"):
            self.merge_verifier = MergeVerifier(self.spec, self.paths, self.store)

    def _start_model_server(self) -> None:
        """The variant's scripted model server; runners (re)spawned from now on point at it."""
        if not self.spec.model_server:
            return
        # lazy: the model server only for variants that use one
        from orchestrator.modelserver import ModelServer
        from orchestrator.modelserver.tasksource import StoreTasks

        options = {"repo": self.spec.repo} if self.spec.model_server == "replay" else None
        # a fresh key per start, given only to this run's runners; files are read only in its worktrees
        self.model_server = ModelServer(self.spec.model_server, script_options=options,
                                        tasks=StoreTasks(self.spec.store_url, self.spec.run_id),
                                        record=self.paths.root / "model-requests.jsonl", worktrees=[self.paths.worktrees])
        self.model_server.start()
        srv = self.model_server
        self.controller.extra_env = {**agent_env(srv.url, srv.key), MODEL_SERVER_ENV: srv.url}

    def _start_tool_server(self) -> None:
        """Agent-driven variants: the run's coordination server, before any runner, which finds its
        URL in its environment (and its own token, ``RunController.spawn``). A resume starts a new
        one: a new port; the tokens are the run's, kept in its directory."""
        if self.spec.coordination != "agents":
            return
        self.tool_server = ToolServer(self.paths)
        url = self.tool_server.start()
        self.controller.extra_env = {**self.controller.extra_env, MCP_URL_ENV: url}

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        spawning = Spawning(self.wall())
        self._took_over_ms = spawning.start_ms
        write_pidfile(self.paths)  # lets `orch runs`/`status` tell a live run from an interrupted one
        self._owner = True
        self._start_model_server()
        self._start_tool_server()
        self._start_merge_verifier()
        self.watcher.start()
        self.controller.spawn_all()
        self._spawning = spawning

    def reattach(self) -> None:
        """Resume: take the run over (refused while its orchestrator lives or once it ended),
        reopen it, re-attach live runners, respawn the others after requeueing their tasks."""
        self._claim_for_resume()
        spawning = Spawning(self.wall(), resume=True)
        self._took_over_ms = spawning.start_ms
        self.store.reopen_run(self.spec.run_id, reason="resumed")
        self._start_model_server()  # a new port: re-attached runners keep the old URL and get requeued if they fail
        self._start_tool_server()  # likewise: a re-attached agent that cannot reach the old one ends and is respawned
        self._start_merge_verifier()
        self.watcher.start()
        for agent_id in self.controller.attach_all():
            for t in self.store.list_tasks(self.spec.run_id, status=ACTIVE, owner=agent_id):
                self.store.requeue(self.spec.run_id, t.id, reason="runner gone after orchestrator restart", by="orchestrator")
            self.controller.spawn(agent_id)
        self._spawning = spawning

    def _claim_for_resume(self) -> None:
        """Become the run's orchestrator, or ``InputError`` with nothing changed: while the one
        recorded is alive (two supervisors would fight over the runners), or when the run ended.
        Check and pid file are one step under a lock, so two resumes at once cannot both win."""
        run_id = self.spec.run_id
        lock = filelock.FileLock(str(self.paths.root / RESUME_LOCK), timeout=RESUME_LOCK_TIMEOUT_S)
        try:
            lock.acquire()
        except filelock.Timeout as e:
            raise InputError(f"run {run_id}: another resume holds {lock.lock_file}") from e
        try:
            live = [p for p in live_processes(RunRef(self.paths, self.spec), self.store) if p.role == "orchestrator"]
            if live:
                raise InputError(f"run {run_id} is still running ({live[0]} alive); resume is for a run whose orchestrator is gone")
            run = self.store.get_run(run_id)
            if run.status in RUN_OVER:
                why = f" ({run.reason})" if run.reason else ""
                raise InputError(f"run {run_id} already {run.status}{why}; nothing to resume")
            write_pidfile(self.paths)
            self._owner = True
        finally:
            lock.release()

    def counts(self) -> tuple[int, int]:
        """(terminal tasks, all tasks): two counts, no task read (asked every turn)."""
        total = self.store.count_tasks(self.spec.run_id)
        return total - self.store.count_tasks(self.spec.run_id, status=OPEN), total

    def step(self, now_ms: int | None = None) -> bool:
        """One turn: ingest events, judge agents, report progress. True when every task is terminal
        (or the budget stopped dispatching and nothing dispatched is left running)."""
        now_ms = self.wall() if now_ms is None else now_ms
        self.watcher.poll()
        if self.budget is not None and self.budget.check(now_ms) and self.budget.drained():
            return True
        if self.remote_merges is not None and self.spec.merge_mode == "immediate":
            self.remote_merges.step()  # each completed task's commit, fetched from the remote, as it completes
        if self._spawning is not None and not self._spawning.waiting(self.store, self.spec.run_id, self.controller.agents()):
            self._spawning.close(self.store, self.spec.run_id, now_ms)
            self._spawning = None
        # events wake the loop many times a second; judging agents (a few queries each) need not
        if now_ms - self._last_tick_ms >= TICK_S * 1000:
            self._last_tick_ms = now_ms
            self.supervisor.tick(now_ms)
        if self.merge_verifier is not None:
            self.merge_verifier.poll(now_ms)
        if self.forecaster is not None:
            self.forecaster.step(now_ms)
        if self.progress:
            done, total = self.counts()
            self.progress(done, total)
            return done == total
        return self.store.count_tasks(self.spec.run_id, status=OPEN) == 0

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

    def conduct(self, resume: bool = False) -> str:
        """Start (or, ``resume``, re-attach) and run to the end; returns the final status.

        Ctrl-C, SIGTERM and SIGHUP stop every runner's process group and record the run
        ``interrupted`` (``interrupt``), so it stays resumable; ``Interrupted`` is then re-raised,
        naming the run, for the caller to report."""
        with catch_signals():
            try:
                self.reattach() if resume else self.start()
                return self.run()
            except Interrupted as e:
                if self._owner:  # else the run is as it was: nothing of ours to stop or record
                    e.run_id, e.run_dir = self.spec.run_id, str(self.paths.root)
                    with deferred(deliver=False):  # a second signal must not cut the shutdown short
                        self.interrupt(f"{e.name} received")
                raise

    def interrupt(self, reason: str) -> None:
        """Stop every runner, record the run ``interrupted`` with ``reason``. Their tasks stay as
        they are: ``resume`` requeues them when it respawns the runners."""
        self.controller.stop_all()
        if self.merge_verifier is not None:
            self.merge_verifier.finish(complete=False)
        self.watcher.poll()  # their last events
        self.watcher.stop()
        if self.store.get_run(self.spec.run_id).status != "running":
            return  # ended before the signal: nothing left to interrupt
        for a in self.store.list_agents(self.spec.run_id):
            if a.status not in ("stopped", "dead"):
                self.store.set_agent_status(self.spec.run_id, a.id, "stopped", reason=f"run interrupted: {reason}")
        self.store.finish_run(self.spec.run_id, "interrupted", reason=reason)

    def finish(self, status: str) -> str:
        """Let runners exit, stop the rest, merge what waited, verify the merged tree (``verify:``),
        export, close the run; returns the run's final status. The drain (until every runner is gone) and the final merge are
        recorded as phases, and so is a spawn still under way (``orchestrator.runs.phases``)."""
        run_id = self.spec.run_id
        drain_start = self._last_terminal_ms(self.wall())
        if self._spawning is not None:  # the run ended before every runner reported in
            self._spawning.close(self.store, run_id, drain_start,
                                 waiting=self._spawning.waiting(self.store, run_id, self.controller.agents()))
            self._spawning = None
        # runners exit by themselves once every task is terminal; at a timeout they would go on
        # working through the drain, so they are stopped at once
        end = self.clock() + (round(DRAIN_S * 1000) if status == "finished" else 0)
        while not self.controller.all_exited() and self.clock() < end:
            self.watcher.wait(0.05)
            self.watcher.poll()
        self.controller.stop_all()
        self.watcher.poll()
        self.watcher.stop()
        for a in self.store.list_agents(self.spec.run_id):
            if a.status not in ("stopped", "dead"):
                self.store.set_agent_status(self.spec.run_id, a.id, "stopped", reason=f"run {status}")
        note_phase(self.store, run_id, "drain", drain_start, self.wall())
        if self.remote_merges is not None:  # what is left: everything, in deferred mode
            merge_start = self.wall()
            self.remote_merges.finish()
            note_phase(self.store, run_id, "final_merge", merge_start, self.wall(), branches=len(self.remote_merges._works))
        elif self.spec.merge_mode == "deferred":
            merge_start = self.wall()
            merged = merge_completed(self.spec, self.store)
            note_phase(self.store, run_id, "final_merge", merge_start, self.wall(), branches=len(merged))
        if self.merge_verifier is not None:  # the merges left to verify; a run cut short leaves them
            self.merge_verifier.finish(complete=status == "finished")
        if status == "finished":  # an interrupted run's tree is verified when a resume finishes it
            verify_final(self.spec, self.paths, self.store)
        status, reason = settle(self.spec, self.store, status)
        if self.budget is not None:
            reason = self.budget.final_reason(reason)
        self.store.finish_run(self.spec.run_id, status, reason=reason)
        export_run(self.spec, self.paths, self.store)
        return status

    def _last_terminal_ms(self, now_ms: int) -> int:
        """When the drain began: the last task's terminal row when every task ended, else now
        (a timeout, or tasks left behind); never before this process took the run (a resume of
        a run whose tasks had all ended drains from the resume, not across the downtime)."""
        tasks = self.store.list_tasks(self.spec.run_id)
        if not tasks or any(t.status not in TERMINAL for t in tasks):
            return now_ms
        rows = self.store.history(self.spec.run_id, entity="task")
        last = max((r.ts_ms for r in rows if r.to_state in TERMINAL and not r.is_note), default=now_ms)
        return min(now_ms, max(last, self._took_over_ms))

    def close(self) -> None:
        if self.merge_verifier is not None:  # an orchestrator error: no verification left running
            self.merge_verifier.finish(complete=False)
        if self.tool_server is not None:
            self.tool_server.stop()
            self.tool_server = None
        if self.model_server is not None:
            self.model_server.stop()
            self.model_server = None
        self.store.close()

    @classmethod
    def of_run(cls, run_dir: Path) -> "Orchestrator":
        """The orchestrator of an existing run (for ``conduct(resume=True)``); ``InputError`` when
        ``run_dir`` is not a run or its store is gone."""
        ref = open_run(run_dir)
        ref.open_store().close()  # a missing store is an error, not a new empty one
        return cls(ref.spec, ref.paths)
