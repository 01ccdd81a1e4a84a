"""The agent side of the event protocol: one JSON file per event, delivered by the Maildir rule.

An agent's events live in its own directory (``<run>/events/<agent>/``). Each event is written
to a temporary name in that directory (``.tmp-<pid>-<seq>``, which readers ignore), then
hard-linked to its final name ``<seq:010d>.json`` and the temporary name removed -- exactly
what Python's ``mailbox.Maildir`` does. A link is a rename that refuses to overwrite: if two
writers ever share a directory (a respawn racing its predecessor), the loser gets EEXIST, moves
to the next number, and no event is silently replaced. Readers see a final name only once the
file is complete. (A link also shows up as one IN_CREATE in inotify, so the watcher does not
wait on watchdog's move-pairing delay.)

Sequence numbers are per agent, start at 0, and stay monotonic across restarts of the agent:
a new writer resumes after the highest final name already in the directory.

Event JSON: ``{"agent", "seq", "ts_ms", "type", "task", "data"}`` -- the shape of
``coordstore.models.Event``. This module is imported by the agent runner, whose start-up must be
cheap: it uses the standard library only (json, os, time, threading) and never pydantic.

``ts_ms`` is epoch milliseconds, the convention of ``coordstore.clock.WALL``; the writer keeps its
own stamp rather than import coordstore (standard library only), and takes a ``clock`` instead
when one is injected (a test's fake clock).
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The types every component understands; other names are allowed (agent kinds may add their own).
EVENT_TYPES: tuple[str, ...] = (
    "started",  # the runner is up: data.pid, data.kind
    "step",  # one tool call / action: data.name, data.digest (of its arguments)
    "file_changed",  # data.path, data.change (added|modified|deleted)
    "tokens",  # data.in, data.out, data.cached, data.thinking, data.cost_usd (+ image, audio, slot6, slot7)
    "log",  # data.msg, data.level
    "error",  # data.msg (and data.file when the watcher made it from a bad file)
    "rate_limited",  # data.retry_after (seconds): back-pressure, not a failure
    "heartbeat",  # alive and well, nothing else to say
    "done",  # the runner is finishing: data.reason
)

SEQ_WIDTH = 10  # digits of the file name: sorts lexically, 10^10 events per agent is plenty
TMP_PREFIX = ".tmp-"  # readers skip every name starting with "."
SUFFIX = ".json"


def event_name(seq: int) -> str:
    """The final file name of event ``seq`` (``0000000042.json``)."""
    return f"{seq:0{SEQ_WIDTH}d}{SUFFIX}"


def parse_event_name(name: str) -> int | None:
    """The seq a final event file name stands for, or None for anything else (temp files too)."""
    stem = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else ""
    if len(stem) >= SEQ_WIDTH and stem.isdigit() and stem.isascii():
        return int(stem)
    return None


def highest_seq(events_dir: Path | str) -> int:
    """The highest seq with a final file in ``events_dir``, -1 if none (or no directory)."""
    best = -1
    try:
        with os.scandir(events_dir) as it:
            for entry in it:
                seq = parse_event_name(entry.name)
                if seq is not None and seq > best:
                    best = seq
    except FileNotFoundError:
        pass
    return best


def args_digest(args: Any) -> str:
    """A short stable digest of a step's arguments (canonical JSON), so loops are detectable
    without storing whole arguments."""
    import hashlib  # lazy: the runner's start-up; only agents that emit steps pay for it (OpenSSL)

    blob = json.dumps(args, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.blake2b(blob, digest_size=8).hexdigest()


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class EventWriter:
    """Writes one agent's events into its own directory. Safe to share between threads."""

    def __init__(self, events_dir: Path | str, agent: str, clock: Callable[[], int] | None = None):
        if not agent or "/" in agent or agent.startswith("."):
            raise ValueError(f"agent id {agent!r}: must be non-empty, without '/', not starting with '.'")
        self.dir = Path(events_dir)
        self.agent = agent
        self.clock = clock or _wall_ms  # stamps ts_ms
        # events carry prompts and command output: the owner's alone, as coordstore.private makes
        # every file of a run (not imported: this module stays standard-library only)
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._next = highest_seq(self.dir) + 1
        self._can_link = True  # False on filesystems without hard links (then plain rename)
        # called with retry_after after each rate_limited event (the runner's shared back-pressure)
        self.on_rate_limited: Callable[[float], None] | None = None

    @property
    def next_seq(self) -> int:
        """The seq the next event will get (unless another writer takes it first)."""
        return self._next

    def emit(self, type: str, task: str | None = None, **data: Any) -> int:
        """Write one event and return its seq. ``data`` must be JSON-serialisable."""
        if not type or not isinstance(type, str):
            raise ValueError(f"event type {type!r}: must be a non-empty string")
        with self._lock:
            while True:
                seq = self._next
                ts_ms = self.clock()
                record = {"agent": self.agent, "seq": seq, "ts_ms": ts_ms, "type": type, "task": task, "data": data}
                # serialise before touching the disk: a bad payload must not burn a seq
                blob = json.dumps(record, separators=(",", ":")).encode()
                if self._deliver(seq, blob):
                    self._next = seq + 1
                    return seq
                # another writer holds this number: resume after whatever is there now
                self._next = max(seq + 1, highest_seq(self.dir) + 1)

    def _deliver(self, seq: int, blob: bytes) -> bool:
        """Temp file, then link (or rename) into place. False if the final name already exists."""
        tmp = self.dir / f"{TMP_PREFIX}{os.getpid()}-{threading.get_ident()}-{seq}"
        final = self.dir / event_name(seq)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, blob)  # a regular-file write of this size is not split
        finally:
            os.close(fd)
        try:
            if self._can_link:
                try:
                    os.link(tmp, final)
                    return True
                except FileExistsError:
                    return False
                except OSError as e:
                    if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
                        raise
                    self._can_link = False  # no hard links here: fall back to rename
            if os.path.exists(final):  # rename would overwrite: the best we can do without link
                return False
            os.rename(tmp, final)
            return True
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass  # renamed away

    # -- helpers with the data shapes every reader expects ---------------------------------
    def started(self, task: str | None = None, **data: Any) -> int:
        return self.emit("started", task, pid=os.getpid(), **data)

    def step(self, name: str, args: Any = None, task: str | None = None, **data: Any) -> int:
        return self.emit("step", task, name=name, digest=args_digest(args), **data)

    def file_changed(self, path: str, change: str = "modified", task: str | None = None) -> int:
        return self.emit("file_changed", task, path=path, change=change)

    def tokens(
        self,
        task: str | None = None,
        tokens_in: int = 0,
        tokens_out: int = 0,
        cached: int = 0,
        thinking: int = 0,
        cost_usd: float = 0.0,
        image: int = 0,
        audio: int = 0,
        slot6: int = 0,
        slot7: int = 0,
    ) -> int:
        """The 8 metric slots of task-graph-mcp's convention (coordstore.models.USAGE_KEYS) and the
        cost; image, audio and the free slots 6-7 are written only when not 0 (the common event
        stays short, and readers take a missing count as 0)."""
        counts = {"in": tokens_in, "out": tokens_out, "cached": cached, "thinking": thinking, "cost_usd": cost_usd}
        more = {"image": image, "audio": audio, "slot6": slot6, "slot7": slot7}
        return self.emit("tokens", task, **counts, **{k: v for k, v in more.items() if v})

    def log(self, msg: str, level: str = "info", task: str | None = None) -> int:
        return self.emit("log", task, msg=msg, level=level)

    def error(self, msg: str, task: str | None = None, **data: Any) -> int:
        return self.emit("error", task, msg=msg, **data)

    def rate_limited(self, retry_after: float, task: str | None = None) -> int:
        seq = self.emit("rate_limited", task, retry_after=retry_after)
        if self.on_rate_limited is not None:
            self.on_rate_limited(retry_after)
        return seq

    def heartbeat(self, task: str | None = None) -> int:
        return self.emit("heartbeat", task)

    def done(self, reason: str = "finished", task: str | None = None, **data: Any) -> int:
        return self.emit("done", task, reason=reason, **data)
