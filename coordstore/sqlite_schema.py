"""SQLite backend, part 1: the schema, opening a connection, error translation, row codecs.

Kept apart from ``sqlitestore.py`` (the operations) so each module holds one idea.

Layout: ``tasks`` carries the hot columns that claims touch (status, attempt, owner, ...) plus
precomputed static ones (ord = template order, cp_rank = critical-path tail, is_container, parent,
blockers_left = effective blockers not completed yet); the rest of a task's definition is one
JSON column. ``eff_blocks`` holds every (blocker, blocked) pair of effective blockers, so a
completion unblocks dependents with one indexed UPDATE. ``ancestry`` is the closure of the
containment tree, so ``within`` (descendants of a container) is one indexed join.
A partial index per claim order holds exactly the ready rows, so picking the best ready task is an
index walk with no sort and no scan of finished work (created on first use of the order, see below).
History is clustered on (run_id, seq): appending a row touches one b-tree, and seq = max + 1 is one
descent. Fewer indexes matter here: every page a claim touches is written to the WAL at COMMIT and
later checkpointed (with fsync), so there is deliberately no index on history.entity_id: measured,
it cost a quarter of a claim, and filtering one task's rows scans the run's history (~2 ms / 10k rows).
Merge rows alone have a partial index (``history_merge``): ``record`` reads a merge's latest row to
chain the next one, and claims never write a merge row, so they never touch it.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from contextlib import contextmanager
from urllib.parse import quote

from coordstore.errors import InputError, StoreDamaged, StoreError
from coordstore.private import create_private
from coordstore.sql_claims import ready_index_ddl

# 2: history_merge index (created on open of a version-1 file)
# 3: tasks.tokens_image, tokens_audio, metric_6, metric_7 (added on open of an older file)
SCHEMA_VERSION = 3
# Many processes contend for the one write lock; waiting long beats failing a claim or a completion.
BUSY_TIMEOUT_S = 60.0
# Concurrent first opens race to switch the fresh file to WAL; a few short retries settle it.
OPEN_RETRIES = 50
OPEN_RETRY_SLEEP_S = 0.05
# Prepared statements kept per connection (the store uses a few dozen distinct SQL texts).
CACHED_STATEMENTS = 256
# Pages of a new file. A claim dirties ~3 pages, each written whole to the WAL at COMMIT and again at
# checkpoint: 2 KiB pages halve those bytes against the 4 KiB default (measured single-process: mean
# claim time ~10% lower, from cheaper checkpoints; no measurable effect in 16-process storms).
PAGE_SIZE = 2048

DDL = [
    """CREATE TABLE IF NOT EXISTS runs (
        id TEXT PRIMARY KEY, experiment TEXT NOT NULL, variant TEXT NOT NULL, status TEXT NOT NULL,
        seed INTEGER, on_blocker_failure TEXT NOT NULL, created_at INTEGER, finished_at INTEGER,
        reason TEXT, config TEXT)""",
    """CREATE TABLE IF NOT EXISTS tasks (
        run_id TEXT NOT NULL, id TEXT NOT NULL, ord INTEGER NOT NULL, status TEXT NOT NULL,
        attempt INTEGER NOT NULL, owner TEXT, assigned_by TEXT, completed_by TEXT, reason TEXT,
        priority INTEGER NOT NULL, cp_rank REAL NOT NULL, is_container INTEGER NOT NULL,
        blockers_left INTEGER NOT NULL, parent TEXT, needed TEXT, wanted TEXT,
        created_at INTEGER, claimed_at INTEGER, started_at INTEGER, completed_at INTEGER, updated_at INTEGER,
        tokens_in INTEGER NOT NULL DEFAULT 0, tokens_out INTEGER NOT NULL DEFAULT 0,
        tokens_cached INTEGER NOT NULL DEFAULT 0, tokens_thinking INTEGER NOT NULL DEFAULT 0,
        tokens_image INTEGER NOT NULL DEFAULT 0, tokens_audio INTEGER NOT NULL DEFAULT 0,
        metric_6 INTEGER NOT NULL DEFAULT 0, metric_7 INTEGER NOT NULL DEFAULT 0,
        cost_usd REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (run_id, id), UNIQUE (run_id, ord))""",
    # the static rest of each task's definition, apart so claims rewrite only the small hot row
    """CREATE TABLE IF NOT EXISTS task_defs (
        run_id TEXT NOT NULL, id TEXT NOT NULL, defn TEXT NOT NULL, PRIMARY KEY (run_id, id))""",
    ready_index_ddl("priority"),  # the default order's index exists from the start
    "CREATE INDEX IF NOT EXISTS tasks_parent ON tasks(run_id, parent, status) WHERE parent IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS deps (
        run_id TEXT NOT NULL, ord INTEGER NOT NULL, from_id TEXT NOT NULL, to_id TEXT NOT NULL,
        type TEXT NOT NULL, PRIMARY KEY (run_id, ord)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS eff_blocks (
        run_id TEXT NOT NULL, blocker TEXT NOT NULL, blocked TEXT NOT NULL,
        PRIMARY KEY (run_id, blocker, blocked)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS ancestry (
        run_id TEXT NOT NULL, ancestor TEXT NOT NULL, task_id TEXT NOT NULL,
        PRIMARY KEY (run_id, ancestor, task_id)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS agents (
        run_id TEXT NOT NULL, id TEXT NOT NULL, kind TEXT NOT NULL, role TEXT NOT NULL, tags TEXT NOT NULL,
        status TEXT NOT NULL, pid INTEGER, create_time REAL, current_task TEXT, registered_at INTEGER,
        last_heartbeat INTEGER, lease_expires INTEGER, meta TEXT, PRIMARY KEY (run_id, id))""",
    """CREATE TABLE IF NOT EXISTS events (
        run_id TEXT NOT NULL, agent TEXT NOT NULL, seq INTEGER NOT NULL, ts_ms INTEGER NOT NULL,
        type TEXT NOT NULL, task TEXT, data TEXT, PRIMARY KEY (run_id, agent, seq))""",
    "CREATE INDEX IF NOT EXISTS events_ts ON events(run_id, ts_ms, agent, seq)",
    """CREATE TABLE IF NOT EXISTS history (
        run_id TEXT NOT NULL, seq INTEGER NOT NULL, ts_ms INTEGER NOT NULL, entity TEXT NOT NULL,
        entity_id TEXT NOT NULL, from_state TEXT, to_state TEXT NOT NULL, agent TEXT, reason TEXT,
        data TEXT, key TEXT, PRIMARY KEY (run_id, seq)) WITHOUT ROWID""",
    "CREATE UNIQUE INDEX IF NOT EXISTS history_key ON history(run_id, key) WHERE key IS NOT NULL",
    # the head of a merge's chain (record derives from_state from it); claims and task rows skip it
    "CREATE INDEX IF NOT EXISTS history_merge ON history(run_id, entity_id, seq) WHERE entity='merge'",
]
TABLES = frozenset(m.group(1) for stmt in DDL if (m := re.match(r"CREATE TABLE IF NOT EXISTS (\w+)", stmt)))
# task columns later versions added to the DDL above: an older file gets them on open (ALTER TABLE),
# a read-only open sees them as 0 through a temporary view
ADDED_TASK_COLS = ("tokens_image", "tokens_audio", "metric_6", "metric_7")


