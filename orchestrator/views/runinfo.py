"""Read-only views of runs for the operator commands: find runs, tell whether they are alive,
show their status (`history` shows their transitions).

Everything comes from the store and the run directory, never from a running orchestrator's
memory, so every view works from another terminal, during a run and after a resume. Views are
plain dicts with a stable shape (``"version": 1``); the commands render them or print them as JSON.

Liveness: a run the store calls ``running`` whose orchestrator is gone is ``interrupted``.

1. ``<run>/orchestrator.json`` (pid + create_time, see ``write_pidfile``): running iff that very
   process is alive (a reused pid never counts).
2. Without that file (an orchestrator that does not write it): running iff one of the run's runner
   processes is alive (pid + create_time from the store), or the supervisor has already marked
   every agent dead/stopped (it may be waiting out a respawn backoff) and the history moved within
   the longest backoff plus a margin. Otherwise interrupted: agents the store believes alive whose
   processes are gone mean that nobody is supervising them any more.

``live_processes`` lists which of the run's processes still run (orchestrator and runners, each by
pid + create time): `clean` refuses while there is any, `resume` while the orchestrator is one.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import psutil

from coordstore import open_store
from coordstore.base import CoordStore
from coordstore.clock import wall_clock_ms
from coordstore.errors import InputError, StoreDamaged, StoreError, UsageError
from coordstore.models import ACTIVE, AGENT_STATUSES, SETTLED, TASK_STATUSES, TERMINAL, UNSUCCESSFUL, Agent, Run, Transition
from coordstore.private import write_private

from orchestrator.rundir import RunPaths, RunSpec
from orchestrator.supervision.procs import process_alive

SCHEMA_VERSION = 1  # of every --json shape here; bump on an incompatible change
DEFAULT_RESULTS = Path("experiments/results")
PIDFILE_NAME = "orchestrator.json"
# beyond the longest respawn backoff: time for the supervisor's next tick and the respawn itself
QUIET_MARGIN_MS = 10_000
DEFAULT_BACKOFF_MAX_MS = 60_000  # SupervisionConfig.respawn_backoff_max_ms's default
# evidence of liveness() that needs no confirmation: the store's own status, or the pid file
CERTAIN_EVIDENCE = ("store says", "orchestrator process")


# ---------------------------------------------------------------------------------- opening runs
@dataclass
class RunRef:
    """A run directory with its frozen spec; ``open_store()`` opens the run's store read-only."""

    paths: RunPaths
    spec: RunSpec

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    def open_store(self) -> CoordStore:
        missing = _missing_local_store(self.spec.store_url)
        if missing is not None:
            raise InputError(f"{self.paths.root}: the run's store {missing} does not exist (still starting, or deleted)")
        return open_store(self.spec.store_url, readonly=True)

    def agent_ids(self) -> list[str]:
        return [a.id for a in self.spec.agents]

    def check_agent(self, agent: str, working: bool = False) -> None:
        """``InputError`` naming the run's agents unless ``agent`` is one (a worker if ``working``)."""
        ids = [a.id for a in self.spec.agents if a.works or not working]
        if agent not in ids:
            what = "a working agent" if working else "an agent"
            raise UsageError(f"{agent!r} is not {what} of run {self.run_id} (agents: {', '.join(ids) or 'none'})")


def _missing_local_store(url: str) -> Path | None:
    """The path of a file/sqlite store that does not exist (opening it would create an empty one)."""
    scheme, _, rest = url.partition("://")
    if scheme in ("sqlite", "file"):
        p = Path(rest)
        return None if p.exists() else p
    return None


def open_run(run_dir: str | os.PathLike, results: Path = DEFAULT_RESULTS) -> RunRef:
    """The run at ``run_dir``; a bare run id is also looked up below ``results``."""
    p = Path(run_dir)
    if not p.is_dir() and os.sep not in str(run_dir) and results.is_dir():
        hits = [d for d in find_runs(results) if d.name == str(run_dir)]
        if len(hits) == 1:
            p = hits[0]
    if not p.is_dir():
        raise InputError(f"{run_dir}: no such run directory")
    paths = RunPaths(p)
    return RunRef(paths, paths.read_spec())


def find_runs(results: Path) -> list[Path]:
    """Every run directory (one holding ``run.json``) at any depth below ``results``; a run's own
    subdirectories (worktrees, demo repo, events) are not searched."""
    if not results.is_dir():
        raise InputError(f"{results}: no such results directory")
    found: list[Path] = []
    for root, dirs, files in os.walk(results):
        if "run.json" in files:
            found.append(Path(root))
            dirs[:] = []
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    return found


# ---------------------------------------------------------------------------------- liveness
def pidfile(paths: RunPaths) -> Path:
    return paths.root / PIDFILE_NAME


