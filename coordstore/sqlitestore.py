"""The SQLite backend of the CoordStore (``sqlite:///abs/path.db``).

Every write runs inside ``BEGIN IMMEDIATE`` (a deferred BEGIN would fail most contended claims when
it upgrades to a writer) on an autocommit connection in WAL mode, and writes its transition rows in
the same transaction. Claims pick the best ready row from a partial index, update it with
``UPDATE ... WHERE status='pending' RETURNING``, and build the returned model after COMMIT so the
write lock is held as briefly as possible. The rules of every verb are ``statemachine``'s: this
backend stores what they decide. Schema: ``sqlite_schema`` (codecs: ``sql_rows``); the transaction:
``sqlite_tx`` (the state machine's storage in it: ``sql_storage``); shared with PostgreSQL: runs and
task verbs (``sql_verbs``), agents, events, history and snapshots (``sql_records``), the graph growing
mid-run (``sql_growth``).
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from coordstore import statemachine as sm
from coordstore.base import CoordStore, wall_clock_ms
from coordstore.errors import StoreError, StoreURLError
from coordstore.models import ClaimOrder, Run, Task
from coordstore.sql_growth import SQLGrowth
from coordstore.sql_records import SQLRecords
from coordstore.sql_verbs import SQLVerbs
from coordstore.sql_rows import RUN_COLS, loads, run_from_row, task_from_row
from coordstore.sql_claims import _CLAIM, _CLAIM_RETURNING, _CLAIM_SET, _claim_params, _claimed_rows, ready_sql
from coordstore.sql_storage import TxRun
from coordstore.sqlite_schema import BUSY_TIMEOUT_S, connect, connect_readonly, mapped, ready_index_ddl, translate
from coordstore.sqlite_tx import Tx

_LATEST_SEQ = "SELECT COALESCE(MAX(seq), 0) FROM history WHERE run_id=?"


def _path_of(url: str) -> str:
    scheme, _, rest = url.partition("://")
    if scheme != "sqlite" or not rest.startswith("/") or rest.endswith("/"):
        raise StoreURLError(f"store URL {url!r}: expected sqlite:///absolute/path/to/file.db")
    return rest


class SQLiteStore(SQLRecords, SQLGrowth, SQLVerbs, CoordStore):
    """CoordStore on one SQLite file; one connection per instance (one process, one thread)."""

    scheme = "sqlite"

    def __init__(self, url: str, clock: Callable[[], int] = wall_clock_ms, busy_timeout_s: float = BUSY_TIMEOUT_S,
                 readonly: bool = False):
        super().__init__(url, clock)
        self.path = _path_of(url)
        opener = connect_readonly if readonly else connect
        self._c: sqlite3.Connection | None = opener(self.path, busy_timeout_s)
        self._policy: dict[str, str] = {}  # run id -> on_blocker_failure (fixed at creation)
        self._tagsets: dict[str, frozenset[str]] = {}  # JSON tag list -> set, parsed once
        self._seen: dict[str, int] = {}  # run id -> its latest history seq at the last wait_for_change
        self._indexed: set[str] = {"priority"}  # claim orders whose ready index exists (priority: in the DDL)

    def close(self) -> None:
        if self._c is not None:
            self._c.close()
            self._c = None

    # ------------------------------------------------------------------ plumbing
    def _conn(self) -> sqlite3.Connection:
        if self._c is None:
            raise StoreError(f"store {self.path}: used after close()")
        return self._c

    def _write(self, now: int, run_id: str | None = None) -> Tx:
        """``with self._write(now, run_id) as tx:`` one BEGIN IMMEDIATE ... COMMIT (rolled back on
        error). With the run that gets history rows, ``tx.now`` is ``now`` raised to keep its
        history in time order: operations write ``tx.now``."""
        return Tx(self._conn(), now, self._policy_of, self.path, run_id)

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: several SELECTs see one consistent state."""
        c = self._conn()
        with mapped(self.path):
            c.execute("BEGIN")
            try:
                yield c
            finally:
                c.execute("COMMIT")

    def _all(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as e:
            raise translate(e, self.path) from e

    def _require_run(self, run_id: str) -> None:
        with mapped(self.path):
            self._policy_of(run_id)

    def _tagset(self, s: str) -> frozenset[str]:
        ts = self._tagsets.get(s)
        if ts is None:
            ts = self._tagsets[s] = frozenset(loads(s, []))
        return ts

    # ------------------------------------------------------------------ waiting
    def wait_for_change(self, run_id: str, timeout_ms: float, poll_ms: float = 20) -> bool:
        """Every ``poll_ms``: ``PRAGMA data_version`` (changes when another connection commits; read
        from the WAL index, no query of a table), and only when it moved, the run's latest history
        seq (one index seek). Heartbeats and events move the first, not the second: idle runners
        look again only when a transition was committed. The seq is also read once per call, so a
        change this instance committed itself (which data_version ignores) is seen too."""
        c = self._conn()
        end = time.monotonic() + max(0.0, timeout_ms) / 1000.0
        dv = None
        while True:
            try:
                now_dv = c.execute("PRAGMA data_version").fetchone()[0]
                if now_dv != dv:
                    dv = now_dv
                    seq = c.execute(_LATEST_SEQ, (run_id,)).fetchone()[0]
                    if seq != self._seen.get(run_id):
                        self._seen[run_id] = seq
                        return True
            except sqlite3.Error as e:
                raise translate(e, self.path) from e
            left = end - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, max(poll_ms, 1) / 1000.0))

    # ------------------------------------------------------------------ runs
    def list_runs(self) -> list[Run]:
        return [run_from_row(r) for r in self._all(f"SELECT {RUN_COLS} FROM runs ORDER BY created_at, rowid")]

    # ------------------------------------------------------------------ task reads
    def _ensure_ready_index(self, order: str, now: int) -> None:
        """Create the partial index of this claim order once (its own small transaction)."""
        if order in self._indexed:
            return
        ready_sql(order, None)  # InputError for an unknown order
        with self._write(now) as tx:
            tx.c.execute(ready_index_ddl(order))
        self._indexed.add(order)

    # ------------------------------------------------------------------ claims and assignment
    def _pick(self, c: sqlite3.Connection, run_id: str, tags: frozenset[str], order: str,
              within: str | None) -> str | None:
        """The best ready task id for these tags: first wanted-tag match in order, else first fit.
        Walks the ready index lazily and stops at the first wanted-tag match."""
        params = (run_id,) if within is None else (run_id, run_id, within)
        cur = c.execute(ready_sql(order, within), params)
        try:
            fallback = None
            for tid, needed, wanted in cur:
                if needed and not self._tagset(needed) <= tags:
                    continue
                if not wanted or self._tagset(wanted) & tags:
                    return tid
                if fallback is None:
                    fallback = tid
            return fallback
        finally:
            cur.close()

    @classmethod
    @functools.cache
    def _claim_best_sql(cls, order: str, within: bool) -> str:
        """One statement that picks and takes the best ready task (no tag filtering needed)."""
        pick = ready_sql(order, "" if within else None, "rowid") + " LIMIT 1"  # rowid: no PK descent
        return _CLAIM_SET + f"WHERE rowid=({pick})" + _CLAIM_RETURNING

    def claim_next(self, run_id: str, agent: str, agent_tags: Iterable[str] | None = None,
                   order: ClaimOrder = "priority", within: str | None = None, now: int | None = None,
                   seen: str | None = None, key: str | None = None) -> Task | None:
        now = self._now(now)
        tags = None if agent_tags is None else frozenset(agent_tags)
        self._ensure_ready_index(order, now)
        with self._write(now, run_id) as tx:
            now = tx.now
            if key is not None:
                again, took = sm.replayed(TxRun(tx, run_id), key, agent)
                if again:
                    return None if took is None else self.get_task(run_id, took)
            if within is not None:
                tx.state(run_id, within)  # NotFound for an unknown container
            if tags is None:  # the common case: pick and take in one statement
                params = _claim_params(agent, now) + ((run_id,) if within is None else (run_id, run_id, within))
                rows = tx.c.execute(self._claim_best_sql(order, within is not None), params).fetchall()
            else:
                tid = self._pick(tx.c, run_id, tags, order, within)
                rows = [] if tid is None else tx.c.execute(_CLAIM, _claim_params(agent, now) + (run_id, tid)).fetchall()
            row = rows[0] if rows else None  # TASK_COLS: id, status, attempt, ...
            if row is None:
                self._policy_of(run_id)  # NotFound for an unknown run
            sm.claim_outcome(TxRun(tx, run_id), seen, None if row is None else row[0], agent, now)
            if row is None:
                return None
            for entity, frm, to, data in _claimed_rows(agent, row[2]):
                tx.emit(run_id, entity, row[0], frm, to, agent, None, data, key if entity == "claim" else None)
        return task_from_row(row)
