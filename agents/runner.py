"""One agent's process: ``python -m agents.runner --config FILE``.

Loop: ask the policy for the next task (or wait, or stop when the run is over) -> bring the
worktree up to date when the task has start-blockers (before every task with
``policy_options.avoid_conflicts``) -> ``store.start`` -> run the agent kind in
the worktree -> commit on the agent's branch as ``task <id>: <title>`` (agent identity) -> the
task's ``verify`` command -> on a worker of another host, push the commit to the run's remote ->
in ``immediate`` merge mode, merge the branch into the merged ref
BEFORE ``store.complete``, so dependents that become ready see the work -> complete or fail.

In agent-driven variants (``coordination: agents``) there is no policy: the agent's kind plays
its role through the coordination tools (``agents.driven``) and the runner keeps the process, the
lease and the events.

A ``StaleAttempt`` (the supervisor took the task away) drops the task and the loop goes on.
SIGTERM (how the orchestrator stops runners) emits a ``log`` event and exits 143 at once.
Start-up is kept cheap: no typer or watchdog; git runs through ``gitwork.runner`` (standard library only).

Exit status: 0 run over, 1 error (one line on stderr), 2 bad configuration, 143 SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from pathlib import Path

from coordstore import open_store
from coordstore.clock import MONOTONIC, WALL, Clock
from coordstore.errors import MOVED_ON, NotFound, OrchError, StoreError
from coordstore.models import METRIC_FIELDS, USAGE_KEYS, Agent

from agents.config import RunnerConfig
from agents.events import EventWriter
from agents.policies import AGAIN, OVER, WAIT, Entry, PolicyEnv, make_policy
from agents.pulse import LeaseLost, Pulse

EXIT_OK, EXIT_ERROR, EXIT_CONFIG, EXIT_TERMINATED = 0, 1, 2, 143
EXIT_LEASE_LOST = 3  # could not renew its lease for a whole lease: its work belongs to others now
IDLE_LOOK_MS = 500  # an idle runner looks at least this often, change reported or not (a NOTIFY can be lost)
MAX_LOOP_ERRORS = 20  # consecutive store errors before giving up: the store is gone, not busy


class Terminated(BaseException):
    """Raised by the SIGTERM/SIGINT handler; a BaseException so no ``except Exception`` eats it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class Runner:
    def __init__(self, cfg: RunnerConfig, store=None, clock: Clock = MONOTONIC, wall: Clock = WALL):
        """``clock`` times every wait (the pulse's, hence the policy's and the kind's), ``wall``
        stamps the events (``coordstore.clock``); a test passes one fake clock for both."""
        self.cfg = cfg
        self.events = EventWriter(cfg.events_dir, cfg.agent_id, clock=wall)
        self.store = store if store is not None else open_store(cfg.store_url)
        self.pulse = Pulse(self.store, cfg.run_id, cfg.agent_id, self.events, cfg.heartbeat_ms, cfg.lease_ms, clock=clock)
        self.env = PolicyEnv(self.store, cfg.run_id, cfg.agent_id, cfg.role, cfg.tags, cfg.policy_options, self.pulse, self.events)
        # agent-driven: the agent picks its tasks through the coordination tools (agents.driven)
        self.driven = cfg.coordination == "agents"
        self.policy = None if self.driven else make_policy(cfg.policy, self.env)
        self.kind = None
        if cfg.works and not self.driven:
            from agents.kinds import resolve_kind  # lazy: the runner's start-up; kinds and git only for working agents

            self.kind = resolve_kind(cfg.kind)(dict(cfg.kind_options))
        self.worktree = Path(cfg.worktree) if cfg.worktree else None
        self.errors = 0
        self.pacer = None  # rate-limit back-pressure of a working agent (agents.backpressure)
        if self.kind is not None:
            from agents.backpressure import make_pacer, provider_of  # lazy: working agents only

            provider = cfg.provider or provider_of(cfg.kind, cfg.kind_options)
            self.pacer = make_pacer(cfg.backpressure, self.store, cfg.run_id, cfg.agent_id, provider, cfg.provider_ceiling,
                                    self.events, self.pulse, cfg.poll_ms)
            self.events.on_rate_limited = self.pacer.observed
        self.stop = None  # a budgeted run's dispatch stop (agents.budgetstop)
        if cfg.budgeted:
            from agents.budgetstop import DispatchStop  # lazy: budgeted runs only

            self.stop = DispatchStop(self.store, cfg.run_id)
        self._head: str | None = None  # the worktree's HEAD as the last task left it: one rev-parse less per task

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        c = self.cfg
        self.events.started(kind=c.kind, role=c.role, policy=c.policy)
        try:
            self.store.get_agent(c.run_id, c.agent_id)
        except NotFound:  # started by hand or by a test: the orchestrator did not register us
            self.store.register_agent(c.run_id, Agent(id=c.agent_id, kind=c.kind, role=c.role, tags=c.tags or [], pid=os.getpid()),
                                      lease_ms=c.lease_ms)
        for key in getattr(self.kind, "unknown", ()) or ():
            self.events.log(f"kind {c.kind}: option {key!r} is not one of its options; ignored", level="warning")
        if self.worktree is not None:
            from gitwork import agentgit as gitops  # lazy: the runner's start-up; git only for working agents

            if gitops.is_dirty(self.worktree):  # a crashed predecessor's half-done task
                gitops.discard(self.worktree)
                self.events.log("discarded uncommitted changes left in the worktree by a previous process", level="warning")
        if getattr(self.pacer, "mode", None) == "shared":
            self.pacer.release_predecessors()
        self.pulse.beat(force=True)

    def step(self) -> bool:
        """One decision of the policy and what follows from it. False once the run is over."""
        if self.stop is not None and self.stop.check():
            return self.after_stop()
        decision = self.policy.next()
        if decision == OVER:
            return False
        if decision == WAIT:
            self.idle()
        elif decision == AGAIN:
            self.pulse.beat()
        elif isinstance(decision, Entry):  # a slot in another agent's best-of round
            self.rounds.enter(decision)
        elif self.cfg.policy == "best_of":  # a task this agent holds: a round of N attempts
            self.rounds.hold(decision)
        else:
            self.execute(decision)
        return True

    @property
    def rounds(self):
        """Best-of rounds (``agents.bestof``), built on first use."""
        if getattr(self, "_rounds", None) is None:
            from agents.bestof import Rounds  # lazy: only best-of runners need it

            self._rounds = Rounds(self, self.policy)
        return self._rounds

    def after_stop(self) -> bool:
        """The budget is spent: run what was already assigned to this agent (a work task, not a
        container), one at a time; with none, this runner is done."""
        if self.kind is not None:
            ix = self.env.index()
            for t in self.store.list_tasks(self.cfg.run_id, status="assigned", owner=self.cfg.agent_id):
                if not ix.is_container(t.id):
                    self.execute(t)
                    return True
        self.events.log(f"dispatch stopped ({self.stop.reason}): nothing left to run here")
        return False

    def idle(self) -> None:
        """Nothing to do now: wait until the store reports a change of the run (``wait_for_change``:
        a cheap check every ``poll_ms`` on SQLite, LISTEN/NOTIFY on PostgreSQL) or IDLE_LOOK_MS
        passed, so 64 idle runners do not run the policy's queries 50 times a second each. A test's
        fake clock steps the waits instead: a plain ``poll_ms`` sleep on it."""
        c = self.cfg
        if self.pulse.clock is not MONOTONIC:
            self.pulse.sleep(c.poll_ms / 1000.0)
            return
        self.pulse.idle(max(c.poll_ms, IDLE_LOOK_MS) / 1000.0, lambda ms: self.store.wait_for_change(c.run_id, ms, c.poll_ms))

    def run(self) -> int:
        self.start()
        if self.driven:
            from agents.driven import drive  # lazy: the MCP client only for agent-driven runners

            drive(self.cfg, self.store, self.events, self.pulse)
            self.finish("run over")
            return EXIT_OK
        while True:
            try:
                if not self.step():
                    break
                self.errors = 0
            except StoreError as e:  # a busy store: retry after a pause, give up if it persists
                self.errors += 1
                self.events.error(f"store error: {e}", task=self.pulse.current_task)
                if self.errors >= MAX_LOOP_ERRORS:
                    raise
                self.pulse.sleep(self.cfg.poll_ms / 1000.0)
        self.finish(f"dispatch stopped: {self.stop.reason}" if self.stop is not None and self.stop.stopped else "run over")
        return EXIT_OK

    def finish(self, reason: str) -> None:
        try:
            self.store.set_agent_status(self.cfg.run_id, self.cfg.agent_id, "stopped", reason=reason)
        except StoreError as e:
            self.events.error(f"could not mark the agent stopped: {e}")
        self.events.done(reason)

    # ------------------------------------------------------------------ one task
    @property
    def work(self):
        """The git side of this agent's tasks (``agents.taskwork``), built on first use."""
        if getattr(self, "_work", None) is None:
            from agents.taskwork import TaskWork  # lazy: the runner's start-up; git only for working agents

            c = self.cfg
            self._work = TaskWork(self.store, c.run_id, c.agent_id, self.worktree, c.repo, c.merged_ref, c.merge_mode,
                                  c.kind_options, events=self.events, pulse=self.pulse, index=self.env.index,
                                  seed=c.seed, time_scale=c.time_scale, remote=c.remote, remote_branch=c.remote_branch)
        return self._work

    @property
    def identity(self) -> dict[str, str]:
        return self.work.identity

    def execute(self, task) -> None:
        # lazy: the runner's start-up; kinds and git only for working agents
        from gitwork import agentgit as gitops
        from agents.kinds import KindContext, Result

        c, ev, tid, att = self.cfg, self.events, task.id, task.attempt
        self.pulse.current_task = tid
        try:
            known, self._head = self._head, None  # HEAD as the last task left it, if it is known
            # avoid_conflicts: a task held back for another's files starts on that task's merged work
            if self.env.index(tid).effective_blockers(tid) or c.policy_options.get("avoid_conflicts") is True:
                self.take_in_blockers(task)
                known = None
            try:
                task = self.store.start(c.run_id, tid, c.agent_id, att)
            except MOVED_ON as e:
                ev.log(f"task {tid} was taken away before it started ({e})", level="warning", task=tid)
                return
            ev.log(f"task {tid} started (attempt {att})", task=tid)
            base = known or gitops.head(self.worktree)
            ctx = KindContext(c.run_id, c.agent_id, self.worktree, c.seed, c.time_scale, att, ev, self.pulse, self.identity,
                              pacer=self.pacer, shared_dir=Path(c.events_dir).parent.parent / "providers")
            result = None
            try:
                self.pacer.acquire()  # the provider's slot for this task's model work (shared back-pressure)
                result = self.kind.run(task, ctx)
            except OrchError as e:
                result = Result(ok=False, reason=str(e))
            except Exception as e:  # a kind's bug fails its task, not the agent
                self.stop_if_terminated(e)
                traceback.print_exc()  # into the agent's log, for whoever debugs the kind
                ev.error(f"kind {c.kind} raised {type(e).__name__}: {e}", task=tid)
                result = Result(ok=False, reason=f"kind {c.kind} raised {type(e).__name__}: {e}")
            finally:
                self._release(result)
            self.add_usage(tid, result.tokens)
            if not self.still_mine(tid, att):  # requeued meanwhile: another attempt will redo it
                gitops.discard(self.worktree, base)
                ev.log(f"task {tid} was taken away while running (attempt {att}); its work is dropped", level="warning", task=tid)
                return
            work = getattr(self, "_work", None)
            if work is not None:
                work.last_head = None  # set again by this task's commit, not left from the last one
            if result.ok:
                result = self.commit_and_verify(task, base, result)
            if not result.ok:
                gitops.discard(self.worktree, base)
                self._head = base
                self.report(lambda: self.store.fail(c.run_id, tid, c.agent_id, att, reason=result.reason or "failed"), tid, "failed")
                ev.log(f"task {tid} failed: {result.reason}", level="warning", task=tid)
                return
            head = getattr(getattr(self, "_work", None), "last_head", None) or gitops.head(self.worktree)  # known from the commit
            data = {"commit": head, **result.data}
            if c.remote:  # pushed before it is reported done: a worker that dies now loses nothing
                problem = self.work.push(task, head)
                if problem:
                    gitops.discard(self.worktree, base)
                    self.report(lambda: self.store.fail(c.run_id, tid, c.agent_id, att, reason=problem), tid, "failed")
                    return
            if c.merge_mode == "immediate":
                data["merge"] = self.merge(task, head)
            self._head = head
            if self.report(lambda: self.store.complete(c.run_id, tid, c.agent_id, att, data=data), tid, "completed"):
                ev.log(f"task {tid} completed", task=tid)
        finally:
            self.pulse.current_task = None

    @staticmethod
    def stop_if_terminated(e: Exception) -> None:
        """A kind raised ``e`` after a signal landed inside a lock (queue.get): Python raised e.g.
        RuntimeError in the signal's place; the runner is stopping, the task is not failed."""
        if _TERMINATED:
            raise _TERMINATED[-1] from e

    def _release(self, result) -> None:
        """The provider's slot back; a success grows its limit. A store error here must not hide
        the task's outcome (a slot left held is released by this agent's next runner)."""
        try:
            self.pacer.release(ok=bool(result is not None and result.ok))
        except StoreError as e:
            self.events.error(f"could not release the provider slot: {e}")

    def report(self, call, tid: str, what: str) -> bool:
        try:
            call()
            return True
        except MOVED_ON as e:
            self.events.log(f"task {tid} could not be {what}: it was taken away ({e})", level="warning", task=tid)
            return False

    def still_mine(self, tid: str, attempt: int) -> bool:
        t = self.store.get_task(self.cfg.run_id, tid)
        return t.owner == self.cfg.agent_id and t.attempt == attempt and t.status == "working"

    def add_usage(self, tid: str, tokens: dict) -> None:
        """A kind's usage (USAGE_KEYS counts and ``cost_usd``) onto its task: all 8 metric slots."""
        if tokens:
            slots = {f: int(tokens.get(k, 0) or 0) for f, k in zip(METRIC_FIELDS, USAGE_KEYS)}
            self.store.add_usage(self.cfg.run_id, tid, cost_usd=float(tokens.get("cost_usd", 0.0) or 0.0), **slots)

    def commit_and_verify(self, task, base: str, result):
        return self.work.commit_and_verify(task, base, result)

    def merge(self, task, head: str) -> dict:
        return self.work.merge(task, head)

    def take_in_blockers(self, task) -> None:
        self.work.take_in_blockers(task)