def write_pidfile(paths: RunPaths, pid: int | None = None) -> Path:
    """Record the orchestrator process of a run (call on start and on resume; atomic)."""
    proc = psutil.Process(pid or os.getpid())
    target = pidfile(paths)
    write_private(target, json.dumps({"pid": proc.pid, "create_time": proc.create_time()}) + "\n")
    return target


def _orchestrator_recorded(paths: RunPaths) -> tuple[bool, int | None]:
    """(pid file present, the pid of its process if that very process is alive)."""
    try:
        rec = json.loads(pidfile(paths).read_text())
    except FileNotFoundError:
        return False, None
    except (OSError, ValueError):
        return True, None  # a half-written or damaged file: its writer did not finish
    pid = rec.get("pid") if isinstance(rec, dict) else None
    return True, (pid if process_alive(pid, rec.get("create_time")) else None)


class LiveProcess(NamedTuple):
    role: str  # "orchestrator" or "runner <agent>"
    pid: int

    def __str__(self) -> str:
        return f"{self.role} pid {self.pid}"


def live_processes(ref: RunRef, store: CoordStore) -> list[LiveProcess]:
    """The run's processes that still run, each checked by pid + create time: its orchestrator
    (pid file) and its runners (the store). What `clean` and `resume` refuse to work under."""
    _, pid = _orchestrator_recorded(ref.paths)
    live = [LiveProcess("orchestrator", pid)] if pid else []
    return live + [LiveProcess(f"runner {a.id}", a.pid) for a in store.list_agents(ref.run_id)
                   if process_alive(a.pid, a.create_time)]


def liveness(ref: RunRef, store: CoordStore, run: Run, now: int | None = None) -> tuple[str, str]:
    """(status, evidence): the store's status, or ``interrupted`` for a running run whose
    orchestrator is gone (module docstring)."""
    if run.status != "running":
        return run.status, f"store says {run.status}"
    has_file, pid = _orchestrator_recorded(ref.paths)
    if has_file:
        return ("running", "orchestrator process alive") if pid else ("interrupted", "orchestrator process gone")
    agents = store.list_agents(ref.run_id)
    if any(process_alive(a.pid, a.create_time) for a in agents):
        return "running", "runner processes alive"
    if agents and all(a.status in SETTLED for a in agents):
        rows = store.history(ref.run_id)  # only reached in this rare state, so the full read is fine
        last = max([rows[-1].ts_ms if rows else 0, *(a.last_heartbeat or 0 for a in agents)])
        quiet = int(ref.spec.supervision.get("respawn_backoff_max_ms", DEFAULT_BACKOFF_MAX_MS)) + QUIET_MARGIN_MS
        if (now or wall_clock_ms()) - last < quiet:
            return "running", "no runner alive; waiting for a respawn"
        return "interrupted", f"no runner alive and no activity for {quiet // 1000}s"
    if not agents and (now or wall_clock_ms()) - (run.created_at or 0) < QUIET_MARGIN_MS:
        return "running", "starting"
    return "interrupted", "agents not stopped but no runner process alive"


# ---------------------------------------------------------------------------------- runs list
def _wall_clock(rows: list[Transition], running: bool, now: int) -> int | None:
    """First task start to last completion (the metrics definition); to now while running."""
    starts = [r.ts_ms for r in rows if r.to_state == "working"]
    if not starts:
        return None
    ends = [r.ts_ms for r in rows if r.to_state in TERMINAL]
    end = now if running else max(ends, default=min(starts))
    return max(0, end - min(starts))


def run_row(run_dir: Path, now: int | None = None) -> dict[str, Any]:
    """One line of ``orch runs``; a run whose store cannot be read is listed with the error
    (status ``damaged`` when the store is, see ``StoreDamaged``)."""
    now = now or wall_clock_ms()
    row: dict[str, Any] = {"run_dir": str(run_dir), "run_id": run_dir.name, "experiment": None, "variant": None,
                           "status": "unreadable", "evidence": None, "tasks_completed": None, "tasks_terminal": None,
                           "tasks_total": None, "wall_clock_ms": None, "created_at": None}
    try:
        ref = open_run(run_dir)
        row.update(run_id=ref.run_id, experiment=ref.spec.experiment_id, variant=ref.spec.variant)
        with ref.open_store() as store:
            run = store.get_run(ref.run_id)
            status, evidence = liveness(ref, store, run, now)
            tasks = store.list_tasks(ref.run_id)
            rows = store.history(ref.run_id, entity="task")
    except (InputError, StoreError) as e:
        row["evidence"] = str(e)
        if isinstance(e, StoreDamaged):
            row["status"] = "damaged"
        row["created_at"] = int(run_dir.stat().st_mtime * 1000)
        return row
    row.update(
        status=status, evidence=evidence, created_at=run.created_at,
        tasks_completed=sum(t.status == "completed" for t in tasks),
        tasks_terminal=sum(t.status in TERMINAL for t in tasks), tasks_total=len(tasks),
        wall_clock_ms=_wall_clock(rows, status == "running", now),
    )
    return row


