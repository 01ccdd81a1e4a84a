"""SQLite backend, part 2: one write transaction and the cascades that run inside it.

A ``Tx`` lives between ``BEGIN IMMEDIATE`` and ``COMMIT``: given the run it writes, it reads the run's
latest history row once, under the lock, and raises ``now`` to its time (``chains.raised``: history
stays in time order), then hands out history ``seq`` numbers (max + 1), buffers transition rows (written by one
``executemany`` just before COMMIT: fewer round trips while the write lock is held), and applies the task-graph
consequences of a task reaching a terminal status (dependents unblocked or cancelled, containers
completed or failed, recursively) so they commit together with the change that caused them.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from coordstore.chains import raised
from coordstore.errors import NotFound
from coordstore.models import TERMINAL
from coordstore.sqlite_schema import INSERT_HISTORY, TASK_COLS, TERMINAL_SQL, dumps, translate


class TaskState(NamedTuple):
    status: str
    attempt: int
    owner: str | None
    parent: str | None
    is_container: int
    blockers_left: int


_STATE = "SELECT status, attempt, owner, parent, is_container, blockers_left FROM tasks WHERE run_id=? AND id=?"
_MAX_SEQ = "SELECT COALESCE(MAX(seq), 0) FROM history WHERE run_id=?"
_LAST_ROW = "SELECT seq, ts_ms FROM history WHERE run_id=? ORDER BY seq DESC LIMIT 1"
_UNBLOCK = (
    "UPDATE tasks SET blockers_left = blockers_left - 1 "
    "WHERE run_id=? AND id IN (SELECT blocked FROM eff_blocks WHERE run_id=? AND blocker=?)"
)
_OPEN_DEPENDENTS = (
    "SELECT t.id, t.status FROM eff_blocks e CROSS JOIN tasks t ON t.run_id=e.run_id AND t.id=e.blocked "
    f"WHERE e.run_id=? AND e.blocker=? AND t.status NOT IN {TERMINAL_SQL} ORDER BY t.ord"
)
_OPEN_DESCENDANTS = (
    "SELECT t.id, t.status FROM ancestry a CROSS JOIN tasks t ON t.run_id=a.run_id AND t.id=a.task_id "
    f"WHERE a.run_id=? AND a.ancestor=? AND t.status NOT IN {TERMINAL_SQL} ORDER BY t.ord"
)
_CHILD_COUNTS = (
    f"SELECT COUNT(*), SUM(status NOT IN {TERMINAL_SQL}), SUM(status != 'completed') "
    "FROM tasks WHERE run_id=? AND parent=?"
)
_FIRST_UNCOMPLETED_CHILD = (
    "SELECT id, status FROM tasks WHERE run_id=? AND parent=? AND status != 'completed' ORDER BY ord LIMIT 1"
)


# CROSS JOIN keeps the few eff_blocks/ancestry rows as the outer loop (SQLite never reorders it).


class Tx:
    """One write transaction: ``with Tx(...) as tx`` runs BEGIN IMMEDIATE, and COMMIT on success
    (after writing the buffered history) or ROLLBACK on any error; sqlite3 errors leave as StoreError.
    A plain class rather than @contextmanager: this wraps every claim, and that costs less."""

    __slots__ = ("c", "now", "_run", "_seq", "_rows", "_policy_of", "_path")

    def __init__(self, conn: sqlite3.Connection, now: int, policy_of: Callable[[str], str], path: str,
                 run_id: str | None = None):
        self.c = conn
        self.now = now  # raised on entry when run_id is given: use tx.now, not the caller's now
        self._run = run_id
        self._seq: dict[str, int] = {}
        self._rows: list[tuple] = []
        self._policy_of = policy_of
        self._path = path

    def __enter__(self) -> "Tx":
        try:
            self.c.execute("BEGIN IMMEDIATE")
            if self._run is not None:
                last = self.c.execute(_LAST_ROW, (self._run,)).fetchone()
                self._seq[self._run] = last[0] if last else 0
                self.now = raised(self.now, last[1] if last else None)
        except sqlite3.Error as e:
            if self.c.in_transaction:
                self.c.execute("ROLLBACK")
            raise translate(e, self._path) from e
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            try:
                self.flush()
                self.c.execute("COMMIT")
                return False
            except sqlite3.Error as e:
                exc = e
        if self.c.in_transaction:
            self.c.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise translate(exc, self._path) from exc
        return False

    # ------------------------------------------------------------------ history
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
        """Write the buffered transition rows (called by the store right before COMMIT)."""
        if self._rows:
            self.c.executemany(INSERT_HISTORY, self._rows)
            self._rows.clear()

    # ------------------------------------------------------------------ task rows
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
        rows = self.c.execute(sql, (*cols.values(), run_id, task_id)).fetchall()
        return rows[0] if returning else None

    # ------------------------------------------------------------------ cascades
    def settle(self, run_id: str, task_id: str, status: str) -> None:
        """Apply the consequences of ``task_id`` having just become ``status`` (terminal).

        completed: its dependents lose one blocker. failed (policy ``cancel``) or cancelled: every
        open dependent is cancelled, naming the blocker that started the chain. A failed or
        cancelled container takes its open descendants with it. Then the parent container
        completes (all children completed) or fails (all terminal, not all completed), and so on up.
        """
        self._drain(run_id, deque([(task_id, status, task_id, status)]))

    def close_containers(self, run_id: str, containers: list[str]) -> None:
        """Complete or fail each open container whose children are all terminal, with its cascade."""
        queue: deque = deque()
        for c in containers:
            self._close_container(run_id, c, queue)
            self._drain(run_id, queue)

    def _drain(self, run_id: str, queue: deque) -> None:
        policy = self._policy_of(run_id)
        while queue:
            tid, st, origin, origin_st = queue.popleft()
            s = self.state(run_id, tid)
            if st == "completed":
                self.c.execute(_UNBLOCK, (run_id, run_id, tid))
            else:
                if st == "cancelled" or policy == "cancel":
                    for dep, dep_st in self.c.execute(_OPEN_DEPENDENTS, (run_id, tid)).fetchall():
                        data = {"blocker": origin} if origin == tid else {"blocker": origin, "via": tid}
                        self._cancel_one(run_id, dep, dep_st, f"blocker {origin} {origin_st}", data)
                        queue.append((dep, "cancelled", origin, origin_st))
                if s.is_container:
                    for sub, sub_st in self.c.execute(_OPEN_DESCENDANTS, (run_id, tid)).fetchall():
                        self._cancel_one(run_id, sub, sub_st, f"container {tid} {st}", {"container": tid})
                        queue.append((sub, "cancelled", tid, st))
            if s.parent is not None:
                self._close_container(run_id, s.parent, queue)

    def _cancel_one(self, run_id: str, task_id: str, from_state: str, reason: str, data: dict) -> None:
        self.update(run_id, task_id, status="cancelled", reason=reason)
        self.emit(run_id, "task", task_id, from_state, "cancelled", reason=reason, data=data)

    def _close_container(self, run_id: str, container: str, queue: deque) -> None:
        ps = self.state(run_id, container)
        if ps.status in TERMINAL:
            return
        total, open_, not_done = self.c.execute(_CHILD_COUNTS, (run_id, container)).fetchone()
        if not total or open_:
            return
        if not not_done:
            reason = "all children completed"
            self.update(run_id, container, status="completed", completed_at=self.now, reason=None)
            self.emit(run_id, "task", container, ps.status, "completed", reason=reason)
            queue.append((container, "completed", container, "completed"))
        else:
            child, child_st = self.c.execute(_FIRST_UNCOMPLETED_CHILD, (run_id, container)).fetchone()
            reason = f"children not all completed: {child} {child_st}"
            self.update(run_id, container, status="failed", reason=reason)
            self.emit(run_id, "task", container, ps.status, "failed", reason=reason, data={"child": child})
            queue.append((container, "failed", container, "failed"))

    def requeue(self, run_id: str, task_id: str, s: TaskState, reason: str, by: str | None) -> tuple:
        """Back to pending, owner cleared (kept in ``data.previous``), attempt kept; failed
        ancestor containers reopen (their failure was this child's)."""
        row = self.update(run_id, task_id, returning=True, status="pending", owner=None, assigned_by=None,
                          claimed_at=None, started_at=None, reason=reason)
        self.emit(run_id, "task", task_id, s.status, "pending", agent=by, reason=reason,
                  data={"previous": s.owner} if s.owner else None)
        parent = s.parent
        while parent is not None:
            ps = self.state(run_id, parent)
            if ps.status != "failed":
                break
            why = f"child {task_id} requeued"
            self.update(run_id, parent, status="pending", owner=None, assigned_by=None, claimed_at=None,
                        started_at=None, reason=why)
            self.emit(run_id, "task", parent, "failed", "pending", agent=by, reason=why,
                      data={"previous": ps.owner} if ps.owner else None)
            parent = ps.parent
        return row
