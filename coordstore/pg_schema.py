"""PostgreSQL backend, part 2: the schema (its own PostgreSQL schema per store URL), its version table,
and creating or migrating it on open.

The layout is SQLite's (``sqlite_schema``), so the shared SQL and codecs (``sql_rows``) serve both:
hot task columns plus precomputed ones, definitions in ``task_defs`` as JSON text, ``eff_blocks`` and
``ancestry`` for readiness and ``within``, history keyed by (run_id, seq).

Every claim UPDATE changes status, owner and attempt, so it can never be a HOT update: each index on
``tasks`` whose predicate the new row meets gets a new entry, in the lock that serializes a run's
claims (and in the WAL its COMMIT flushes). So ``tasks`` has its primary key, the partial ready
indexes (a taken row leaves them, no entry) and the partial parent index; no owner index (an agent's
tasks, read when it is reaped or listed, are a run-prefixed scan of a few thousand rows, as in
SQLite) and no unique (run_id, ord) (ord is assigned under the run's lock; lists sort a run's rows).
The default order's ready index exists from the start, another order's is made on its first claim
(``ensure_ready_index``; as in SQLite: each is rewritten by every unblock and requeue, and a
deployment uses one). History: its primary key, the unique idempotency keys (partial: only claims
and keyed records carry one) and merge rows' partial index.

Concurrent first opens (many workers starting at once) serialize on a transaction-level advisory lock
around the DDL, and each re-reads the version under it, so none fails and the DDL runs once.
A read-only open never creates or migrates: a missing schema is ``InputError``, one that is not an
orch store is ``StoreDamaged``, a newer one ``StoreError``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from coordstore.errors import InputError, StoreDamaged, StoreError
from coordstore.pg_conn import PGConn, translate, where
from coordstore.sql_claims import READY_ORDERS, ready_index_ddl

# 1: first version (the SQLite store's layout at its version 3)
# 2: no tasks_owner index, no UNIQUE (run_id, ord), only the default order's ready index up front
SCHEMA_VERSION = 2
# columns added by later versions: (version, table, column, type) - a store at an older version gets
# them on open (ADD COLUMN IF NOT EXISTS); none yet, the tests add their own to check the path
ADDED_COLUMNS: list[tuple[int, str, str, str]] = []
# what later versions dropped: a store at an older version loses it on open (IF EXISTS: idempotent)
DROPPED = ["DROP INDEX IF EXISTS tasks_owner", "ALTER TABLE tasks DROP CONSTRAINT IF EXISTS tasks_run_id_ord_key"]
BIG = "BIGINT"

DDL = [
    """CREATE TABLE IF NOT EXISTS orch_version (one BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
        version INTEGER NOT NULL)""",
    f"""CREATE TABLE IF NOT EXISTS runs (
        id TEXT PRIMARY KEY, experiment TEXT NOT NULL, variant TEXT NOT NULL, status TEXT NOT NULL,
        seed {BIG}, on_blocker_failure TEXT NOT NULL, created_at {BIG}, finished_at {BIG}, reason TEXT, config TEXT)""",
    f"""CREATE TABLE IF NOT EXISTS tasks (
        run_id TEXT NOT NULL, id TEXT NOT NULL, ord {BIG} NOT NULL, status TEXT NOT NULL,
        attempt {BIG} NOT NULL, owner TEXT, assigned_by TEXT, completed_by TEXT, reason TEXT,
        priority {BIG} NOT NULL, cp_rank DOUBLE PRECISION NOT NULL, is_container INTEGER NOT NULL,
        blockers_left {BIG} NOT NULL, parent TEXT, needed TEXT, wanted TEXT,
        created_at {BIG}, claimed_at {BIG}, started_at {BIG}, completed_at {BIG}, updated_at {BIG},
        tokens_in {BIG} NOT NULL DEFAULT 0, tokens_out {BIG} NOT NULL DEFAULT 0,
        tokens_cached {BIG} NOT NULL DEFAULT 0, tokens_thinking {BIG} NOT NULL DEFAULT 0,
        tokens_image {BIG} NOT NULL DEFAULT 0, tokens_audio {BIG} NOT NULL DEFAULT 0,
        metric_6 {BIG} NOT NULL DEFAULT 0, metric_7 {BIG} NOT NULL DEFAULT 0,
        cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
        PRIMARY KEY (run_id, id))""",
    """CREATE TABLE IF NOT EXISTS task_defs (
        run_id TEXT NOT NULL, id TEXT NOT NULL, defn TEXT NOT NULL, PRIMARY KEY (run_id, id))""",
    ready_index_ddl("priority"),  # the default order's; others on first use (ensure_ready_index)
    "CREATE INDEX IF NOT EXISTS tasks_parent ON tasks(run_id, parent, status) WHERE parent IS NOT NULL",
    f"""CREATE TABLE IF NOT EXISTS deps (
        run_id TEXT NOT NULL, ord {BIG} NOT NULL, from_id TEXT NOT NULL, to_id TEXT NOT NULL,
        type TEXT NOT NULL, PRIMARY KEY (run_id, ord))""",
    """CREATE TABLE IF NOT EXISTS eff_blocks (
        run_id TEXT NOT NULL, blocker TEXT NOT NULL, blocked TEXT NOT NULL, PRIMARY KEY (run_id, blocker, blocked))""",
    """CREATE TABLE IF NOT EXISTS ancestry (
        run_id TEXT NOT NULL, ancestor TEXT NOT NULL, task_id TEXT NOT NULL, PRIMARY KEY (run_id, ancestor, task_id))""",
    f"""CREATE TABLE IF NOT EXISTS agents (
        run_id TEXT NOT NULL, id TEXT NOT NULL, kind TEXT NOT NULL, role TEXT NOT NULL, tags TEXT NOT NULL,
        status TEXT NOT NULL, pid {BIG}, create_time DOUBLE PRECISION, current_task TEXT, registered_at {BIG},
        last_heartbeat {BIG}, lease_expires {BIG}, meta TEXT, PRIMARY KEY (run_id, id))""",
    f"""CREATE TABLE IF NOT EXISTS events (
        run_id TEXT NOT NULL, agent TEXT NOT NULL, seq {BIG} NOT NULL, ts_ms {BIG} NOT NULL,
        type TEXT NOT NULL, task TEXT, data TEXT, PRIMARY KEY (run_id, agent, seq))""",
    "CREATE INDEX IF NOT EXISTS events_ts ON events(run_id, ts_ms, agent, seq)",
    f"""CREATE TABLE IF NOT EXISTS history (
        run_id TEXT NOT NULL, seq {BIG} NOT NULL, ts_ms {BIG} NOT NULL, entity TEXT NOT NULL,
        entity_id TEXT NOT NULL, from_state TEXT, to_state TEXT NOT NULL, agent TEXT, reason TEXT,
        data TEXT, key TEXT, PRIMARY KEY (run_id, seq))""",
    "CREATE UNIQUE INDEX IF NOT EXISTS history_key ON history(run_id, key) WHERE key IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS history_merge ON history(run_id, entity_id, seq) WHERE entity='merge'",
]
TABLES = ("orch_version", "runs", "tasks", "task_defs", "deps", "eff_blocks", "ancestry", "agents", "events",
          "history")
_VERSION = "SELECT version FROM orch_version"
_TABLES_IN = "SELECT table_name FROM information_schema.tables WHERE table_schema = %s"


def _version(c: PGConn, schema: str) -> int | None:
    """The stored version, or None when the schema or its version table is missing."""
    row = c.raw.execute("SELECT to_regclass(%s)", (f'"{schema}".orch_version',)).fetchone()
    if row[0] is None:
        return None
    row = c.raw.execute(_VERSION).fetchone()
    return row[0] if row else None


def ensure(c: PGConn, schema: str, url: str) -> None:
    """Create or migrate the store's schema (a no-op, one query, when it is current)."""
    try:
        version = _version(c, schema)
        if version == SCHEMA_VERSION:
            return
        _newer(version, url)
        with _ddl(c, schema):
            version = _version(c, schema)  # another opener may have done it meanwhile
            _newer(version, url)
            if version != SCHEMA_VERSION:
                c.raw.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
                for stmt in DDL:
                    c.raw.execute(stmt)
                for _, table, col, typ in ADDED_COLUMNS:
                    c.raw.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {col} {typ}")
                for stmt in DROPPED:
                    c.raw.execute(stmt)
                c.raw.execute("INSERT INTO orch_version (version) VALUES (%s) ON CONFLICT (one) DO UPDATE "
                              "SET version = excluded.version", (SCHEMA_VERSION,))
    except psycopg.Error as e:
        raise translate(e, url) from e


