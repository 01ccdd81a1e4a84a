"""What only the PostgreSQL store has: its schema's version and migration, concurrent first opens,
ready indexes made on a claim order's first use,
the database clock, a claim retried after a lost connection, and many runs sharing one schema.
Live PostgreSQL (tests/conftest.py PG_BASE): unreachable, these fail."""

from __future__ import annotations


import psycopg
import pytest

from coordstore import open_store, pg_schema
from coordstore.clock import WALL
from coordstore.errors import StoreError
from coordstore.models import Agent, Run, Task, TaskGraph
from coordstore.pg_conn import parse_url, translate
from coordstore.pgstore import PGStore

from conftest import PG_BASE, FakeClock, make_graph, make_store_url
from storms import storm



@pytest.fixture
def pg_url(tmp_path) -> str:
    return make_store_url("postgresql", tmp_path)


def sql(url: str, stmt: str, params=()):
    _, schema = parse_url(url)
    with psycopg.connect(PG_BASE, autocommit=True) as c:
        c.execute(f'SET search_path TO "{schema}"')
        cur = c.execute(stmt, params)
        return cur.fetchall() if cur.description else None


def test_schema_carries_its_version_and_an_older_one_is_migrated(pg_url, monkeypatch):
    with open_store(pg_url) as s:
        s.create_run(Run(id="r"))
    assert sql(pg_url, "SELECT version FROM orch_version") == [(pg_schema.SCHEMA_VERSION,)]
    # a later version adds a column: a store at this version gets it on open, its rows kept
    monkeypatch.setattr(pg_schema, "SCHEMA_VERSION", pg_schema.SCHEMA_VERSION + 1)
    monkeypatch.setattr(pg_schema, "ADDED_COLUMNS", [(pg_schema.SCHEMA_VERSION, "runs", "note", "TEXT")])
    with open_store(pg_url, readonly=True) as s:  # a reader never migrates
        assert [r.id for r in s.list_runs()] == ["r"]
    assert sql(pg_url, "SELECT version FROM orch_version") == [(pg_schema.SCHEMA_VERSION - 1,)]
    with open_store(pg_url) as s:
        assert [r.id for r in s.list_runs()] == ["r"]
    assert sql(pg_url, "SELECT version FROM orch_version") == [(pg_schema.SCHEMA_VERSION,)]
    assert sql(pg_url, "SELECT count(note) FROM runs") == [(0,)]


def _indexes(url: str) -> set[str]:
    _, schema = parse_url(url)
    return {r[0] for r in sql(url, "SELECT indexname FROM pg_indexes WHERE schemaname=%s", (schema,))}


def test_a_version_1_store_loses_the_indexes_claims_paid_for(pg_url):
    with open_store(pg_url) as s:
        s.create_run(Run(id="r"))
        s.add_graph("r", make_graph(["a", "b"]))
    # version 1 had an owner index and ord unique; every claim added an entry to both
    sql(pg_url, "CREATE INDEX tasks_owner ON tasks(run_id, owner) WHERE owner IS NOT NULL")
    sql(pg_url, "ALTER TABLE tasks ADD CONSTRAINT tasks_run_id_ord_key UNIQUE (run_id, ord)")
    sql(pg_url, "UPDATE orch_version SET version = 1")
    with open_store(pg_url) as s:
        assert s.claim_next("r", "w1").id == "a"
        assert [t.id for t in s.list_tasks("r", owner="w1")] == ["a"]
    assert sql(pg_url, "SELECT version FROM orch_version") == [(pg_schema.SCHEMA_VERSION,)]
    assert {"tasks_owner", "tasks_run_id_ord_key"}.isdisjoint(_indexes(pg_url))


def _claim_fifo(url, run, agent, barrier, out):
    barrier.wait()
    try:
        with open_store(url) as s:
            t = s.claim_next(run, agent, order="fifo")
            out.put((agent, "ok", t and t.id))
    except Exception as e:  # noqa: BLE001 - reported to the parent
        out.put((agent, "error", repr(e)))


def test_a_claim_order_gets_its_ready_index_on_first_use_even_by_many_at_once(pg_url):
    with open_store(pg_url) as s:
        s.create_run(Run(id="r"))
        s.add_graph("r", make_graph([f"t{i}" for i in range(6)]))
    assert "tasks_ready_priority" in _indexes(pg_url)
    assert not {"tasks_ready_fifo", "tasks_ready_cp"} & _indexes(pg_url)
    procs = 6
    got = list(storm(_claim_fifo, pg_url, "r", procs).values())
    assert sorted(r[0] for r in got) == ["ok"] * procs, got
    assert sorted(r[1] for r in got) == [f"t{i}" for i in range(6)]
    assert "tasks_ready_fifo" in _indexes(pg_url) and "tasks_ready_cp" not in _indexes(pg_url)
    with psycopg.connect(PG_BASE, autocommit=True) as c:  # a 6-row table: make the planner show what it can use
        c.execute(f'SET search_path TO "{parse_url(pg_url)[1]}"')
        c.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in c.execute("EXPLAIN SELECT id FROM tasks WHERE run_id='r' AND status='pending' "
                                                  "AND is_container=0 AND blockers_left=0 ORDER BY ord LIMIT 1"))
    assert "tasks_ready_fifo" in plan, plan


