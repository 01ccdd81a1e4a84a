"""Event directories -> store: ingest every agent's event files, in sequence order, exactly once.

Layout: ``<events_root>/<agent>/<seq:010d>.json`` (see ``agents.events``); the directory name is
the agent id, the file name its seq. Names starting with ``.`` (temporary files) are ignored.

Threads: ingestion happens in ``poll()`` on the caller's thread, so the one store instance is used
by one thread. The watchdog observer thread only *wakes* the caller (``wait()`` returns, or
``on_change`` is called) and notes which agent and seq it saw. Each ``poll()`` tries the next
expected file of every known agent -- an open() that fails costs microseconds, so a lost inotify
event delays nothing beyond the caller's next poll -- and every ``rescan_s`` it lists the root
(new agent directories) and every agent directory (gaps), because inotify overflows silently.

Gaps: a writer that died between reserving a number and linking its file leaves seq N missing
while N+1 exists (``agents.events`` itself cannot do that, but a foreign or buggy writer can).
The watcher waits ``gap_wait_s`` for N, then records one ``error`` event at the last missing seq
(``data.missing`` names the range) and goes on; a file for a skipped seq arriving later is
ignored. Events are never ingested out of order and never twice (the high-water mark per agent
starts from ``store.last_event_seq``, so a resumed orchestrator does not re-ingest).

Bad files: a file that is not valid event JSON (or disagrees with its path about agent/seq)
becomes an ``error`` event at its seq with ``data.file`` naming it -- never a crash.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError
from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from agents.events import event_name, parse_event_name
from coordstore.base import CoordStore
from coordstore.clock import MONOTONIC, Clock
from coordstore.errors import InputError
from coordstore.models import Event
from coordstore.private import private_dir

RESCAN_S = 3.0  # full listing period: bounds how long an event inotify lost can wait for a new agent/gap
GAP_WAIT_S = 2.0  # a live writer links its file microseconds after writing it; 2 s means it died
MAX_BATCH = 1000  # per agent per poll: one store transaction stays short; the rest comes next poll
FALLBACK_WAKE_S = 0.05  # without inotify (watch limit reached) wait() degrades to polling this often


@dataclass
class _AgentState:
    last: int  # highest seq ingested (or skipped as a gap)
    gap: tuple[int, int] | None = None  # (missing seq, clock() when first seen)


class _Wake(FileSystemEventHandler):
    """Runs on the observer thread: notes what appeared and wakes the caller, nothing more."""

    def __init__(self, watcher: EventWatcher):
        self.w = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        path = os.fsdecode(getattr(event, "dest_path", "") or event.src_path)
        try:
            parts = Path(path).relative_to(self.w.root).parts
        except ValueError:
            return
        if event.is_directory:
            if len(parts) == 1 and not parts[0].startswith("."):
                self.w._notice(parts[0], None)
            return
        if len(parts) == 2 and not parts[0].startswith("."):
            seq = parse_event_name(parts[1])
            if seq is not None:
                self.w._notice(parts[0], seq)


class EventWatcher:
    """Watches ``events_root`` and ingests into ``store`` for ``run_id``. Use ``start()``, then a
    loop of ``wait(timeout)`` + ``poll()``, then ``stop()`` (or a ``with`` block)."""

    def __init__(
        self,
        events_root: Path | str,
        store: CoordStore,
        run_id: str,
        rescan_s: float = RESCAN_S,
        gap_wait_s: float = GAP_WAIT_S,
        clock: Clock = MONOTONIC,
        on_change: Callable[[], None] | None = None,
        on_ingested: Callable[[list[Event]], None] | None = None,
    ):
        self.root = Path(events_root).absolute()
        self.store = store
        self.run_id = run_id
        self.rescan_ms = round(rescan_s * 1000)
        self.gap_wait_ms = round(gap_wait_s * 1000)
        self.clock = clock  # ms: gap waits and rescans are due on it (a test steps it)
        self.on_change = on_change  # called on the observer thread: keep it tiny
        self.on_ingested = on_ingested  # called after each committed batch, on the polling thread
        self.observer_error: str | None = None  # why inotify is not in use, if it is not
        self._agents: dict[str, _AgentState] = {}
        self._wake = threading.Event()
        self._lock = threading.Lock()  # guards the two hint fields below
        self._seen_max: dict[str, int] = {}  # agent -> highest seq the observer reported
        self._new_dir = False  # the observer saw a directory appear: list the root
        self._last_rescan: int | None = None
        self._observer = None

    # -- observer ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the inotify observer (creating the root if needed). If inotify is unavailable
        (e.g. the watch limit is reached) the watcher still works by polling: see ``observer_error``."""
        if self._observer is not None:
            return
        try:
            private_dir(self.root)
        except OSError as e:
            raise InputError(f"events directory {self.root}: cannot create it ({e.strerror or e})") from e
        observer = Observer()
        filt = [FileCreatedEvent, FileMovedEvent, DirCreatedEvent, DirMovedEvent]
        try:
            observer.schedule(_Wake(self), str(self.root), recursive=True, event_filter=filt)
            observer.start()
        except OSError as e:
            self.observer_error = f"cannot watch {self.root}: {e}"
            return
        self.observer_error = None
        self._observer = observer
        self._wake.set()  # whatever is already there is ingested by the first poll

    def stop(self) -> None:
        """Stop and join the observer thread. Idempotent; poll() keeps working without it."""
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)

    @property
    def observing(self) -> bool:
        return self._observer is not None and self._observer.is_alive()

    def __enter__(self) -> EventWatcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _notice(self, agent: str, seq: int | None) -> None:
        with self._lock:
            if seq is None:
                self._new_dir = True
            elif seq > self._seen_max.get(agent, -1):
                self._seen_max[agent] = seq
            else:
                return  # already noted since the last poll
            if agent not in self._agents:
                self._new_dir = True
        self._wake.set()
        if self.on_change is not None:
            self.on_change()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the observer saw something new (True) or ``timeout`` passed (False).
        Never sleeps past the next due rescan. Clears the flag, so call ``poll()`` next."""
        if self.observing:
            due = self._rescan_due_in()
            if timeout is None or (due is not None and due < timeout):
                timeout = due
            woke = self._wake.wait(timeout)
        else:  # no inotify: poll often instead
            woke = self._wake.wait(min(FALLBACK_WAKE_S, timeout) if timeout is not None else FALLBACK_WAKE_S) or True
        self._wake.clear()
        return woke

    def _rescan_due_in(self) -> float | None:
        if self._last_rescan is None:
            return 0.0
        return max(0.0, (self._last_rescan + self.rescan_ms - self.clock()) / 1000.0)

    # -- ingestion ---------------------------------------------------------------------------
    def poll(self) -> int:
        """One step: read every agent's new event files in seq order and append them to the
        store in one call. Returns how many events were new to the store. A store error
        propagates and nothing is marked ingested (the next poll retries)."""
        now = self.clock()
        with self._lock:
            hints, self._seen_max = self._seen_max, {}
            new_dir, self._new_dir = self._new_dir, False
        full = self._last_rescan is None or now - self._last_rescan >= self.rescan_ms
        if full or new_dir:
            self._discover()
        if full:
            self._last_rescan = now
        batch: list[Event] = []
        marks: dict[str, int] = {}
        capped = False
        for agent, st in self._agents.items():
            events, last = self._collect(agent, st, now, full, hints.get(agent, -1))
            if events:
                batch.extend(events)
                marks[agent] = last
                capped = capped or len(events) >= MAX_BATCH
        if not batch:
            return 0
        added = self.store.append_events(self.run_id, batch)
        for agent, last in marks.items():
            self._agents[agent].last = last
        if capped:
            self._wake.set()  # more is waiting: the caller's next wait() returns at once
        if self.on_ingested is not None:
            self.on_ingested(batch)
        return added

    def _discover(self) -> None:
        try:
            with os.scandir(self.root) as it:
                names = [e.name for e in it if e.is_dir() and not e.name.startswith(".")]
        except (FileNotFoundError, NotADirectoryError):
            return  # no root yet (or not a directory: start() says so)
        for name in sorted(names):
            if name not in self._agents:
                self._agents[name] = _AgentState(last=self.store.last_event_seq(self.run_id, name))

    def _collect(self, agent: str, st: _AgentState, now: int, full: bool, hint: int) -> tuple[list[Event], int]:
        """The agent's next contiguous events (at most MAX_BATCH), and the seq they reach."""
        events: list[Event] = []
        seq = st.last + 1
        while len(events) < MAX_BATCH:
            ev = self._read(agent, seq)
            if ev is not None:
                events.append(ev)
                seq += 1
                continue
            # seq is missing: is anything beyond it? (listing only when there is reason to think so)
            if not (full or hint > seq or st.gap is not None):
                break
            nxt = self._next_present(agent, seq)
            if nxt is None:
                st.gap = None
                break
            if st.gap is None or st.gap[0] != seq:
                st.gap = (seq, now)  # start the wait
                break
            if now - st.gap[1] < self.gap_wait_ms:
                break
            events.append(self._gap_event(agent, seq, nxt - 1, (now - st.gap[1]) / 1000.0))
            st.gap = None
            seq = nxt
        if st.gap is not None and st.gap[0] < seq:
            st.gap = None  # the missing file arrived
        return events, seq - 1

    def _read(self, agent: str, seq: int) -> Event | None:
        name = event_name(seq)
        path = self.root / agent / name
        try:
            raw = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            return self._bad(agent, seq, path, f"unreadable: {e.strerror or e}")
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            return self._bad(agent, seq, path, f"invalid JSON: {e}")
        if not isinstance(obj, dict):
            return self._bad(agent, seq, path, "not a JSON object")
        if obj.get("agent") != agent or obj.get("seq") != seq:
            return self._bad(agent, seq, path, f"file says agent={obj.get('agent')!r} seq={obj.get('seq')!r}")
        try:
            return Event.model_validate(obj)
        except ValidationError as e:
            first = e.errors()[0]
            return self._bad(agent, seq, path, f"invalid event: {'.'.join(map(str, first['loc']))}: {first['msg']}")

    def _bad(self, agent: str, seq: int, path: Path, why: str) -> Event:
        try:
            ts = os.stat(path).st_mtime_ns // 1_000_000  # when the bad file was written
        except OSError:
            ts = self.store.clock()
        data = {"source": "watcher", "file": f"{agent}/{path.name}", "error": why}
        return Event(agent=agent, seq=seq, ts_ms=ts, type="error", data=data)

    def _next_present(self, agent: str, seq: int) -> int | None:
        """The smallest seq > ``seq`` with a final file, or None."""
        best = None
        try:
            with os.scandir(self.root / agent) as it:
                for entry in it:
                    s = parse_event_name(entry.name)
                    if s is not None and s > seq and (best is None or s < best):
                        best = s
        except (FileNotFoundError, NotADirectoryError):
            pass
        return best

    def _gap_event(self, agent: str, first: int, last: int, waited_s: float) -> Event:
        missing = event_name(first) if first == last else f"{event_name(first)}..{event_name(last)}"
        return Event(
            agent=agent,
            seq=last,
            ts_ms=self.store.clock(),
            type="error",
            data={"source": "watcher", "missing": missing, "error": f"event files missing after {waited_s:.1f}s wait; skipped"},
        )