def list_runs(results: Path, now: int | None = None) -> dict[str, Any]:
    rows = [run_row(d, now) for d in find_runs(results)]
    rows.sort(key=lambda r: (r["created_at"] or 0, r["run_id"]), reverse=True)
    return {"version": SCHEMA_VERSION, "results": str(results), "runs": rows}


# ---------------------------------------------------------------------------------- status
def latest_verdicts(rows: list[Transition]) -> dict[str, Transition]:
    """Per agent, its latest history row whose ``to_state`` is a verdict (not an action): every
    agent row is on its chain of statuses."""
    out: dict[str, Transition] = {}
    for r in rows:
        if r.entity == "agent" and r.to_state in AGENT_STATUSES:
            out[r.entity_id] = r
    return out


def last_event(store: CoordStore, run_id: str, agent: str):
    seq = store.last_event_seq(run_id, agent)
    if seq < 0:
        return None
    got = store.read_events(run_id, agent=agent, since_seq=seq - 1, limit=1)
    return got[0] if got else None


def _agent_view(spec_agent, rec: Agent | None, verdict: Transition | None, tasks, ev, now: int) -> dict[str, Any]:
    aid = spec_agent.id if spec_agent is not None else rec.id  # type: ignore[union-attr]
    owned = [t for t in tasks if t.owner == aid and t.status in ACTIVE]
    current = next((t.id for t in owned if t.status == "working"), owned[0].id if owned else None)
    return {
        "id": aid,
        "role": rec.role if rec else spec_agent.role,
        "kind": rec.kind if rec else spec_agent.kind,
        "verdict": verdict.to_state if verdict else (rec.status if rec else "not registered"),
        "verdict_reason": verdict.reason if verdict else None,
        "current_task": current,
        "last_event_type": ev.type if ev else None,
        "last_event_age_ms": (now - ev.ts_ms) if ev else None,
        "tasks_done": sum(t.completed_by == aid and t.status == "completed" for t in tasks),
        "pid": rec.pid if rec else None,
        "alive": process_alive(rec.pid, rec.create_time) if rec else False,
    }


def merge_summary(ref: RunRef, rows: list[Transition]) -> dict[str, Any]:
    merges = [r for r in rows if r.entity == "merge"]
    states = Counter(r.to_state for r in merges)
    conflicts = [
        {"entity_id": r.entity_id, "agent": r.agent, "paths": list((r.data or {}).get("conflicts") or [])}
        for r in merges if r.to_state == "conflict"
    ]
    return {"mode": ref.spec.merge_mode, "merged_branch": ref.spec.merged_branch, "states": dict(states),
            "merged": states.get("merged", 0), "conflicts": conflicts}


def status_view(ref: RunRef, now: int | None = None) -> dict[str, Any]:
    now = now or wall_clock_ms()
    with ref.open_store() as store:
        run = store.get_run(ref.run_id)
        status, evidence = liveness(ref, store, run, now)
        tasks = store.list_tasks(ref.run_id)
        rows = store.history(ref.run_id)
        records = {a.id: a for a in store.list_agents(ref.run_id)}
        events = {aid: last_event(store, ref.run_id, aid) for aid in {*records, *ref.agent_ids()}}
    verdicts = latest_verdicts(rows)
    spec_agents = {a.id: a for a in ref.spec.agents}
    ids = [*spec_agents, *sorted(set(records) - set(spec_agents))]
    by_status = {s: 0 for s in TASK_STATUSES}
    by_status.update(Counter(t.status for t in tasks))
    return {
        "version": SCHEMA_VERSION,
        "run_id": ref.run_id,
        "run_dir": str(ref.paths.root),
        "experiment": ref.spec.experiment_id,
        "variant": ref.spec.variant,
        "policy": ref.spec.policy,
        "status": status,
        "evidence": evidence,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
        "wall_clock_ms": _wall_clock([r for r in rows if r.entity == "task"], status == "running", now),
        "tasks": {"total": len(tasks), "by_status": by_status,
                  "problems": [{"id": t.id, "status": t.status, "reason": t.reason}
                               for t in tasks if t.status in UNSUCCESSFUL]},
        "agents": [_agent_view(spec_agents.get(i), records.get(i), verdicts.get(i), tasks, events.get(i), now) for i in ids],
        "merge": merge_summary(ref, rows),
    }


# ---------------------------------------------------------------------------------- logs
def log_files(ref: RunRef, agent: str) -> list[Path]:
    """The agent's process output files (``<run>/logs/<agent>.*``), stdout before stderr."""
    ref.check_agent(agent)
    files = [p for p in ref.paths.logs.glob(f"{agent}.*") if p.is_file()]
    return sorted(files, key=lambda p: (not p.name.endswith(".out.log"), p.name))


def is_running(ref: RunRef) -> bool:
    with ref.open_store() as store:
        return liveness(ref, store, store.get_run(ref.run_id))[0] == "running"