def test_a_newer_schema_is_refused(pg_url):
    open_store(pg_url).close()
    sql(pg_url, "UPDATE orch_version SET version = 99")
    for readonly in (False, True):
        with pytest.raises(StoreError, match="newer orch"):
            open_store(pg_url, readonly=readonly)


def _open_and_claim(url, run, agent, barrier, out):
    barrier.wait()
    try:
        with open_store(url) as s:
            out.put((agent, "ok", s.list_runs() is not None))
    except Exception as e:  # noqa: BLE001 - reported to the parent
        out.put((agent, "error", repr(e)))


def test_processes_opening_a_fresh_schema_at_once_all_succeed(pg_url):
    procs = 8
    got = list(storm(_open_and_claim, pg_url, "r", procs).values())
    assert sorted(r[0] for r in got) == ["ok"] * procs, got
    assert sql(pg_url, "SELECT version FROM orch_version") == [(pg_schema.SCHEMA_VERSION,)]


def test_stamps_come_from_the_database_clock_not_the_client(pg_url):
    with open_store(pg_url, clock=WALL) as s:  # orch's own wall clock is no injected clock
        assert s.database_clock
        db_now = sql(pg_url, "SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint")[0][0]
        skewed = db_now - 3_600_000  # a client an hour behind passes its now: ignored
        s.create_run(Run(id="r"), now=skewed)
        s.add_graph("r", make_graph(["a"]), now=skewed)
        s.register_agent("r", Agent(id="w1"), lease_ms=1000, now=skewed)
        t = s.claim_next("r", "w1", now=skewed)
        a = s.heartbeat("r", "w1", lease_ms=1000, now=skewed)
        after = sql(pg_url, "SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint")[0][0]
        assert db_now <= t.claimed_at <= after and db_now <= a.last_heartbeat <= after
        assert a.lease_expires == a.last_heartbeat + 1000
        assert all(db_now <= r.ts_ms <= after for r in s.history("r"))
        assert db_now <= s.clock() and s.reap_expired("r", now=skewed + 10**9) == []  # reap's now: the DB's


def test_an_injected_clock_is_used_as_given(pg_url):
    clock = FakeClock()
    with open_store(pg_url, clock=clock) as s:
        assert not s.database_clock
        s.create_run(Run(id="r"))
        assert s.history("r")[0].ts_ms == clock.now


def test_a_claimed_task_carries_its_definition_read_after_the_lock(pg_url):
    with open_store(pg_url) as s:
        s.create_run(Run(id="r"))
        s.add_graph("r", TaskGraph(tasks=[Task(id="a", title="T", description="D", meta={"k": [1]},
                                               needed_tags=["gpu"], file_scope=["x/"])]))
        assert s.claim_next("r", "w1", agent_tags=["cpu"]) is None
        t = s.claim_next("r", "w1", agent_tags=["gpu"])
        assert (t.title, t.description, t.meta, t.needed_tags, t.file_scope) == ("T", "D", {"k": [1]}, ["gpu"], ["x/"])
        assert t == s.get_task("r", "a") and t.owner == "w1"


def test_a_claim_whose_connection_dies_after_commit_is_retried_with_its_key(pg_url, monkeypatch):
    with open_store(pg_url) as s:
        s.create_run(Run(id="r"))
        s.add_graph("r", make_graph(["a", "b"]))
        exits = []
        real_claim = PGStore._claim_one  # the whole claim, COMMIT included, in one statement

        def commit_then_lose_connection(self, *args):
            result = real_claim(self, *args)
            if not exits:  # the first commit's response is lost: the server kills the session
                exits.append(self._c.raw.info.backend_pid)
                with psycopg.connect(PG_BASE, autocommit=True) as c:
                    c.execute("SELECT pg_terminate_backend(%s)", (exits[0],))
                with pytest.raises(psycopg.OperationalError):
                    self._c.raw.execute("SELECT 1")
                lost = psycopg.OperationalError("server closed the connection unexpectedly")
                raise translate(lost, self.url) from lost  # as a lost connection is reported
            return result

        monkeypatch.setattr(PGStore, "_claim_one", commit_then_lose_connection)
        t = s.claim_next("r", "w1")
        monkeypatch.undo()
        assert t.id == "a" and t.owner == "w1" and t.attempt == 1
        assert s._c.raw.info.backend_pid != exits[0]  # reconnected
        won = [r for r in s.history("r") if r.entity == "claim"]
        assert [(r.entity_id, r.to_state) for r in won] == [("a", "won")] and won[0].key
        assert s.get_task("r", "b").status == "pending"