# ---------------------------------------------------------------------------- errors
def translate(e: sqlite3.Error, path: str) -> StoreError:
    """One clear line naming the database file; callers raise it ``from`` the original."""
    msg = str(e)
    if isinstance(e, sqlite3.OperationalError) and ("locked" in msg or "busy" in msg):
        return StoreError(f"store {path}: database stayed locked past the busy timeout ({msg})")
    if isinstance(e, sqlite3.IntegrityError):
        return StoreError(f"store {path}: integrity constraint failed ({msg})")
    if isinstance(e, sqlite3.OperationalError) and "unable to open" in msg:
        return StoreError(f"store {path}: cannot open the database file ({msg})")
    if isinstance(e, sqlite3.DatabaseError) and ("not a database" in msg or "malformed" in msg):
        return StoreDamaged(f"store {path}: damaged: not a usable SQLite database ({msg})")
    return StoreError(f"store {path}: sqlite error: {msg}")


@contextmanager
def mapped(path: str):
    """Translate sqlite3 errors raised inside the block into StoreError."""
    try:
        yield
    except sqlite3.Error as e:
        raise translate(e, path) from e


# ---------------------------------------------------------------------------- opening
def _retry_locked(fn, path: str):
    for i in range(OPEN_RETRIES):
        try:
            return fn()
        except sqlite3.OperationalError as e:
            if ("locked" not in str(e) and "busy" not in str(e)) or i == OPEN_RETRIES - 1:
                raise
            time.sleep(OPEN_RETRY_SLEEP_S)


