"""`orch worker`: run agents of runs whose coordinator started them with ``--workers external``,
on any host that reaches the store and the run's git remote.

The loop, every ``POLL_S``: find running external runs in the store (the RunSpec is in the run's
``config``: nothing is read from the coordinator's run directory), fold each run's slot notes
(``orchestrator.runs.slots``), take open slots whose agent's tags this worker's ``--tags`` cover,
up to ``--slots`` at once, and for each: fetch the run's base from the remote into the worker's
own clone (``DIR/<run>/repo.git``, made on first use), add a worktree for the slot's generation,
spawn the normal runner (``python -m agents.runner``) configured for that worktree, this worker's
events directory and store URL, the remote (it pushes each task's commit before reporting the
task done, and fetches its blockers' commits from there) -- and ingest its events into the store
(``EventWatcher``). The runner's pulse renews the agent's lease.

A runner whose slot moved on (the coordinator closed or reopened it: a new generation) is
stopped; one that exited is forgotten. SIGTERM/SIGINT stop every runner and exit; nothing is
released that the leases do not release by themselves. Runners die with the worker
(``ORCH_PARENT_PID``: the runner asks the kernel for SIGKILL when its parent goes), so a killed
worker's slots expire and the coordinator's supervisor requeues their tasks.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from coordstore import open_store
from coordstore.errors import OrchError, StoreError
from coordstore.models import Agent, Event

from gitwork.remote import base_ref, fetch
from gitwork.runner import git
from gitwork.worktrees import Worktrees

from agents.config import RunnerConfig
from agents.runner import PARENT_PID_ENV
from agents.events import event_name, highest_seq

from orchestrator.rundir import RunSpec
from orchestrator.runs.slots import SlotTable, take_slot
from orchestrator.runs.watcher import EventWatcher
from orchestrator.supervision.procs import spawn
from orchestrator.supervision.verdicts import SupervisionConfig

POLL_S = 0.2
RUNS_EVERY_S = 1.0  # how often the list of running runs is read again
STOP_GRACE_S = 3.0


@dataclass
class RunState:
    spec: RunSpec
    table: SlotTable
    root: Path
    cloned: bool = False


@dataclass
class Held:
    run_id: str
    agent: str
    gen: int
    proc: object
    watcher: EventWatcher


@dataclass
class WorkerOptions:
    store_url: str
    dir: Path
    tags: list[str] | None = None
    slots: int = 1
    once: bool = False  # exit once the runners it took have all ended
    idle_exit_s: float | None = None  # exit after this long holding nothing with nothing to take
    log: object = field(default=None)  # callable(str) for one-line progress, or None


class Worker:
    def __init__(self, opts: WorkerOptions):
        self.opts = opts
        self.dir = Path(opts.dir).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.store = open_store(opts.store_url)
        host = socket.gethostname()
        self.info = {"worker": f"{host}-{os.getpid()}-{secrets.token_hex(2)}", "host": host, "pid": os.getpid(),
                     "slots": opts.slots, "tags": opts.tags}
        self.runs: dict[str, RunState] = {}
        self.held: dict[tuple[str, str], Held] = {}
        self.took = 0
        self._runs_at = -1e9
        self._stopping = False
        self._outage: str | None = None  # the store error this worker is riding out, if any

    def say(self, msg: str) -> None:
        if self.opts.log:
            self.opts.log(msg)

    # ------------------------------------------------------------------ the loop
    def run(self) -> int:
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        idle_since = time.monotonic()
        try:
            while not self._stopping:
                self.guarded_tick()
                if self.held:
                    idle_since = time.monotonic()
                elif self.opts.once and self.took:
                    break
                elif self.opts.idle_exit_s is not None and time.monotonic() - idle_since >= self.opts.idle_exit_s:
                    break
                time.sleep(POLL_S)
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            self.stop_all()
            self.store.close()
        return 0

    def _on_signal(self, signum, frame) -> None:
        self._stopping = True

    def guarded_tick(self) -> None:
        """A tick that rides out a store it cannot reach: the runners stop by themselves when they
        cannot renew their leases (``agents.pulse.LeaseLost``), the worker reconnects and goes on."""
        self._reap()  # needs no store: a cut-off worker still sees its runners exit
        try:
            if self._outage is not None:
                self._reconnect()
            self.tick()
        except StoreError as e:
            if self._outage is None:
                self.say(f"store unreachable ({e}); retrying, runners stop when their leases lapse")
            self._outage = str(e)

    def _reconnect(self) -> None:
        try:
            self.store.close()
        except Exception:  # a broken connection may fail to close: it is dropped either way
            pass
        self.store = open_store(self.opts.store_url)  # StoreError while still unreachable
        for h in self.held.values():
            h.watcher.store = self.store
        self._outage = None
        self.say("store reachable again")

    def tick(self) -> None:
        self._tend()
        if time.monotonic() - self._runs_at >= RUNS_EVERY_S:
            self._runs_at = time.monotonic()
            self._find_runs()
        for run_id, rs in list(self.runs.items()):
            rs.table.refresh(self.store)
            for agent in rs.table.open_ones():
                if len(self.held) >= self.opts.slots or self._stopping:
                    return
                if self._fits(rs.spec, agent):
                    self._take(rs, agent, rs.table.slots[agent].gen)

    def _find_runs(self) -> None:
        running = {}
        for r in self.store.list_runs():
            if r.status == "running" and r.config.get("workers") == "external" and r.config.get("spec"):
                running[r.id] = r
        for run_id in list(self.runs):
            if run_id not in running and not any(h.run_id == run_id for h in self.held.values()):
                del self.runs[run_id]
        for run_id, r in running.items():
            if run_id not in self.runs:
                try:
                    spec = RunSpec.model_validate(r.config["spec"])
                except ValueError as e:
                    self.say(f"run {run_id}: unreadable spec in the store ({e}); skipped")
                    continue
                self.runs[run_id] = RunState(spec, SlotTable(run_id), self.dir / run_id)

    def _fits(self, spec: RunSpec, agent: str) -> bool:
        a = next((x for x in spec.agents if x.id == agent), None)
        if a is None:
            return False
        return self.opts.tags is None or set(a.tags or []) <= set(self.opts.tags)

    # ------------------------------------------------------------------ one slot
    def _take(self, rs: RunState, agent: str, gen: int) -> None:
        spec = rs.spec
        if not take_slot(self.store, spec.run_id, agent, gen, self.info):
            return  # another worker was first
        a = next(x for x in spec.agents if x.id == agent)
        slot = rs.table.slots[agent]
        kind = slot.kind or a.kind
        lease_ms = _lease_ms(spec)
        # a lease from now on: should this worker die before its runner is up, the slot expires
        self.store.heartbeat(spec.run_id, agent, lease_ms)
        self.took += 1
        try:
            held = self._start(rs, a, gen, kind, lease_ms)
        except (OrchError, OSError) as e:
            # its lease runs out and the coordinator reopens the slot, as for a worker that died
            self.say(f"run {spec.run_id}: agent {agent} (generation {gen}): cannot start: {e}")
            return
        self.held[(spec.run_id, agent)] = held
        self.say(f"run {spec.run_id}: agent {agent} (generation {gen}) started, pid {held.proc.pid}")

    def _clone(self, rs: RunState) -> Path:
        repo = rs.root / "repo.git"
        if not rs.cloned:
            if not (repo / "HEAD").exists():
                repo.mkdir(parents=True, exist_ok=True)
                git(repo, "init", "-q", "--bare")
            ref = base_ref(rs.spec.run_id)
            fetch(repo, rs.spec.remote, [f"+{ref}:{ref}"])
            rs.cloned = True
        return repo

    def _start(self, rs: RunState, a, gen: int, kind: str, lease_ms: int) -> Held:
        spec = rs.spec
        gdir = rs.root / f"g{gen}"
        worktree = None
        repo = None
        if a.works:
            repo = self._clone(rs)
            branch = spec.agent_branch(a.id) + (f"-g{gen}" if gen > 1 else "")
            worktree = Worktrees(repo, gdir / "worktrees").add(a.id, branch, base_ref(spec.run_id))
        events_root = gdir / "events"
        _continue_events(self.store, spec.run_id, a.id, events_root / a.id)
        cfg = RunnerConfig(
            store_url=self.opts.store_url, run_id=spec.run_id, agent_id=a.id, role=a.role, tags=a.tags, kind=kind,
            kind_options={**spec.kind_options, **a.options}, policy=spec.policy, policy_options=spec.policy_options,
            coordination=spec.coordination, instruction=a.instruction,
            worktree=str(worktree) if worktree else None, repo=str(repo) if repo else None,
            events_dir=str(events_root / a.id), branch=spec.agent_branch(a.id),
            merge_mode="deferred",  # the coordinator merges; blockers' commits come from the remote
            seed=spec.seed, time_scale=spec.time_scale, lease_ms=lease_ms,
            remote=spec.remote, remote_branch=spec.agent_branch(a.id), **spec.pacing(a, kind),
        )
        config_path = gdir / "agents" / f"{a.id}.json"
        config_path.parent.mkdir(parents=True, exist_ok=True)
        cfg.write(config_path)
        env = {
            "ORCH_RUN_ID": spec.run_id, "ORCH_AGENT_ID": a.id, "ORCH_STORE_URL": self.opts.store_url,
            "ORCH_WORKTREE": str(worktree or ""), PARENT_PID_ENV: str(os.getpid()),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])),
        }
        watcher = EventWatcher(events_root, self.store, spec.run_id)
        watcher.start()
        proc = spawn([sys.executable, "-m", "agents.runner", "--config", str(config_path)], a.id, env,
                     worktree or gdir, gdir / "logs")
        meta = {**self.info, "gen": gen}
        self.store.register_agent(spec.run_id, Agent(id=a.id, kind=kind, role=a.role, tags=a.tags or [], pid=proc.pid,
                                                     create_time=proc.create_time, meta=meta), lease_ms=lease_ms)
        return Held(spec.run_id, a.id, gen, proc, watcher)

    # ------------------------------------------------------------------ runners held
    def _tend(self) -> None:
        self._reap()
        for key, h in list(self.held.items()):
            h.watcher.poll()
            rs = self.runs.get(h.run_id)
            slot = rs.table.refresh(self.store).get(h.agent) if rs else None
            moved_on = slot is not None and slot.gen > h.gen
            if h.proc.alive() and not moved_on:
                continue
            if h.proc.alive():
                why = f"its slot closed ({slot.why})" if slot.closed and slot.why else "its slot moved on"
                self.say(f"run {h.run_id}: agent {h.agent} (generation {h.gen}): {why}; stopping its runner")
                h.proc.stop(grace_s=STOP_GRACE_S)
            self._forget(key)

    def _reap(self) -> None:
        """Forget the runners that exited (lost their lease, maybe): no store needed."""
        for key, h in list(self.held.items()):
            if not h.proc.alive():
                self.say(f"run {h.run_id}: agent {h.agent} (generation {h.gen}): runner exited ({h.proc.returncode})")
                self._forget(key)

    def _forget(self, key) -> None:
        h = self.held.pop(key)
        try:
            h.watcher.poll()  # its last events (a cut-off store: they stay in the worker's directory)
        except StoreError:
            pass
        finally:
            h.watcher.stop()

    def stop_all(self) -> None:
        for key, h in list(self.held.items()):
            h.proc.stop(grace_s=STOP_GRACE_S)
            self._forget(key)


def _lease_ms(spec: RunSpec) -> int:
    """The run's lease, as its coordinator reads it from the spec's supervision."""
    return SupervisionConfig.load(spec.supervision, where="execution.supervision").lease_ms


def _continue_events(store, run_id: str, agent: str, events_dir: Path) -> None:
    """The agent's events go on after the last one the store holds (an earlier generation's, from
    another worker maybe): a placeholder at that seq makes the runner's writer resume after it;
    the watcher, starting from the store's last seq, never ingests it."""
    last = store.last_event_seq(run_id, agent)
    if last < 0 or highest_seq(events_dir) >= last:
        return
    events_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    e = Event(agent=agent, seq=last, ts_ms=int(time.time() * 1000), type="log",
              data={"msg": "placeholder: earlier events are in the store", "level": "info"})
    (events_dir / event_name(last)).write_text(json.dumps(e.model_dump()))
