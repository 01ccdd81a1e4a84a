"""The file backend's journal: an event-sourced store in one directory (``filestore`` holds the verbs).

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
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

from coordstore.errors import InputError, NotFound, OrchError, StoreDamaged, StoreError, StoreURLError
from coordstore.jsonlog import JsonLog, Shrunk, encode
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


class FileJournal:
    """One store directory: its lock, its journals, and every run's state replayed from them
    (a mixin of ``FileStore``, which provides ``url``)."""

    url: str

    def _open_journal(self, url: str, fsync: bool, readonly: bool) -> None:
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
