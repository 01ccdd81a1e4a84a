"""Read-only stores (``open_store(url, readonly=True)``, what every read command uses): they read
what writers wrote, follow a writer in another process, and never create, migrate or write a
byte. A damaged store (empty, cut short, foreign, a corrupt record) is ``StoreDamaged`` naming the
file, never an empty store; its bytes are the same afterwards.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import time
from pathlib import Path

import pytest
from conftest import make_graph, make_store_url
from damage_helpers import FILE_DAMAGE, SQLITE_DAMAGE, fingerprint, store_path

from coordstore import open_store
from coordstore.errors import InputError, StoreDamaged, StoreError
from coordstore.models import Event, Run
from coordstore.sqlite_schema import PAGE_SIZE

FORK = mp.get_context("fork")  # children inherit the test's imports; each opens its own store
SIDE_FILES = ("-wal", "-shm")  # SQLite's own files next to a WAL database, made by any reader


def files_in(url: str) -> set[str]:
    """Every file name in the store's directory (a SQLite store: the directory holding it)."""
    root = store_path(url)
    base = root.parent if root.suffix == ".db" else root
    return {str(p.relative_to(base)) for p in base.rglob("*")}


def fill(url: str) -> None:
    """A run with a completed task, a pending one and an agent's events, written and closed."""
    with open_store(url) as s:
        s.create_run(Run(id="r", experiment="exp", variant="v"))
        s.add_graph("r", make_graph(["a", "b", "c"], [("a", "blocks", "b")]))
        t = s.claim_next("r", "w1")
        s.start("r", t.id, "w1", t.attempt)
        s.complete("r", t.id, "w1", t.attempt)
        s.append_events("r", [Event(agent="w1", seq=i, ts_ms=i, type="step") for i in range(3)])


@pytest.fixture
def filled(store_url) -> str:
    fill(store_url)
    return store_url


def dump(url: str, readonly: bool):
    with open_store(url, readonly=readonly) as s:
        return s.dump_run("r")


# ---------------------------------------------------------------------------- healthy stores
def test_readonly_reads_what_was_written_and_changes_no_byte(filled):
    expected = dump(filled, readonly=False)
    before, names = fingerprint(filled), files_in(filled)
    with open_store(filled, readonly=True) as s:
        assert s.dump_run("r") == expected
        assert [r.id for r in s.list_runs()] == ["r"]
        assert s.get_task("r", "a").status == "completed" and [t.id for t in s.ready_tasks("r")] == ["b", "c"]
        assert s.last_event_seq("r", "w1") == 2
    assert fingerprint(filled) == before
    assert {n for n in files_in(filled) - names if not n.endswith(SIDE_FILES)} == set()


def test_readonly_store_refuses_writes(filled):
    before = fingerprint(filled)
    with open_store(filled, readonly=True) as s:
        with pytest.raises(StoreError, match="read-only|readonly"):
            s.create_run(Run(id="other"))
        with pytest.raises(StoreError, match="read-only|readonly"):
            s.append_events("r", [Event(agent="w1", seq=9, ts_ms=9, type="step")])
    assert fingerprint(filled) == before


def test_readonly_open_of_a_missing_store_creates_nothing(backend, tmp_path):
    url = make_store_url(backend, tmp_path / "empty")
    with pytest.raises(InputError, match=re.escape(url if backend == "postgresql" else str(store_path(url)))):
        open_store(url, readonly=True)
    assert list((tmp_path / "empty").iterdir()) == []
    if backend == "postgresql":
        assert fingerprint(url) == {}  # no schema, no table


# ---------------------------------------------------------------------------- live writers
def _write_in_steps(url: str, step1, step2, done) -> None:
    """A writer in another process: complete ``b`` and stay open, then ``c`` on ``step1``."""
    s = open_store(url)
    t = s.claim("r", "b", "w2")
    s.start("r", "b", "w2", t.attempt)
    s.complete("r", "b", "w2", t.attempt)
    step1.set()
    step2.wait(30)
    t = s.claim("r", "c", "w3")
    s.start("r", "c", "w3", t.attempt)
    s.complete("r", "c", "w3", t.attempt)
    done.set()
    time.sleep(0.5)  # the reader looks while this writer is still open
    s.close()


def test_readonly_follows_a_writer_in_another_process_then_reads_it_closed(filled, backend):
    wal = Path(str(store_path(filled)) + "-wal")
    step1, step2, done = FORK.Event(), FORK.Event(), FORK.Event()
    writer = FORK.Process(target=_write_in_steps, args=(filled, step1, step2, done))
    writer.start()
    try:
        assert step1.wait(30)
        if backend == "sqlite":
            assert wal.stat().st_size > 0  # live: the writes are in the WAL, not yet checkpointed
        with open_store(filled, readonly=True) as s:
            assert s.get_task("r", "b").status == "completed"
            step2.set()
            assert done.wait(30)
            assert s.get_task("r", "c").status == "completed"  # the same reader sees later writes
            seqs = [r.seq for r in s.history("r")]
        writer.join(30)
        assert writer.exitcode == 0
        if backend == "sqlite":
            assert not wal.exists()  # closed: checkpointed into the database file
        before = fingerprint(filled)
        with open_store(filled, readonly=True) as s:
            assert [r.seq for r in s.history("r")] == seqs == list(range(1, len(seqs) + 1))
        assert fingerprint(filled) == before
    finally:
        if writer.is_alive():
            writer.kill()