@contextmanager
def _ddl(c: PGConn, schema: str) -> Iterator[None]:
    """One transaction under the schema's DDL lock: concurrent openers (and first claims of an
    order) change the catalog one at a time; rolled back on any error."""
    c.raw.execute("BEGIN")
    try:
        c.raw.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"orch-ddl:{schema}",))
        yield
        c.raw.execute("COMMIT")
    except BaseException:
        if not c.raw.closed:
            c.raw.execute("ROLLBACK")
        raise


def ensure_ready_index(c: PGConn, schema: str, url: str, order: str) -> None:
    """Create a claim order's partial ready index if it is missing (one query when it exists). The DDL
    lock serializes concurrent first claims (CREATE INDEX IF NOT EXISTS races on the catalog); the
    build holds a SHARE lock on ``tasks`` for its few milliseconds, once per store and order."""
    name = READY_ORDERS[order][1]
    try:
        if c.raw.execute("SELECT to_regclass(%s)", (f'"{schema}".{name}',)).fetchone()[0] is not None:
            return
        with _ddl(c, schema):
            c.raw.execute(ready_index_ddl(order))
    except psycopg.Error as e:
        raise translate(e, url) from e


def _newer(version: int | None, url: str) -> None:
    if version is not None and version > SCHEMA_VERSION:
        raise StoreError(f"store {where(url)}: written by a newer orch (schema version {version}; "
                         f"this orch reads {SCHEMA_VERSION})")


def check_readonly(c: PGConn, schema: str, url: str) -> None:
    """Refuse, without writing, what a reader cannot read: no such schema, not an orch store, newer."""
    try:
        if c.raw.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is None:
            raise InputError(f"store {where(url)}: no such schema {schema!r} in the database (no orch store there)")
        have = {r[0] for r in c.raw.execute(_TABLES_IN, (schema,))}
        missing = [t for t in TABLES if t not in have]
        version = _version(c, schema) if "orch_version" in have else None
    except psycopg.Error as e:
        raise translate(e, url) from e
    _newer(version, url)
    if missing or version is None:
        raise StoreDamaged(f"store {where(url)}: damaged: schema {schema!r} is not an orch store (schema version "
                           f"{version}, missing tables: {', '.join(missing) or 'none'})")
