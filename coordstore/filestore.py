"""The file backend (``file:///abs/dir``): an event-sourced store in one directory.

Layout of the directory::

    store.json              format marker, written once (temp file + os.replace)
    lock                    fcntl.flock: exclusive for every write
    journal.jsonl           one line per operation: {"r": run, "p": [patches], "t": [transition rows]}
    events/<run>.jsonl      the run's agent events, one line per append_events batch

Why a journal: the history is the source of truth, so "the transition is written in the same
atomic step as the change" holds by construction: both are in the same line, written with ONE
``os.write`` on an O_APPEND descriptor while holding the lock. Every instance keeps the replayed
state in memory (``runstate.RunState``) and, before each operation, applies only the complete
lines appended since its last offset. Writes: lock, catch up, validate, append, unlock. Reads
catch up without the lock and ignore an incomplete last line.

A writer killed mid-write leaves a torn last line (no trailing newline). Readers that may write
ignore it; the next writer, holding the lock (so nobody can be writing), truncates it before appending. Events
live in per-run journals so that claims never parse them.
``readonly=True`` (the read commands) creates and writes nothing, not even the lock file, and
reports a torn tail as damage (``JsonLog.read_complete``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import unquote, urlsplit

from coordstore.base import CoordStore, wall_clock_ms
from coordstore.errors import InputError, InvalidTransition, NotFound, OrchError, StoreDamaged, StoreError, StoreURLError
from coordstore.jsonlog import JsonLog, Shrunk, encode
from coordstore.models import Agent, ClaimOrder, Dependency, Event, Run, RunDump, Task, TaskGraph, Transition
from coordstore.private import open_private, private_dir, write_private
from coordstore.runstate import RunState

FORMAT = {"format": "orch-file-store", "version": 1}
# fsync after every append: off by default because a killed process loses nothing (the page
# cache outlives it) and fsync costs milliseconds per claim; only a power loss needs it.
FSYNC_DEFAULT = False
# longest events file name before it is replaced by a hash (file systems allow 255 bytes)
MAX_NAME = 120


def _path_of(url: str) -> Path:
    parts = urlsplit(url)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        raise StoreURLError(f"store URL {url!r}: expected file:///absolute/directory")
    path = Path(unquote(parts.path))
    if not path.is_absolute():
        raise StoreURLError(f"store URL {url!r}: the directory must be an absolute path")
    return path


def _events_name(run_id: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else f"%{ord(c):02X}" for c in run_id)
    if len(safe) > MAX_NAME:
        safe = hashlib.sha256(run_id.encode()).hexdigest()
    return safe + ".jsonl"


class FileStore(CoordStore):
    scheme = "file"

    def __init__(self, url: str, clock: Callable[[], int] = wall_clock_ms, fsync: bool = FSYNC_DEFAULT,
                 readonly: bool = False):
        super().__init__(url, clock)
        self.dir = _path_of(url)
        self.fsync = fsync
        self.readonly = readonly
        self._pid: int | None = None
        self._lock_fd: int | None = None
        self._journal = JsonLog(self.dir / "journal.jsonl", readonly)
        self._events: dict[str, JsonLog] = {}
        self._runs: dict[str, RunState] = {}
        with self._os_errors("open"):
            if not readonly:
                private_dir(self.dir)
                private_dir(self.dir / "events")
            self._check_format()
        with self._os_errors("read journal"):
            self._catch_up()  # replay now, without the lock, not inside the first write's lock

    # ------------------------------------------------------------------ plumbing
    @contextlib.contextmanager
    def _os_errors(self, what: str):
        try:
            yield
        except OSError as e:
            raise StoreError(f"file store {self.dir}: cannot {what}: {e.strerror or e}") from e

    def _check_format(self) -> None:
        marker = self.dir / "store.json"
        if not marker.exists() and self.readonly:
            if not (self.dir / "journal.jsonl").exists():
                raise InputError(f"file store {self.dir}: no such store (no store.json)")
            raise StoreDamaged(f"file store {self.dir}: damaged: store.json is missing")
        if not marker.exists():
            write_private(marker, json.dumps(FORMAT) + "\n")
        try:
            found = json.loads(marker.read_text())
        except ValueError as e:
            raise StoreDamaged(f"{marker}: damaged: not a file store marker ({e})") from e
        if found != FORMAT:
            raise StoreError(f"{marker}: unsupported store format {found!r} (this orch reads {FORMAT!r})")

    def _ensure_open(self) -> None:
        """Open the descriptors, again in a forked child (a shared flock description excludes nothing)."""
        if self._pid == os.getpid() and self._journal.fd is not None:
            return
        self._drop_fds()
        with self._os_errors("open"):
            if not self.readonly:
                self._lock_fd = open_private(self.dir / "lock", os.O_RDWR)
            elif not self._journal.path.exists():
                raise StoreDamaged(f"file store {self.dir}: damaged: journal.jsonl is missing")
            self._journal.open()
        self._pid = os.getpid()

    def _drop_fds(self) -> None:
        """Close every descriptor; state and offsets stay, journals reopen lazily.

        Closing a forked child's copy does not release the parent's flock: that needs LOCK_UN
        or every copy closed."""
        for j in (self._journal, *self._events.values()):
            j.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def close(self) -> None:
        self._drop_fds()
        self._pid = None

    def _reset(self) -> None:
        """Forget everything in memory; the next call replays the journals from the start."""
        self._runs = {}
        self._journal.off = self._journal.torn = 0
        for j in self._events.values():
            j.close()
        self._events = {}

    def _catch_up(self) -> None:
        self._ensure_open()
        try:
            self._journal.read_complete(self._read_journal, self.dir / "lock")
        except Shrunk:
            self._reset()
            self._journal.read_complete(self._read_journal, self.dir / "lock")

    def _read_journal(self) -> None:
        j = self._journal
        for off, line in j.read_new():
            try:
                rec = json.loads(line)
                rid, patches, rows = rec["r"], rec["p"], rec["t"]
                rs = self._runs.get(rid)
                if patches and patches[0][0] == "load":
                    rs = self._runs[rid] = RunState.from_dump(patches[0][1])
                elif rs is None:
                    rs = self._runs[rid] = RunState(patches[0][1])  # the run's first line is its "run" patch
                rs.replay(patches, rows)
            except (ValueError, KeyError, IndexError, TypeError, OrchError) as e:
                self._reset()
                raise StoreDamaged(f"{j.path}: damaged: corrupt journal line at byte {off}: {e}") from e
            except BaseException:  # interrupted mid-apply: memory may hold half a line
                self._reset()
                raise

    def _event_journal(self, run_id: str) -> JsonLog:
        j = self._events.get(run_id)
        if j is None:
            j = self._events[run_id] = JsonLog(self.dir / "events" / _events_name(run_id), self.readonly)
        if j.fd is None:
            if self.readonly and not j.path.exists():
                return j  # no events appended yet
            with self._os_errors("open events"):
                j.open()

        def apply() -> None:
            for off, line in j.read_new():
                try:
                    self._runs[run_id].put_events(json.loads(line))
                except (ValueError, KeyError, TypeError) as e:
                    raise StoreDamaged(f"{j.path}: damaged: corrupt events line at byte {off}: {e}") from e

        try:
            j.read_complete(apply, self.dir / "lock")
        except Shrunk:  # replaced by hand: start over (callers fetch the run's state after this)
            self._reset()
            self._catch_up()
            return self._event_journal(run_id)
        return j

    @contextlib.contextmanager
    def _locked(self):
        if self.readonly:
            raise StoreError(f"file store {self.dir}: opened read-only")
        self._ensure_open()
        with self._os_errors("lock"):
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            with self._os_errors("read journal"):
                self._catch_up()
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _run(self, run_id: str) -> RunState:
        try:
            return self._runs[run_id]
        except KeyError:
            raise NotFound(f"no run {run_id!r} in {self.url}") from None

    def _read(self, run_id: str) -> RunState:
        with self._os_errors("read journal"):
            self._catch_up()
        return self._run(run_id)

    def _commit(self, run_id: str, rs: RunState) -> None:
        """Append what the operation in progress changed as one line; on any failure forget the
        in-memory state (it holds changes the journal does not) so the next call replays."""
        patches, rows = rs.take()
        if not (patches or rows):
            return
        try:
            line = encode({"r": run_id, "p": patches, "t": rows})
            with self._os_errors("append to journal"):
                self._journal.append(line, self.fsync)
        except BaseException:
            self._reset()
            raise

    def _write(self, run_id: str, op: Callable[[RunState], object]):
        """One atomic operation: lock, catch up, run ``op`` on the run's state, append its line."""
        with self._locked():
            rs = self._run(run_id)
            rs.begin()
            try:
                result = op(rs)
            except BaseException:
                if rs.dirty():  # refused after a change (a bug): memory is ahead of the journal
                    self._reset()
                rs.take()
                raise
            self._commit(run_id, rs)
            return result

    # ------------------------------------------------------------------ runs
    def create_run(self, run: Run, now: int | None = None) -> Run:
        now = self._now(now)
        d = run.model_dump(mode="json")
        d.update(status="running", finished_at=None, created_at=d["created_at"] if d["created_at"] is not None else now)
        with self._locked():
            if run.id in self._runs:
                raise InvalidTransition(f"run {run.id!r} already exists in {self.url}")
            rs = RunState(d)
            rs.begin()
            rs.start_run(now)
            self._commit(run.id, rs)
            self._runs[run.id] = rs
        return Run.model_validate(d)

    def get_run(self, run_id: str) -> Run:
        return Run.model_validate(self._read(run_id).run)

    def list_runs(self) -> list[Run]:
        with self._os_errors("read journal"):
            self._catch_up()
        runs = [Run.model_validate(rs.run) for rs in self._runs.values()]  # creation order
        return sorted(runs, key=lambda r: r.created_at or 0)

    def finish_run(self, run_id: str, status: str, reason: str | None = None, now: int | None = None) -> Run:
        now = self._now(now)
        self._write(run_id, lambda rs: rs.finish(status, reason, now))
        return Run.model_validate(self._runs[run_id].run)

    def reopen_run(self, run_id: str, reason: str | None = None, now: int | None = None) -> Run:
        now = self._now(now)
        self._write(run_id, lambda rs: rs.reopen(reason, now))
        return Run.model_validate(self._runs[run_id].run)

    # ------------------------------------------------------------------ tasks
    def _task(self, run_id: str, task_id: str) -> Task:
        return Task.model_validate(self._runs[run_id].tasks[task_id])

    def add_graph(self, run_id: str, graph: TaskGraph, now: int | None = None) -> None:
        now = self._now(now)
        self._write(run_id, lambda rs: rs.add_graph(graph, now))

    def get_task(self, run_id: str, task_id: str) -> Task:
        return Task.model_validate(self._read(run_id).task(task_id))

    def list_tasks(self, run_id, status=None, owner=None, parent=None) -> list[Task]:
        return [Task.model_validate(t) for t in self._read(run_id).list_tasks(status, owner, parent)]

    def dependencies(self, run_id: str) -> list[Dependency]:
        return [Dependency.model_validate(d) for d in self._read(run_id).deps]

    def ready_tasks(self, run_id: str, agent_tags: Iterable[str] | None = None, order: ClaimOrder = "priority") -> list[Task]:
        rs = self._read(run_id)
        return [Task.model_validate(rs.tasks[t]) for t in rs.ready_list(agent_tags, order)]

    def claim_next(self, run_id, agent, agent_tags=None, order: ClaimOrder = "priority", within=None, now=None):
        now = self._now(now)
        tid = self._write(run_id, lambda rs: rs.claim_next(agent, agent_tags, order, within, now))
        return None if tid is None else self._task(run_id, tid)

    def claim(self, run_id: str, task_id: str, agent: str, now: int | None = None) -> Task | None:
        now = self._now(now)
        tid = self._write(run_id, lambda rs: rs.claim(task_id, agent, now))
        return None if tid is None else self._task(run_id, tid)

    def _task_op(self, run_id: str, task_id: str, op: Callable[[RunState], object]) -> Task:
        self._write(run_id, op)
        return self._task(run_id, task_id)

    def assign(self, run_id, task_id, agent, by, now=None) -> Task:
        now = self._now(now)
        return self._task_op(run_id, task_id, lambda rs: rs.assign(task_id, agent, by, now))

    def start(self, run_id, task_id, agent, attempt, now=None) -> Task:
        now = self._now(now)
        return self._task_op(run_id, task_id, lambda rs: rs.start(task_id, agent, attempt, now))

    def complete(self, run_id, task_id, agent, attempt, data=None, now=None) -> Task:
        now = self._now(now)
        return self._task_op(run_id, task_id, lambda rs: rs.complete(task_id, agent, attempt, data, now))

    def fail(self, run_id, task_id, agent, attempt, reason, now=None) -> Task:
        now = self._now(now)
        return self._task_op(run_id, task_id, lambda rs: rs.fail(task_id, agent, attempt, reason, now))

    def requeue(self, run_id, task_id, reason, by=None, now=None) -> Task:
        now = self._now(now)
        return self._task_op(run_id, task_id, lambda rs: rs.requeue(task_id, reason, by, now))

    def cancel(self, run_id, task_id, reason, by=None, now=None) -> Task:
        now = self._now(now)
        return self._task_op(run_id, task_id, lambda rs: rs.cancel(task_id, reason, by, now))

    def add_usage(self, run_id, task_id, tokens_in=0, tokens_out=0, tokens_cached=0, tokens_thinking=0, cost_usd=0.0):
        self._write(run_id, lambda rs: rs.add_usage(task_id, tokens_in, tokens_out, tokens_cached, tokens_thinking, cost_usd))

    # ------------------------------------------------------------------ agents
    def _agent_op(self, run_id: str, agent_id: str, op: Callable[[RunState], object]) -> Agent:
        self._write(run_id, op)
        return Agent.model_validate(self._runs[run_id].agents[agent_id])

    def register_agent(self, run_id, agent, lease_ms=None, now=None) -> Agent:
        now = self._now(now)
        return self._agent_op(run_id, agent.id, lambda rs: rs.register(agent, lease_ms, now))

    def get_agent(self, run_id: str, agent_id: str) -> Agent:
        return Agent.model_validate(self._read(run_id).agent(agent_id))

    def list_agents(self, run_id: str) -> list[Agent]:
        rs = self._read(run_id)
        return [Agent.model_validate(rs.agents[a]) for a in sorted(rs.agents)]

    def heartbeat(self, run_id, agent_id, lease_ms, current_task=None, now=None) -> Agent:
        now = self._now(now)
        return self._agent_op(run_id, agent_id, lambda rs: rs.heartbeat(agent_id, lease_ms, current_task, now))

    def set_agent_status(self, run_id, agent_id, status, reason=None, data=None, now=None) -> Agent:
        now = self._now(now)
        return self._agent_op(run_id, agent_id, lambda rs: rs.set_agent_status(agent_id, status, reason, data, now))

    def reap_expired(self, run_id: str, now: int | None = None) -> list[str]:
        now = self._now(now)
        return self._write(run_id, lambda rs: rs.reap(now))

    # ------------------------------------------------------------------ events
    def append_events(self, run_id: str, events: list[Event]) -> int:
        with self._locked():
            self._run(run_id)
            j = self._event_journal(run_id)
            rs = self._runs[run_id]
            new = rs.new_events(events)
            if new:
                line = encode(new)
                with self._os_errors("append events"):
                    j.append(line, self.fsync)
                rs.put_events(new)
            return len(new)

    def _read_events_state(self, run_id: str) -> RunState:
        self._read(run_id)
        with self._os_errors("read events"):
            self._event_journal(run_id)
        return self._runs[run_id]

    def read_events(self, run_id, agent=None, since_seq=-1, limit=None) -> list[Event]:
        rows = self._read_events_state(run_id).read_events(agent, since_seq, limit)
        return [Event.model_validate(e) for e in rows]

    def last_event_seq(self, run_id: str, agent: str) -> int:
        return self._read_events_state(run_id).last_event_seq(agent)

    # ------------------------------------------------------------------ history
    def record(self, transition: Transition) -> Transition | None:
        row = self._write(transition.run_id, lambda rs: rs.record(transition))
        return None if row is None else Transition.model_validate(row)

    def note(self, run_id, entity, entity_id, action, reason=None, agent=None, data=None, key=None, now=None):
        now = self._now(now)
        row = self._write(run_id, lambda rs: rs.note(entity, entity_id, action, reason, agent, data, key, now))
        return None if row is None else Transition.model_validate(row)

    def history(self, run_id, since_seq=0, entity=None, entity_id=None, agent=None) -> list[Transition]:
        rows = self._read(run_id).history_rows(since_seq, entity, entity_id, agent)
        return [Transition.model_construct(**{**r, "data": dict(r["data"])}) for r in rows]

    # ------------------------------------------------------------------ snapshot
    def dump_run(self, run_id: str) -> RunDump:
        return self._read_events_state(run_id).dump()

    def load_run(self, dump: RunDump) -> None:
        doc = dump.model_dump(mode="json")
        rid = dump.run.id
        with self._locked():
            if rid in self._runs:
                raise InvalidTransition(f"run {rid!r} already exists in {self.url}")
            rs = RunState.from_dump(doc)  # validates before anything is written
            line = encode({"r": rid, "p": [["load", doc]], "t": []})
            with self._os_errors("append to journal"):
                self._journal.append(line, self.fsync)
            self._runs[rid] = rs