def connect(path: str, busy_timeout_s: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """Open (creating the directory and schema if needed) a connection in autocommit mode.

    Safe when many processes open a fresh file at once: the schema is created inside
    ``BEGIN IMMEDIATE`` with ``IF NOT EXISTS`` and stamped with ``user_version``.
    """
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise StoreError(f"store {path}: cannot create directory {parent} ({e.strerror})") from e
    with mapped(path):
        if path not in ("", ":memory:"):
            create_private(path)  # SQLite gives its -wal and -shm files the database's mode
        conn = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None,
                               cached_statements=CACHED_STATEMENTS)
        try:
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # takes effect only while the file is empty
            mode = _retry_locked(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone()[0], path)
            if str(mode).lower() != "wal":
                raise StoreError(f"store {path}: cannot switch to WAL journal mode (got {mode})")
            conn.execute("PRAGMA synchronous=NORMAL")
            if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                _create_schema(conn)
        except BaseException:
            conn.close()
            raise
    return conn


def connect_readonly(path: str, busy_timeout_s: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """Open an existing orch store for reading only: no directory, schema, WAL switch or migration.

    The file's size is checked by ``stat`` (SQLite would take a 0-byte file for a new database, and
    zero-fill a last page cut short); SQLite itself refuses a foreign file or one cut at a page
    boundary. Nothing here opens the file outside SQLite: closing any descriptor of a database file
    drops every POSIX lock this process holds on it, a writer's connection's included (the model
    server reads the store inside the orchestrator's process), and that corrupts the database.
    Opening a WAL database still lets SQLite create its empty -wal/-shm side files, which readers
    need to see a consistent state while a writer runs; the database file itself is never written.
    """
    _check_size(path)
    with mapped(path):
        conn = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, timeout=busy_timeout_s,
                               isolation_level=None, cached_statements=CACHED_STATEMENTS)
        try:
            page = conn.execute("PRAGMA page_size").fetchone()[0]  # "file is not a database" if foreign
            _check_size(path, page)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except BaseException:
            conn.close()
            raise
    if version > SCHEMA_VERSION:
        conn.close()
        raise StoreError(f"store {path}: written by a newer orch (schema version {version}; "
                         f"this orch reads {SCHEMA_VERSION})")
    missing = sorted(TABLES - tables)
    if version < 1 or missing:  # an older version reads as it is, never migrated (see _older_tasks_view)
        conn.close()
        raise StoreDamaged(f"store {path}: damaged: not an orch store (schema version {version}, "
                           f"missing tables: {', '.join(missing) or 'none'})")
    try:
        with mapped(path):
            _older_tasks_view(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _missing_task_cols(conn: sqlite3.Connection, schema: str = "main") -> list[str]:
    have = {r[1] for r in conn.execute(f"PRAGMA {schema}.table_info(tasks)")}
    return [c for c in ADDED_TASK_COLS if c not in have]


def _older_tasks_view(conn: sqlite3.Connection) -> None:
    """A read-only connection to a file older than the added task columns: a TEMP view named
    ``tasks`` (temp shadows main) gives them as 0, so every query reads the file as it is. The view
    lives in the connection's temp database: the file is not written."""
    missing = _missing_task_cols(conn)
    if missing:
        zeros = ", ".join(f"0 AS {c}" for c in missing)
        conn.execute(f"CREATE TEMP VIEW tasks AS SELECT *, {zeros} FROM main.tasks")


def _check_size(path: str, page: int | None = None) -> None:
    """Refuse what cannot be an orch SQLite store by its size alone: missing, empty, or (given the
    page size) cut inside a page. ``stat`` only: see ``connect_readonly`` on why not ``open``."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise InputError(f"store {path}: no such file") from None
    except OSError as e:
        raise StoreError(f"store {path}: cannot read ({e.strerror or e})") from e
    if size == 0:
        raise StoreDamaged(f"store {path}: damaged: the file is empty (0 bytes)")
    if page and size % page:
        raise StoreDamaged(f"store {path}: damaged: cut short ({size} bytes are not a whole number of "
                           f"{page}-byte pages)")


def _create_schema(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            for stmt in DDL:
                conn.execute(stmt)
            for col in _missing_task_cols(conn):  # a file from before the column (CREATE ... IF NOT EXISTS kept its table)
                conn.execute(f"ALTER TABLE tasks ADD COLUMN {col} INTEGER NOT NULL DEFAULT 0")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
