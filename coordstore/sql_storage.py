"""The SQL backends' write transaction and the state machine's storage inside it, shared by SQLite
(``sqlite_tx``) and PostgreSQL (``pg_tx``): what differs between them is how a transaction begins
and commits (and locks the run), not what it reads and writes.

A ``SQLTx`` holds one connection's transaction: it hands out history ``seq`` numbers (the run's
latest + 1) and buffers transition rows, written by one ``executemany`` just before COMMIT (fewer
round trips while the run's lock is held). A ``TxRun`` is one run's ``statemachine.Storage``
inside a ``SQLTx``: the verbs' rules and cascades are the state machine's, so they commit together
with the change that caused them. SQL here is written with ``?`` placeholders (``pg_conn`` adapts).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from coordstore.errors import NotFound
from coordstore.models import Agent
from coordstore.sql_rows import AGENT_COLS, INSERT_HISTORY, TASK_COLS, TERMINAL_SQL, agent_row, dumps
from coordstore.statemachine import TaskState

_STATE = "SELECT status, attempt, owner, parent, is_container, blockers_left FROM tasks WHERE run_id=? AND id=?"
_MAX_SEQ = "SELECT COALESCE(MAX(seq), 0) FROM history WHERE run_id=?"
_UNBLOCK = (
    "UPDATE tasks SET blockers_left = blockers_left - 1 "
    "WHERE run_id=? AND id IN (SELECT blocked FROM eff_blocks WHERE run_id=? AND blocker=?)"
)
# CROSS JOIN keeps the few eff_blocks/ancestry rows as SQLite's outer loop (it never reorders it);
# pg_conn reads it as a plain JOIN.
_OPEN_DEPENDENTS = (
    "SELECT t.id, t.status FROM eff_blocks e CROSS JOIN tasks t ON t.run_id=e.run_id AND t.id=e.blocked "
    f"WHERE e.run_id=? AND e.blocker=? AND t.status NOT IN {TERMINAL_SQL} ORDER BY t.ord"
)
_OPEN_DESCENDANTS = (
    "SELECT t.id, t.status FROM ancestry a CROSS JOIN tasks t ON t.run_id=a.run_id AND t.id=a.task_id "
    f"WHERE a.run_id=? AND a.ancestor=? AND t.status NOT IN {TERMINAL_SQL} ORDER BY t.ord"
)
_OPEN_CHILD = f"SELECT 1 FROM tasks WHERE run_id=? AND parent=? AND status NOT IN {TERMINAL_SQL} LIMIT 1"
_FIRST_UNCOMPLETED_CHILD = (
    "SELECT id, status FROM tasks WHERE run_id=? AND parent=? AND status != 'completed' ORDER BY ord LIMIT 1"
)
# only when an assignment is refused: the blockers it waits on, named
_WAITING_ON = (
    "SELECT e.blocker FROM eff_blocks e CROSS JOIN tasks t ON t.run_id=e.run_id AND t.id=e.blocker "
    "WHERE e.run_id=? AND e.blocked=? AND t.status != 'completed' ORDER BY e.blocker"
)
# the task a won claim row with this idempotency key took (claims replayed after a lost response)
_WON_WITH = "SELECT entity_id FROM history WHERE run_id=? AND key=? AND entity='claim' AND to_state='won'"
_PUT_AGENT = (
    f"INSERT INTO agents (run_id, {AGENT_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (run_id, id) DO UPDATE "
    "SET " + ", ".join(f"{c.strip()}=excluded.{c.strip()}" for c in AGENT_COLS.split(",")[1:])
)


class SQLTx:
    """One write transaction's history buffer and task-row access; subclasses begin and commit it.

    ``now``: the time its rows are written at (the backend raises it to the run's latest row on entry)."""

    __slots__ = ("c", "now", "_run", "_seq", "_rows", "policy_of")

    def __init__(self, conn: Any, now: int, policy_of: Callable[[str], str], run_id: str | None = None):
        self.c = conn
        self.now = now
        self._run = run_id
        self._seq: dict[str, int] = {}
        self._rows: list[tuple] = []
        self.policy_of = policy_of

    def emit(self, run_id: str, entity: str, entity_id: str, from_state: str | None, to_state: str,
             agent: str | None = None, reason: str | None = None, data: dict | str | None = None,
             key: str | None = None) -> int:
        """Append one transition row (buffered until ``flush``); returns its seq.
        ``data`` is a dict, or a str already encoded as JSON (hot paths)."""
        seq = self._seq.get(run_id)
        if seq is None:
            seq = self.c.execute(_MAX_SEQ, (run_id,)).fetchone()[0]
        seq += 1
        self._seq[run_id] = seq
        self._rows.append((run_id, seq, self.now, entity, entity_id,
                           from_state, to_state, agent, reason, data if isinstance(data, str) else dumps(data), key))
        return seq

    def flush(self) -> None:
        """Write the buffered transition rows (called right before COMMIT)."""
        if self._rows:
            self.c.executemany(INSERT_HISTORY, self._rows)
            self._rows.clear()

    def state(self, run_id: str, task_id: str) -> TaskState:
        row = self.c.execute(_STATE, (run_id, task_id)).fetchone()
        if row is None:
            raise NotFound(f"run {run_id!r}: no task {task_id!r}")
        return TaskState(*row)

    def update(self, run_id: str, task_id: str, returning: bool = False, **cols: Any) -> tuple | None:
        """Set columns of one task (``updated_at`` = now); with ``returning`` the new row as TASK_COLS."""
        cols["updated_at"] = self.now
        sets = ", ".join(f"{k}=?" for k in cols)
        sql = f"UPDATE tasks SET {sets} WHERE run_id=? AND id=?" + (f" RETURNING {TASK_COLS}" if returning else "")
        cur = self.c.execute(sql, (*cols.values(), run_id, task_id))
        return cur.fetchall()[0] if returning else None


class TxRun:
    """One run's storage for the state machine (``statemachine.Storage``) inside one ``SQLTx``.

    ``target``: the task the verb is about; its row is read back as it is written (``row``, as
    TASK_COLS), so the verb's result costs no extra SELECT."""

    __slots__ = ("tx", "c", "run_id", "target", "row")

    def __init__(self, tx: SQLTx, run_id: str, target: str | None = None):
        self.tx, self.c, self.run_id, self.target = tx, tx.c, run_id, target
        self.row: tuple | None = None

    def policy(self) -> str:
        return self.tx.policy_of(self.run_id)

    def state(self, tid: str) -> TaskState:
        return self.tx.state(self.run_id, tid)

    def set_task(self, tid: str, fields: dict) -> None:
        if fields.get("status") == "completed":  # its dependents lose one blocker
            self.c.execute(_UNBLOCK, (self.run_id, self.run_id, tid))
        mine = tid == self.target
        row = self.tx.update(self.run_id, tid, returning=mine, **fields)
        if mine:
            self.row = row

    def emit(self, entity: str, entity_id: str, frm: str | None, to: str, now: int, agent: str | None = None,
             reason: str | None = None, data: dict | None = None, key: str | None = None) -> int:
        return self.tx.emit(self.run_id, entity, entity_id, frm, to, agent, reason, data, key)  # written at tx.now

    def won_with(self, key: str) -> str | None:
        row = self.c.execute(_WON_WITH, (self.run_id, key)).fetchone()
        return None if row is None else row[0]

    def _pairs(self, sql: str, tid: str) -> list[tuple[str, str]]:
        return self.c.execute(sql, (self.run_id, tid)).fetchall()

    def waiting_on(self, tid: str) -> list[str]:
        return [b for (b,) in self.c.execute(_WAITING_ON, (self.run_id, tid))]

    def has_open_children(self, tid: str) -> bool:
        return self.c.execute(_OPEN_CHILD, (self.run_id, tid)).fetchone() is not None

    def first_uncompleted_child(self, tid: str) -> tuple[str, str] | None:
        return self.c.execute(_FIRST_UNCOMPLETED_CHILD, (self.run_id, tid)).fetchone()

    def open_dependents(self, tid: str) -> list[tuple[str, str]]:
        return self._pairs(_OPEN_DEPENDENTS, tid)

    def open_descendants(self, tid: str) -> list[tuple[str, str]]:
        return self._pairs(_OPEN_DESCENDANTS, tid)

    def agent_status(self, aid: str) -> str | None:
        row = self.c.execute("SELECT status FROM agents WHERE run_id=? AND id=?", (self.run_id, aid)).fetchone()
        return None if row is None else row[0]

    def put_agent(self, agent: Agent) -> None:
        self.c.execute(_PUT_AGENT, agent_row(self.run_id, agent))

    def set_agent(self, aid: str, fields: dict) -> None:
        sets = ", ".join(f"{k}=?" for k in fields)
        self.c.execute(f"UPDATE agents SET {sets} WHERE run_id=? AND id=?", (*fields.values(), self.run_id, aid))

    def run_status(self) -> str:
        row = self.c.execute("SELECT status FROM runs WHERE id=?", (self.run_id,)).fetchone()
        if row is None:
            raise NotFound(f"no run {self.run_id!r}")
        return row[0]

    def set_run(self, fields: dict) -> None:
        sets = ", ".join(f"{k}=?" for k in fields)
        self.c.execute(f"UPDATE runs SET {sets} WHERE id=?", (*fields.values(), self.run_id))
