"""SQLite-backend specifics: connection settings, real multi-process contention, crash safety,
error translation, query plans and write volume. The behaviour every backend shares is in
test_store_contract.py / test_store_storm.py."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from coordstore import open_store
from coordstore.errors import NotFound, StoreError, StoreURLError
from coordstore.models import Dependency, Event, Run, Task, TaskGraph, Transition
from coordstore.sql_rows import dumps
from coordstore.sql_claims import READY_ORDERS
from coordstore.sqlite_schema import PAGE_SIZE, SCHEMA_VERSION, translate
from coordstore.sql_records import _MERGE_HEAD
from coordstore.sql_storage import _OPEN_DEPENDENTS, _OPEN_DESCENDANTS, _UNBLOCK
from coordstore.sqlite_tx import _LAST_ROW, Tx
from coordstore.sqlitestore import SQLiteStore, _claim_params

CTX = mp.get_context("fork")  # children open their own connection after the fork
T0 = 1_700_000_000_000


def url_of(path: Path) -> str:
    return f"sqlite://{path}"


def tasks(n: int, **kw) -> TaskGraph:
    return TaskGraph(tasks=[Task(id=f"t{i:04d}", **kw) for i in range(n)])


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "deep" / "dir" / "orch.db"


@pytest.fixture
def store(db):
    with open_store(url_of(db), clock=lambda: T0) as s:
        s.create_run(Run(id="r"))
        yield s


# ---------------------------------------------------------------------------- opening
def test_connection_settings_and_schema(store, db):
    c = store._c
    assert db.is_file()  # parent directories created
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert c.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert c.execute("PRAGMA busy_timeout").fetchone()[0] >= 10_000
    assert c.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE
    assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert c.isolation_level is None  # autocommit: every write is our own BEGIN IMMEDIATE
    with open_store(url_of(db)) as again:  # reopening an existing schema is a no-op
        assert again.get_run("r").id == "r"


def test_a_version_1_file_gains_the_merge_index_on_open(store, db):
    store.record(Transition(run_id="r", ts_ms=T0, entity="merge", entity_id="a", to_state="conflict"))
    store._c.execute("DROP INDEX history_merge")
    store._c.execute("PRAGMA user_version=1")
    with open_store(url_of(db)) as again:
        assert again._c.execute("SELECT 1 FROM sqlite_master WHERE name='history_merge'").fetchone()
        assert again._c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        row = again.record(Transition(run_id="r", ts_ms=T0, entity="merge", entity_id="a", to_state="merged"))
        assert (row.from_state, row.to_state) == ("conflict", "merged")


def test_a_version_1_file_reads_read_only_unchanged(store, db):
    store.record(Transition(run_id="r", ts_ms=T0, entity="merge", entity_id="a", to_state="conflict"))
    store._c.execute("DROP INDEX history_merge")
    store._c.execute("PRAGMA user_version=1")
    store.close()
    before = Path(db).read_bytes()
    with open_store(url_of(db), readonly=True) as ro:
        assert [r.to_state for r in ro.history("r") if r.entity == "merge"] == ["conflict"]
    assert Path(db).read_bytes() == before  # an older store is read as it is, never migrated


@pytest.mark.parametrize("url", ["sqlite://relative.db", "sqlite:///some/dir/", "sqlite://", "file:///x.db"])
def test_bad_urls_name_the_url(url):
    with pytest.raises(StoreURLError, match="sqlite:///absolute"):
        SQLiteStore(url)


def _open_and_claim(url: str, barrier, out) -> None:
    try:
        barrier.wait()
        with open_store(url) as s:
            run = f"run-{os.getpid()}"
            s.create_run(Run(id=run))
            s.add_graph(run, tasks(3))
            out.put(s.claim_next(run, "a").id)
    except BaseException as e:  # report, so the parent fails with the reason
        out.put(repr(e))


def test_concurrent_first_opens_of_a_fresh_file(tmp_path):
    url, n = url_of(tmp_path / "fresh.db"), 8
    barrier, out = CTX.Barrier(n), CTX.Queue()
    ps = [CTX.Process(target=_open_and_claim, args=(url, barrier, out)) for _ in range(n)]
    for p in ps:
        p.start()
    got = [out.get(timeout=60) for _ in ps]
    for p in ps:
        p.join(30)
    assert got == ["t0000"] * n
    with open_store(url) as s:
        assert len(s.list_runs()) == n


# ---------------------------------------------------------------------------- contention
def _claimer(url: str, agent: str, barrier, out) -> None:
    with open_store(url) as s:
        barrier.wait()
        won, calls = [], 0
        while True:
            calls += 1
            t = s.claim_next("r", agent)
            if t is None:
                break
            assert t.owner == agent and t.status == "assigned"
            won.append(t.id)
        out.put((agent, won, calls))


def test_eight_processes_claim_500_tasks_each_exactly_once(tmp_path):
    url, n = url_of(tmp_path / "storm.db"), 8
    with open_store(url) as s:
        s.create_run(Run(id="r"))
        s.add_graph("r", tasks(500))
    barrier, out = CTX.Barrier(n), CTX.Queue()
    ps = [CTX.Process(target=_claimer, args=(url, f"a{i}", barrier, out)) for i in range(n)]
    for p in ps:
        p.start()
    results = [out.get(timeout=120) for _ in ps]
    for p in ps:
        p.join(30)
        assert p.exitcode == 0
    won_by = {tid: agent for agent, won, _ in results for tid in won}
    assert sum(len(won) for _, won, _ in results) == 500 == len(won_by)  # nobody won a task twice
    with open_store(url) as s:
        final = {t.id: t for t in s.list_tasks("r")}
        claims = [h for h in s.history("r") if h.entity == "claim"]
        seqs = [h.seq for h in s.history("r")]
    assert all(t.status == "assigned" and t.attempt == 1 and t.owner == won_by[t.id] for t in final.values())
    assert Counter(h.to_state for h in claims) == {"won": 500, "empty": n}
    assert len(claims) == sum(calls for _, _, calls in results)
    assert {h.entity_id: h.agent for h in claims if h.to_state == "won"} == won_by
    assert seqs == list(range(1, len(seqs) + 1))  # gap-free under contention


def _killed_mid_claim(url: str) -> None:
    def die(self):  # the UPDATE has run inside BEGIN IMMEDIATE; die before history and COMMIT
        os.kill(os.getpid(), signal.SIGKILL)

    Tx.flush = die
    with open_store(url) as s:
        s.claim_next("r", "doomed")


def test_writer_killed_mid_transaction_leaves_nothing_and_frees_the_lock(tmp_path):
    url = url_of(tmp_path / "kill.db")
    with open_store(url) as s:
        s.create_run(Run(id="r"))
        s.add_graph("r", tasks(2))
        before = len(s.history("r"))
    p = CTX.Process(target=_killed_mid_claim, args=(url,))
    p.start()
    p.join(30)
    assert p.exitcode == -signal.SIGKILL
    with open_store(url, busy_timeout_s=5) as s:
        assert [(t.status, t.attempt, t.owner) for t in s.list_tasks("r")] == [("pending", 0, None)] * 2
        assert len(s.history("r")) == before
        assert s.claim_next("r", "alive").id == "t0000"  # the write lock was released by the kernel
        assert [h.seq for h in s.history("r")] == list(range(1, before + 3))


# ---------------------------------------------------------------------------- errors
def test_locked_database_becomes_store_error_naming_the_file(tmp_path):
    path = tmp_path / "busy.db"
    with open_store(url_of(path), busy_timeout_s=0.2) as s:
        s.create_run(Run(id="r"))
        s.add_graph("r", tasks(1))
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            with pytest.raises(StoreError, match=str(path)) as ei:
                s.claim_next("r", "a")
            assert isinstance(ei.value.__cause__, sqlite3.OperationalError)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert s.get_task("r", "t0000").status == "pending"
        assert s.claim_next("r", "a").id == "t0000"  # usable again once the lock is free


def test_corrupt_file_and_closed_store_are_store_errors(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a database" * 200)
    with pytest.raises(StoreError, match=str(bad)):
        open_store(url_of(bad))
    s = open_store(url_of(tmp_path / "ok.db"))
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError, match="after close"):
        s.list_runs()


@pytest.mark.parametrize("exc", [
    sqlite3.Error, sqlite3.DatabaseError, sqlite3.OperationalError, sqlite3.IntegrityError, sqlite3.DataError,
    sqlite3.ProgrammingError, sqlite3.InterfaceError, sqlite3.InternalError, sqlite3.NotSupportedError,
])
def test_every_sqlite_error_is_translated(exc):
    err = translate(exc("database is locked" if exc is sqlite3.OperationalError else "boom"), "/x/orch.db")
    assert isinstance(err, StoreError) and "/x/orch.db" in str(err) and "\n" not in str(err)


def test_load_run_integrity_failure_writes_nothing(store, tmp_path):
    store.append_events("r", [Event(agent="a", seq=0, ts_ms=T0, type="log")])
    dump = store.dump_run("r").model_copy(update={"run": Run(id="copy")})
    dump = dump.model_copy(update={"events": dump.events * 2, "history": []})  # duplicate (agent, seq)
    with open_store(url_of(tmp_path / "copy.db")) as other:
        with pytest.raises(StoreError, match="integrity"):
            other.load_run(dump)
        with pytest.raises(NotFound):
            other.get_run("copy")
        assert other.list_runs() == []


# ---------------------------------------------------------------------------- plans and write volume
def _plan(c: sqlite3.Connection, sql: str, params: tuple) -> str:
    return " | ".join(r[3] for r in c.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall())


@pytest.mark.parametrize("order", sorted(READY_ORDERS))
def test_claims_walk_a_ready_index_without_sorting(store, db, order):
    store.add_graph("r", tasks(50))
    assert store.claim_next("r", "a", order=order) is not None  # creates the order's index on first use
    with open_store(url_of(db)) as other:  # visible to every connection
        assert other._c.execute("SELECT 1 FROM sqlite_master WHERE name=?", (READY_ORDERS[order][1],)).fetchone()
    for within in (False, True):
        params = _claim_params("a", 1) + ("r",) + (("r", "x") if within else ())
        plan = _plan(store._c, SQLiteStore._claim_best_sql(order, within), params)
        assert f"USING INDEX {READY_ORDERS[order][1]}" in plan, plan
        assert "TEMP B-TREE" not in plan and "SCAN tasks" not in plan, plan


def test_cascade_and_history_head_queries_use_indexes(store):
    for sql, params in ((_OPEN_DEPENDENTS, ("r", "x")), (_OPEN_DESCENDANTS, ("r", "x")), (_UNBLOCK, ("r", "r", "x")),
                        (_LAST_ROW, ("r",)), (_MERGE_HEAD, ("r", "x"))):
        plan = _plan(store._c, sql, params)
        assert "SCAN" not in plan, plan


def test_a_claim_rewrites_a_few_pages_even_for_long_definitions(store, db):
    store.add_graph("r", tasks(40, description="x" * 20_000))
    c = store._c
    c.execute("PRAGMA wal_autocheckpoint=0")
    frames = []
    for _ in range(20):
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert len(store.claim_next("r", "a").description) == 20_000
        frames.append((os.path.getsize(f"{db}-wal") - 32) // (PAGE_SIZE + 24))
    # hot row + ready index + history leaf (+ a rare b-tree split); inline, the 20 KB would be 10+ pages
    assert sum(frames) / len(frames) <= 5 and max(frames) <= 12, frames


FLAT_AND_NOT = [{"attempt": 3}, {"by": "agent-\u00e9", "attempt": 1, "previous": None, "ok": True, "no": False},
                {"s": 'q"\\\n\u2028'}, {"big": 10**30, "neg": -5}, {"f": 1.5}, {1: 2}, {"n": {"a": 1}}, {"l": [1, "x"]}]


@pytest.mark.parametrize("data", FLAT_AND_NOT)
def test_history_data_is_written_as_the_json_encoder_writes_it(data):
    """dumps writes flat dicts (every claim's rows) without the encoder's setup: the text is the same."""
    assert dumps(data) == json.JSONEncoder(separators=(",", ":")).encode(data)
    assert dumps({}) is None and dumps([]) is None


# ---------------------------------------------------------------------------- cascades specific to this backend
def test_nested_containers_complete_bottom_up_in_one_step(store):
    g = TaskGraph(
        tasks=[Task(id="P"), Task(id="C"), Task(id="leaf"), Task(id="after")],
        dependencies=[Dependency(from_id="P", to_id="C", type="contains"),
                      Dependency(from_id="C", to_id="leaf", type="contains"),
                      Dependency(from_id="P", to_id="after", type="blocks")],
    )
    store.add_graph("r", g)
    t = store.claim_next("r", "a")
    assert t.id == "leaf"
    n = len(store.history("r"))
    store.complete("r", "leaf", "a", t.attempt)
    rows = [(h.entity_id, h.from_state, h.to_state) for h in store.history("r", since_seq=n)]
    assert rows == [("leaf", "assigned", "completed"), ("C", "pending", "completed"), ("P", "pending", "completed")]
    assert [t.id for t in store.ready_tasks("r")] == ["after"]  # unblocked by the container's completion


def test_import_closes_containers_whose_children_are_already_terminal(store):
    g = TaskGraph(tasks=[Task(id="P"), Task(id="c1", status="completed"), Task(id="c2", status="completed")],
                  dependencies=[Dependency(from_id="P", to_id=c, type="contains") for c in ("c1", "c2")])
    store.add_graph("r", g)
    assert store.get_task("r", "P").status == "completed"
    assert store.history("r", entity_id="P")[-1].reason == "all children completed"