_TERMINATED: list[Terminated] = []  # the signal received, kept: raising it may be lost on the way (below)


def _on_signal(signum, frame):
    _TERMINATED.append(Terminated(signum))
    raise _TERMINATED[-1]


PARENT_PID_ENV = "ORCH_PARENT_PID"  # set by `orch worker`: this runner must not outlive it


def _die_with_parent(parent: int) -> bool:
    """Ask Linux for SIGKILL when the worker that spawned us dies (a killed worker's runners must
    stop renewing its leases); False when it is gone already."""
    if sys.platform.startswith("linux"):
        import ctypes  # lazy: the runner's start-up; only under a worker

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    return os.getppid() == parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agents.runner", description="Run one orch agent until its run is over.")
    ap.add_argument("--config", required=True, help="the runner's JSON config file")
    args = ap.parse_args(argv)
    try:
        cfg = RunnerConfig.load(args.config)
    except OrchError as e:
        print(f"orch runner: {e}", file=sys.stderr)
        return EXIT_CONFIG
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    if os.environ.get(PARENT_PID_ENV) and not _die_with_parent(int(os.environ[PARENT_PID_ENV])):
        return EXIT_TERMINATED  # the worker that spawned us is already gone
    runner = None
    try:
        runner = Runner(cfg)
        return runner.run()
    except Terminated as t:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM during the goodbye ends it
        if runner is not None:
            name = signal.Signals(t.signum).name
            runner.events.emit("log", runner.pulse.current_task, msg=f"{name} received: exiting", level="warning", signal=name)
        return EXIT_TERMINATED
    except LeaseLost as e:  # cut off from the store: stop before doing work that is no longer ours
        print(f"orch runner {cfg.agent_id}: {e}; exiting", file=sys.stderr)
        if runner is not None:
            runner.events.error(str(e), task=runner.pulse.current_task)
        return EXIT_LEASE_LOST
    except OrchError as e:
        print(f"orch runner {cfg.agent_id}: {e}", file=sys.stderr)
        if runner is not None:
            runner.events.error(str(e), task=runner.pulse.current_task)
        return EXIT_ERROR
    finally:
        if runner is not None:
            try:
                runner.store.close()
            except Exception:  # closing after a signal mid-transaction: the process ends anyway
                pass


if __name__ == "__main__":
    sys.exit(main())