def _append_slowly(url: str, half_written) -> None:
    """A file-store writer whose journal append is cut in two, with a pause holding the lock."""
    s = open_store(url)
    j = s._journal

    def append(line: bytes, fsync: bool) -> None:
        os.write(j.fd, line[: len(line) // 2])
        half_written.set()
        time.sleep(0.5)
        os.write(j.fd, line[len(line) // 2:])
        j.off += len(line)

    j.append = append
    t = s.claim("r", "c", "w3")
    s.close()
    assert t is not None


def test_a_record_being_appended_is_waited_for_not_reported(tmp_path):
    url = make_store_url("file", tmp_path)
    fill(url)
    half_written = FORK.Event()
    writer = FORK.Process(target=_append_slowly, args=(url, half_written))
    writer.start()
    try:
        assert half_written.wait(30)
        assert not (store_path(url) / "journal.jsonl").read_bytes().endswith(b"\n")  # the reader meets a torn tail
        with open_store(url, readonly=True) as s:
            assert s.get_task("r", "c").owner == "w3"
        writer.join(30)
        assert writer.exitcode == 0
    finally:
        if writer.is_alive():
            writer.kill()


# ---------------------------------------------------------------------------- damaged SQLite
@pytest.mark.parametrize("damage", SQLITE_DAMAGE)
def test_a_damaged_sqlite_store_is_reported_and_left_as_it_is(tmp_path, damage):
    url = make_store_url("sqlite", tmp_path)
    fill(url)
    db = store_path(url)
    assert db.stat().st_size > 4 * PAGE_SIZE and not db.with_name(db.name + "-wal").exists()
    SQLITE_DAMAGE[damage](db)
    before = fingerprint(url)
    with pytest.raises(StoreDamaged) as e:
        dump(url, readonly=True)
    msg = str(e.value)
    assert "\n" not in msg and str(db) in msg and "damaged" in msg
    assert fingerprint(url) == before


# ---------------------------------------------------------------------------- damaged file stores
@pytest.mark.parametrize("damage", FILE_DAMAGE)
def test_a_damaged_file_store_is_reported_and_left_as_it_is(tmp_path, damage):
    url = make_store_url("file", tmp_path)
    fill(url)
    name, act = FILE_DAMAGE[damage]
    act(store_path(url) / name)
    before, names = fingerprint(url), files_in(url)
    with pytest.raises(StoreDamaged) as e:
        dump(url, readonly=True)
    msg = str(e.value)
    assert "\n" not in msg and str(store_path(url)) in msg and name.split("/")[-1] in msg and "damaged" in msg
    assert fingerprint(url) == before and files_in(url) == names


def test_a_writer_still_recovers_a_torn_tail(tmp_path):
    """Crash recovery is unchanged: the next writer drops the incomplete record and goes on."""
    url = make_store_url("file", tmp_path)
    fill(url)
    journal = store_path(url) / "journal.jsonl"
    os.truncate(journal, journal.stat().st_size - 7)
    with pytest.raises(StoreDamaged):
        dump(url, readonly=True)
    with open_store(url) as s:
        s.claim("r", "c", "w3")
    assert journal.read_bytes().endswith(b"\n")
    assert dump(url, readonly=True).run.id == "r"


_PROBE = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:  # SQLite's SHARED byte range: PENDING_BYTE (0x40000000) + 2, 510 bytes
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 510, 0x40000002, 0)
    print("free")
except OSError:
    print("held")
"""


def shared_lock_state(db: Path) -> str:
    """Whether some process holds SQLite's shared lock on ``db`` (a WAL connection always does)."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", _PROBE, str(db)], capture_output=True, text=True, check=True).stdout.strip()


def test_a_reader_in_the_writers_process_keeps_the_writers_locks(tmp_path):
    """A read-only open inside a process that holds a writer connection (the model server reads
    the store inside the orchestrator) must not open and close the database file itself: POSIX
    drops every lock a process holds on a file when it closes any descriptor of it. Without the
    writer's shared lock, another process closing its connection can take itself for the last
    one, checkpoint and delete the WAL under the writer's feet: the database ends up malformed."""
    url = make_store_url("sqlite", tmp_path)
    db = Path(store_path(url))
    with open_store(url) as writer:
        writer.create_run(Run(id="r"))
        writer.add_graph("r", make_graph(["a"]))
        assert shared_lock_state(db) == "held"
        with open_store(url, readonly=True) as reader:  # in the writer's own process
            assert reader.get_run("r").id == "r"
        assert shared_lock_state(db) == "held"
        writer.append_events("r", [Event(agent="a", seq=1, ts_ms=2, type="log", data={})])
    assert shared_lock_state(db) == "free"  # the probe sees a lock released, when it is
