"""PostgreSQL backend, part 3: one write transaction, its run's lock, and the database clock.

A ``Tx`` is a ``sql_storage.SQLTx`` (history buffer, task rows, the state machine's ``TxRun``):
entering sends, in one pipeline (one round trip), ``BEGIN``, the run's transaction-level advisory lock,
and then, as a statement of its own, the run's latest history row and the database's clock. Under READ
COMMITTED each statement reads a snapshot taken when it starts, so reading the latest row in the
statement AFTER the lock sees every commit of the writers before: history ``seq`` is gapless and in
commit order, one writer of a run at a time. Leaving writes the buffered rows and ``COMMIT``s in one
more pipeline. Writers of no run's history (events, usage, heartbeats) take no lock.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from coordstore import pg_wake
from coordstore.chains import raised
from coordstore.pg_conn import CLOCK_MS, PGConn, translate
from coordstore.sql_storage import SQLTx

_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"
_LAST_ROW = (f"SELECT h.seq, h.ts_ms, {CLOCK_MS} FROM (SELECT 1) one LEFT JOIN LATERAL "
             "(SELECT seq, ts_ms FROM history WHERE run_id=%s ORDER BY seq DESC LIMIT 1) h ON true")
_CLOCK = f"SELECT {CLOCK_MS}"


class Tx(SQLTx):
    """``with Tx(...) as tx``: BEGIN (+ the run's lock) ... COMMIT, ROLLBACK on any error; psycopg
    errors leave as StoreError. ``db_clock``: ``now`` (and ``given``) are the database's time."""

    __slots__ = ("given", "first", "_url", "_schema", "_db_clock")

    def __init__(self, conn: PGConn, now: int, policy_of: Callable[[str], str], url: str, schema: str,
                 run_id: str | None = None, db_clock: bool = False, first: tuple[str, tuple] | None = None):
        super().__init__(conn, now, policy_of, run_id)
        self.given = now  # the time as given (reap compares leases with it); ``now`` is raised on entry
        self._url, self._schema, self._db_clock = url, schema, db_clock
        # (sql, params) of a statement sent in the entry's pipeline, after the lock (a claim: its
        # UPDATE then runs as soon as the lock is granted, with no round trip in the lock); its rows
        self.first: tuple[str, tuple] | list | None = first

    def __enter__(self) -> "Tx":
        raw = self.c.raw
        try:
            with raw.pipeline():
                raw.execute("BEGIN")
                if self._run is not None:
                    raw.execute(_LOCK, (f"{self._schema}/{self._run}",))
                    cur = raw.execute(_LAST_ROW, (self._run,))
                elif self._db_clock:
                    cur = raw.execute(_CLOCK)
                else:
                    cur = None
                first = None if self.first is None else self.c.execute(*self.first)
            row = None if cur is None else cur.fetchone()
            if first is not None:
                self.first = first.fetchall()
        except psycopg.Error as e:
            self._rollback()
            raise translate(e, self._url) from e
        if self._db_clock:
            self.now = self.given = row[-1]
        if self._run is not None:
            self._seq[self._run] = row[0] or 0
            self.now = raised(self.now, row[1])
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            try:
                with self.c.raw.pipeline():
                    woken = pg_wake.wakes(self._rows)
                    self.flush()
                    if woken:  # delivered at COMMIT, to idle waiters of these runs (pg_wake)
                        pg_wake.notify(self.c.raw, self._schema, woken)
                    self.c.raw.execute("COMMIT")
                return False
            except psycopg.Error as e:
                exc = e
        self._rollback()
        if isinstance(exc, psycopg.Error):
            raise translate(exc, self._url) from exc
        return False

    def _rollback(self) -> None:
        raw = self.c.raw
        if not raw.closed and raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            try:
                raw.execute("ROLLBACK")
            except psycopg.Error:
                pass  # a broken connection: the server rolls the transaction back itself
