"""The documented view of one run: its ``RunDump`` loaded into an in-memory SQLite database, where
an experiment's ``query:`` metrics run, read-only.

It reads a dump (``store.dump_run``), so it is the same on every backend. The first three tables
have task-graph-mcp's names and columns, so the queries seed 004 writes for that tool run as
written; statuses are orch's (pending, assigned, working, completed, failed, cancelled):

``tasks``          id, title, description, status, priority, phase, points, time_estimate_ms,
                   time_actual_ms (Σ of the task's working periods), owner and worker_id (the same:
                   who holds or held it), assigned_by, completed_by, attempt, reason, created_at,
                   claimed_at, started_at (its last start), completed_at, updated_at, deleted_at
                   (always NULL: orch deletes no task), cost_usd, metric_0..metric_7 (the token
                   slots: in, out, cached, thinking, image, audio, 6, 7), tags, needed_tags,
                   wanted_tags, file_scope (JSON lists), is_work (1 unless a container with children)
``task_sequence``  one row per status a task entered (notes excluded): id (the history's seq),
                   task_id, worker_id (the agent of that transition), status, from_status, reason,
                   timestamp, end_timestamp (when the task next changed status; a final status
                   that is terminal ends where it starts; another final status: NULL)
``dependencies``   from_task_id, to_task_id, dep_type (blocks: from before to; follows: to before
                   from; contains: from is to's parent)

and orch's own:

``history``        every transition row: seq, ts_ms, entity (task, agent, merge, run, claim, tool),
                   entity_id, from_state, to_state, agent, reason, data (JSON; ``json_extract``)
``agents``         id, role, kind, status, tags (JSON), registered_at, last_heartbeat
``workers``        the agents under task-graph-mcp's name (a view of ``agents``)
``events``         agent, seq, ts_ms, type, task, data (JSON)
``run``            one row: id, experiment, variant, status, seed, created_at, finished_at, reason

A query is one statement that only reads (SELECT, WITH or VALUES): sqlite's authorizer refuses
every write, schema change, ATTACH and PRAGMA when the statement is prepared, and the database is
``query_only`` besides. A query's value is the first column of its first row (None for no row or
NULL); it must be a number.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from typing import Any

from coordstore.graph import GraphIndex, work_ids
from coordstore.models import METRIC_FIELDS, TERMINAL, RunDump, Task

TABLES = {
    "tasks": ("id TEXT PRIMARY KEY", "title TEXT", "description TEXT", "status TEXT", "priority INTEGER", "phase TEXT",
              "points REAL", "time_estimate_ms INTEGER", "time_actual_ms INTEGER", "owner TEXT", "worker_id TEXT",
              "assigned_by TEXT", "completed_by TEXT", "attempt INTEGER", "reason TEXT", "created_at INTEGER",
              "claimed_at INTEGER", "started_at INTEGER", "completed_at INTEGER", "updated_at INTEGER",
              "deleted_at INTEGER", "cost_usd REAL", *(f"metric_{i} INTEGER" for i in range(8)),
              "tags TEXT", "needed_tags TEXT", "wanted_tags TEXT", "file_scope TEXT", "is_work INTEGER"),
    "task_sequence": ("id INTEGER PRIMARY KEY", "task_id TEXT", "worker_id TEXT", "status TEXT", "from_status TEXT",
                      "reason TEXT", "timestamp INTEGER", "end_timestamp INTEGER"),
    "dependencies": ("from_task_id TEXT", "to_task_id TEXT", "dep_type TEXT"),
    "history": ("seq INTEGER PRIMARY KEY", "ts_ms INTEGER", "entity TEXT", "entity_id TEXT", "from_state TEXT",
                "to_state TEXT", "agent TEXT", "reason TEXT", "data TEXT"),
    "agents": ("id TEXT PRIMARY KEY", "role TEXT", "kind TEXT", "status TEXT", "tags TEXT", "registered_at INTEGER",
               "last_heartbeat INTEGER"),
    "events": ("agent TEXT", "seq INTEGER", "ts_ms INTEGER", "type TEXT", "task TEXT", "data TEXT"),
    "run": ("id TEXT", "experiment TEXT", "variant TEXT", "status TEXT", "seed INTEGER", "created_at INTEGER",
            "finished_at INTEGER", "reason TEXT"),
}
VIEWS = {"workers": "SELECT id, role, kind, status, tags, registered_at, last_heartbeat FROM agents"}

# what the authorizer lets a statement do: read tables, call functions, recurse in a WITH
_ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE}
_REFUSED_FUNCTIONS = {"load_extension"}  # reads files into the process (disabled already; refused by name too)
# the names of what it refuses, for the one line a refused query gets
_ACTIONS = {v: k.removeprefix("SQLITE_") for k, v in vars(sqlite3).items()
            if k.startswith("SQLITE_") and isinstance(v, int) and k not in ("SQLITE_OK", "SQLITE_DENY", "SQLITE_IGNORE")
            and not k.startswith(("SQLITE_LIMIT", "SQLITE_DBCONFIG"))}
_SCHEMA = ("sqlite_master", "sqlite_temp_master")
_SCHEMA_WRITES = {"INSERT": "CREATE", "DELETE": "DROP", "UPDATE": "ALTER"}
_READS = re.compile(r"^\s*(?:(?:--[^\n]*\n|/\*.*?\*/)\s*)*(SELECT|WITH|VALUES)\b", re.IGNORECASE | re.DOTALL)
STEP_CHECK = 100_000  # VM instructions between looks at a query's budget
MAX_STEPS = 2_000_000_000  # a query past this many instructions (a runaway WITH RECURSIVE) is stopped


class QueryError(Exception):
    """A query that may not or did not run; the message is one line about the query."""


def _json(v: Any) -> str:
    return json.dumps(v, sort_keys=True)


def _sequence(dump: RunDump) -> list[tuple]:
    """task_sequence rows: each task transition (notes change no status) and when it ended."""
    rows = [h for h in dump.history if h.entity == "task" and not h.is_note]
    ends: list[int | None] = [None] * len(rows)
    next_start: dict[str, int] = {}
    for i in range(len(rows) - 1, -1, -1):  # backwards: a row ends where its task's next row starts
        h = rows[i]
        ends[i] = next_start.get(h.entity_id, h.ts_ms if h.to_state in TERMINAL else None)
        next_start[h.entity_id] = h.ts_ms
    return [(h.seq, h.entity_id, h.agent, h.to_state, h.from_state, h.reason, h.ts_ms, end) for h, end in zip(rows, ends)]


def _task_row(t: Task, actual: int | None, work: bool) -> tuple:
    slots = [getattr(t, f) for f in METRIC_FIELDS]  # metric_0..metric_7, seed 004's slot convention
    return (t.id, t.title, t.description, t.status, t.priority, t.phase, t.points, t.time_estimate_ms, actual,
            t.owner, t.owner, t.assigned_by, t.completed_by, t.attempt, t.reason, t.created_at, t.claimed_at,
            t.started_at, t.completed_at, t.updated_at, None, t.cost_usd, *slots,
            _json(t.tags), _json(t.needed_tags), _json(t.wanted_tags), _json(t.file_scope), int(work))


def _fill(db: sqlite3.Connection, dump: RunDump) -> None:
    seq = _sequence(dump)
    actual: dict[str, int] = {}
    for _, task, _, status, _, _, ts, end in seq:
        if status == "working" and end is not None:
            actual[task] = actual.get(task, 0) + end - ts
    work = set(work_ids(GraphIndex(dump.tasks, dump.dependencies)))
    rows = {
        "tasks": [_task_row(t, actual.get(t.id), t.id in work) for t in dump.tasks],
        "task_sequence": seq,
        "dependencies": [(d.from_id, d.to_id, d.type) for d in dump.dependencies],
        "history": [(h.seq, h.ts_ms, h.entity, h.entity_id, h.from_state, h.to_state, h.agent, h.reason, _json(h.data))
                    for h in dump.history],
        "agents": [(a.id, a.role, a.kind, a.status, _json(a.tags), a.registered_at, a.last_heartbeat) for a in dump.agents],
        "events": [(e.agent, e.seq, e.ts_ms, e.type, e.task, _json(e.data)) for e in dump.events],
        "run": [(dump.run.id, dump.run.experiment, dump.run.variant, dump.run.status, dump.run.seed,
                 dump.run.created_at, dump.run.finished_at, dump.run.reason)],
    }
    for table, values in rows.items():
        db.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(TABLES[table]))})", values)


class RunView:
    """One run (or, with no dump, the empty schema queries are checked against) in memory, read-only."""

    def __init__(self, dump: RunDump | None = None):
        self.db = sqlite3.connect(":memory:")
        for table, columns in TABLES.items():
            self.db.execute(f"CREATE TABLE {table} ({', '.join(columns)})")
        for view, select in VIEWS.items():
            self.db.execute(f"CREATE VIEW {view} AS {select}")
        if dump is not None:
            _fill(self.db, dump)
        self.db.commit()
        self.db.execute("PRAGMA query_only = ON")
        self._refused: list[str] = []
        self._steps = 0
        self.db.set_authorizer(self._authorize)
        self.db.set_progress_handler(self._budget, STEP_CHECK)

    def _authorize(self, action: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None) -> int:
        if action == sqlite3.SQLITE_FUNCTION:
            if arg2 not in _REFUSED_FUNCTIONS:
                return sqlite3.SQLITE_OK
            self._refused.append(f"call {arg2}")
            return sqlite3.SQLITE_DENY
        if action in _ALLOWED:
            return sqlite3.SQLITE_OK
        # sqlite asks this while connecting an eponymous virtual table (json_each, json_tree);
        # sqlite_master cannot be written from SQL, and query_only refuses every write anyway
        if action == sqlite3.SQLITE_UPDATE and arg1 in _SCHEMA:
            return sqlite3.SQLITE_OK
        what = _ACTIONS.get(action, str(action))
        if arg1 in _SCHEMA:  # a CREATE or DROP writes the schema table first: name the statement
            what, arg1 = _SCHEMA_WRITES.get(what, what), None
        self._refused.append(what + (f" {arg1}" if arg1 else ""))
        return sqlite3.SQLITE_DENY

    def _budget(self) -> int:
        self._steps += STEP_CHECK
        return 1 if self._steps > MAX_STEPS else 0  # non-zero interrupts the statement

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "RunView":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _failed(self, e: sqlite3.Error) -> QueryError:
        if isinstance(e, sqlite3.ProgrammingError) and "one statement" in str(e):
            return QueryError("a metric's query is one statement: this one has more (a ';' between two)")
        if self._refused:
            return QueryError(f"a metric's query may only read the run; this one would {self._refused[0]}")
        if self._steps > MAX_STEPS:
            return QueryError(f"the query was stopped after {MAX_STEPS:,} steps (a WITH RECURSIVE without an end?)")
        return QueryError(f"the query does not run on the run's view: {e}")

    def _first_row(self, sql: str, explain: bool = False) -> tuple | None:
        self._refused, self._steps = [], 0
        try:
            return self.db.execute(("EXPLAIN " if explain else "") + sql).fetchone()
        except sqlite3.Error as e:
            raise self._failed(e) from None

    def check(self, sql: str) -> None:
        """Compile ``sql`` without running it (EXPLAIN): refused if it would write or does not compile."""
        self._first_row(sql, explain=True)  # the authorizer names what a writing statement would do
        if not _READS.match(sql):  # what it lets through that is no query (REINDEX)
            raise QueryError("a metric's query is one statement that only reads (SELECT, WITH or VALUES)")

    def value(self, sql: str) -> int | float | None:
        """The first column of the first row ``sql`` returns; None for no row or NULL."""
        self.check(sql)
        row = self._first_row(sql)
        v = row[0] if row else None
        if v is None or (isinstance(v, (int, float)) and math.isfinite(v)):
            return v
        shown = v if isinstance(v, (int, float)) else repr(v)[:60]
        raise QueryError(f"the query returned {shown}, not a number")