def test_a_lost_connection_before_commit_claims_afresh(pg_url, monkeypatch):
    with open_store(pg_url) as s:
        s.create_run(Run(id="r"))
        s.add_graph("r", make_graph(["a", "b"]))
        killed = []
        real_claim = PGStore._claim_one

        def lose_connection_first(self, *args):
            if not killed:
                killed.append(self._c.raw.info.backend_pid)
                with psycopg.connect(PG_BASE, autocommit=True) as c:
                    c.execute("SELECT pg_terminate_backend(%s)", (killed[0],))
            return real_claim(self, *args)

        monkeypatch.setattr(PGStore, "_claim_one", lose_connection_first)
        t = s.claim_next("r", "w1")
        monkeypatch.undo()
        assert t.id == "a" and [r.to_state for r in s.history("r") if r.entity == "claim"] == ["won"]


def test_many_runs_share_one_schema_each_with_its_own_history(pg_url):
    with open_store(pg_url) as s:
        for i in range(5):
            s.create_run(Run(id=f"r{i}"))
            s.add_graph(f"r{i}", make_graph(["a", "b"], [("a", "blocks", "b")]))
        for i in range(5):
            t = s.claim_next(f"r{i}", "w")
            s.start(f"r{i}", t.id, "w", t.attempt)
            s.complete(f"r{i}", t.id, "w", t.attempt)
        assert [r.id for r in s.list_runs()] == [f"r{i}" for i in range(5)]
        for i in range(5):
            assert [r.seq for r in s.history(f"r{i}")] == list(range(1, 8))
            assert [t.status for t in s.list_tasks(f"r{i}")] == ["completed", "pending"]


def test_a_bad_schema_name_is_a_url_error():
    from coordstore.errors import StoreURLError

    with pytest.raises(StoreURLError, match="schema"):
        open_store(f"{PG_BASE}?schema=a;drop")


def test_the_one_statement_claim_writes_what_the_general_path_writes(pg_url):
    """claim_next's one statement (pg_claims) against the general path (state machine in Python),
    which an agent whose name holds one of pg_claims' markers takes: same rows, same seqs."""
    from coordstore import pg_claims

    def story(s, run, x, y):
        s.create_run(Run(id=run))
        s.add_graph(run, make_graph(["a", "b", "c"]))
        got = [s.claim_next(run, x), s.claim_next(run, x, seen="a"), s.claim_next(run, y, seen="b"),
               s.claim_next(run, y, seen="c"), s.claim_next(run, y), s.claim_next(run, x, agent_tags=["py"])]
        return [None if t is None else (t.id, t.owner, t.attempt, t.status) for t in got]

    slow_x, slow_y = pg_claims._TOOK, pg_claims._SEEN + "-y"
    with open_store(pg_url) as s:
        fast = story(s, "fast", "x", "y")
        agents = lambda: {k[0] for k in s._claim_fns if isinstance(k, tuple)}  # noqa: E731
        assert agents() == {"x", "y"}
        slow = story(s, "slow", slow_x, slow_y)
        assert agents() == {"x", "y"}  # no function for these two: the general path
        rows = {}
        for run, names in (("fast", {"fast": "R", "x": "X", "y": "Y"}), ("slow", {"slow": "R", slow_x: "X", slow_y: "Y"})):
            h = s.history(run)
            assert [r.seq for r in h] == list(range(1, len(h) + 1))
            rows[run] = [(r.seq, r.entity, names.get(r.entity_id, r.entity_id), r.from_state, r.to_state, names.get(r.agent, r.agent),
                          {k: names.get(v, v) for k, v in r.data.items()}, r.key is not None) for r in h]
    assert [(t and (t[0], t[2], t[3])) for t in fast] == [(t and (t[0], t[2], t[3])) for t in slow]
    assert rows["fast"] == rows["slow"]
    assert [r[4] for r in rows["fast"] if r[1] == "claim"] == ["won", "lost", "won", "lost", "won", "lost", "empty",
                                                                  "empty"]


def test_a_lost_session_fails_one_call_and_the_next_reconnects(pg_url):
    """A network blip or server restart must not end a runner: the call that meets the dead session
    fails with a StoreError; the next one opens a new session and works."""
    store = open_store(pg_url)
    store.create_run(Run(id="r"))
    pid = store._conn().raw.info.backend_pid
    sql(pg_url, "SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(StoreError):
        store.get_run("r")
    assert store.get_run("r").id == "r"
    assert store._conn().raw.info.backend_pid != pid
    store.close()


def test_a_store_unreachable_for_a_while_keeps_trying(pg_url, monkeypatch):
    """While the server cannot be reached, every call fails alike (never 'used after close') and the
    first call after it is back works."""
    store = open_store(pg_url)
    store.create_run(Run(id="r"))
    sql(pg_url, "SELECT pg_terminate_backend(%s)", (store._conn().raw.info.backend_pid,))
    real_connect = psycopg.connect

    def refused(*a, **k):
        raise psycopg.OperationalError("connection refused (test)")

    monkeypatch.setattr(psycopg, "connect", refused)
    for _ in range(3):
        with pytest.raises(StoreError) as e:
            store.get_run("r")
        assert "after close" not in str(e.value)
    monkeypatch.setattr(psycopg, "connect", real_connect)
    assert store.get_run("r").status == "running"
    store.close()
