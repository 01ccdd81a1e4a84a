"""The event watcher: event files -> store, in order, once; bad files and gaps become error
events; inotify wakes it; the rescan catches what inotify missed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.events import EventWriter, event_name
from coordstore import open_store
from coordstore.errors import InputError
from coordstore.models import Event, Run
from orchestrator.runs import watcher as watcher_mod
from orchestrator.runs.watcher import EventWatcher

from conftest import FakeClock
from fixtures_path import PROGS

RUN = "r1"


@pytest.fixture
def store(store_url):
    """A real store of every backend (conftest's ``store_url``), holding run RUN."""
    s = open_store(store_url)
    s.create_run(Run(id=RUN))
    yield s
    s.close()


def seqs(store, agent: str) -> list[int]:
    return [e.seq for e in store.read_events(RUN, agent)]


def test_ingests_four_concurrent_writer_processes_in_order(store, tmp_path: Path) -> None:
    root = tmp_path / "events"
    order: dict[str, list[int]] = {}

    def ingested(batch: list[Event]) -> None:
        for e in batch:
            order.setdefault(e.agent, []).append(e.seq)

    steps = 40
    per_agent = 1 + steps + 3  # started, steps, file_changed, tokens, done
    with EventWatcher(root, store, RUN, on_ingested=ingested) as w:
        assert w.observing, w.observer_error
        argv = [sys.executable, str(PROGS / "scripted.py"), "--steps", str(steps), "--delay", "0.002"]
        procs = [subprocess.Popen([*argv, str(root / f"a{i}"), f"a{i}"]) for i in range(4)]
        total, deadline = 0, time.monotonic() + 30
        while total < 4 * per_agent and time.monotonic() < deadline:
            w.wait(1.0)
            total += w.poll()
        for p in procs:
            assert p.wait(timeout=30) == 0
    assert total == 4 * per_agent
    for i in range(4):
        agent = f"a{i}"
        assert order[agent] == list(range(per_agent))  # each seq once, never out of order
        events = store.read_events(RUN, agent)
        assert [e.seq for e in events] == list(range(per_agent))
        assert events[0].type == "started" and events[-1].type == "done"


def test_resumed_watcher_does_not_reingest(store, tmp_path: Path) -> None:
    root = tmp_path / "events"
    wr = EventWriter(root / "a", "a")
    for _ in range(3):
        wr.heartbeat()
    assert EventWatcher(root, store, RUN).poll() == 3
    # "the orchestrator restarted": a fresh watcher over the same store and directory
    again = EventWatcher(root, store, RUN)
    assert again.poll() == 0
    EventWriter(root / "a", "a").done()  # a restarted agent continues at seq 3
    assert again.poll() == 1
    assert seqs(store, "a") == [0, 1, 2, 3]


def test_malformed_files_become_error_events_and_temp_files_are_ignored(store, tmp_path: Path) -> None:
    root = tmp_path / "events"
    wr = EventWriter(root / "a", "a")
    wr.started()  # 0
    (root / "a" / event_name(1)).write_text('{"agent": "a", "seq": 1, "ts_')  # half a file
    (root / "a" / event_name(2)).write_text('{"agent": "b", "seq": 2, "ts_ms": 1, "type": "log", "task": null, "data": {}}')
    (root / "a" / event_name(3)).write_text('{"agent": "a", "seq": 3, "ts_ms": "soon", "type": "log", "task": null, "data": {}}')
    (root / "a" / ".tmp-1-2-4").write_text("{garbage")  # a writer mid-delivery
    (root / "a" / "notes.txt").write_text("not an event")
    wr2 = EventWriter(root / "a", "a")
    assert wr2.log("after the bad ones") == 4
    w = EventWatcher(root, store, RUN)
    assert w.poll() == 5
    events = store.read_events(RUN, "a")
    assert [(e.seq, e.type) for e in events] == [(0, "started"), (1, "error"), (2, "error"), (3, "error"), (4, "log")]
    assert events[1].data["file"] == "a/0000000001.json" and "invalid JSON" in events[1].data["error"]
    assert "agent='b'" in events[2].data["error"]
    assert events[3].data["file"] == "a/0000000003.json" and "ts_ms" in events[3].data["error"]
    assert w.poll() == 0


def test_gap_waits_then_skips_and_a_late_file_is_ignored(store, tmp_path: Path) -> None:
    root = tmp_path / "events"
    wr = EventWriter(root / "a", "a")
    for _ in range(5):
        wr.heartbeat()
    (root / "a" / event_name(1)).unlink()  # a writer that "died" between reserving 1..2 and linking
    (root / "a" / event_name(2)).unlink()
    clock = FakeClock()
    w = EventWatcher(root, store, RUN, gap_wait_s=2.0, clock=clock)
    assert w.poll() == 1 and seqs(store, "a") == [0]
    clock.advance(1000)
    assert w.poll() == 0  # still waiting: 3 and 4 are not ingested before 1 and 2
    clock.advance(1500)
    assert w.poll() == 3  # the gap is recorded as one error event at seq 2, then 3 and 4
    events = store.read_events(RUN, "a")
    assert [(e.seq, e.type) for e in events] == [(0, "heartbeat"), (2, "error"), (3, "heartbeat"), (4, "heartbeat")]
    assert events[1].data["missing"] == f"{event_name(1)}..{event_name(2)}"
    (root / "a" / event_name(1)).write_text('{"agent":"a","seq":1,"ts_ms":1,"type":"log","task":null,"data":{}}')
    clock.advance(10000)
    assert w.poll() == 0 and seqs(store, "a") == [0, 2, 3, 4]


def test_a_gap_that_fills_in_time_is_ingested_in_order(store, tmp_path: Path) -> None:
    root = tmp_path / "events"
    wr = EventWriter(root / "a", "a")
    for _ in range(3):
        wr.heartbeat()
    hidden = root / "a" / ".held"
    (root / "a" / event_name(1)).rename(hidden)
    clock = FakeClock()
    w = EventWatcher(root, store, RUN, gap_wait_s=2.0, clock=clock)
    assert w.poll() == 1
    clock.advance(1000)
    hidden.rename(root / "a" / event_name(1))  # the slow writer delivers
    assert w.poll() == 2
    assert [e.type for e in store.read_events(RUN, "a")] == ["heartbeat"] * 3


def test_observer_wakes_the_loop(store, tmp_path: Path) -> None:
    root = tmp_path / "events"
    woken: list[int] = []
    with EventWatcher(root, store, RUN, rescan_s=60, on_change=lambda: woken.append(1)) as w:
        assert w.observing, w.observer_error
        w.wait(0)
        w.poll()  # the initial rescan: nothing there yet
        EventWriter(root / "new", "new").started()  # a new agent directory and its first file
        t0 = time.monotonic()
        assert w.wait(10) is True
        assert time.monotonic() - t0 < 5
        deadline = time.monotonic() + 10
        got = w.poll()
        while got == 0 and time.monotonic() < deadline:  # the dir event may come before the file event
            w.wait(1)
            got = w.poll()
        assert got == 1 and woken
        EventWriter(root / "new", "new").heartbeat()
        assert w.wait(10) is True and w.poll() == 1
    assert not w.observing


def test_rescan_finds_what_arrived_while_the_observer_was_stopped(store, tmp_path: Path) -> None:
    root = tmp_path / "events"
    clock = FakeClock()
    w = EventWatcher(root, store, RUN, rescan_s=3.0, clock=clock)
    w.start()
    assert w.observing
    assert w.poll() == 0  # first poll is a full rescan
    w.stop()  # inotify is gone: as if its queue overflowed
    EventWriter(root / "late", "late").started()
    clock.advance(1000)
    assert w.poll() == 0  # unknown directory, no notification: not seen yet
    clock.advance(2500)
    assert w.poll() == 1  # the periodic rescan finds it
    assert seqs(store, "late") == [0]
    EventWriter(root / "late", "late").heartbeat()
    assert w.poll() == 1  # a known agent's next file needs no notification at all


def test_large_backlog_is_taken_in_bounded_batches(store, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(watcher_mod, "MAX_BATCH", 10)
    root = tmp_path / "events"
    wr = EventWriter(root / "a", "a")
    for _ in range(25):
        wr.heartbeat()
    w = EventWatcher(root, store, RUN)
    assert [w.poll(), w.poll(), w.poll(), w.poll()] == [10, 10, 5, 0]
    assert seqs(store, "a") == list(range(25))


def test_unusable_events_root_is_one_clear_error(store, tmp_path: Path) -> None:
    (tmp_path / "events").write_text("a file, not a directory")
    w = EventWatcher(tmp_path / "events", store, RUN)
    with pytest.raises(InputError, match="events directory .*events: cannot create"):
        w.start()
    assert w.poll() == 0  # polling a root that is not a directory finds nothing, and does not crash
