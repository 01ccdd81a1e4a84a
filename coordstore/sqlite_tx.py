"""SQLite backend, part 2: one write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``).

A ``Tx`` is a ``sql_storage.SQLTx`` (history buffer, task rows) that SQLite's one write lock
serializes: given the run it writes, it reads the run's latest history row once, under the lock, and
raises ``now`` to its time (``chains.raised``: history stays in time order). The state machine's
storage inside it is ``sql_storage.TxRun``, shared with PostgreSQL.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable

from coordstore.chains import raised
from coordstore.sql_storage import SQLTx
from coordstore.sqlite_schema import translate

_LAST_ROW = "SELECT seq, ts_ms FROM history WHERE run_id=? ORDER BY seq DESC LIMIT 1"


class Tx(SQLTx):
    """One write transaction: ``with Tx(...) as tx`` runs BEGIN IMMEDIATE, and COMMIT on success
    (after writing the buffered history) or ROLLBACK on any error; sqlite3 errors leave as StoreError.
    A plain class rather than @contextmanager: this wraps every claim, and that costs less."""

    __slots__ = ("_path", "given")

    def __init__(self, conn: sqlite3.Connection, now: int, policy_of: Callable[[str], str], path: str,
                 run_id: str | None = None):
        super().__init__(conn, now, policy_of, run_id)
        self.given = now  # the time as given (reap compares leases with it); ``now`` is raised on entry
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
