"""The PostgreSQL backend of the CoordStore (``postgresql://[user@]host[:port]/db[?schema=NAME]``).

Many runs, many processes and many hosts share one schema. Every write is one transaction that takes
its run's lock first (``pg_tx``), so history ``seq`` stays gapless in commit order; the rules of every
verb are ``statemachine``'s, given ``sql_storage.TxRun`` as storage, with the SQL shared with SQLite
(``sql_verbs``, ``sql_records``, ``sql_growth``, ``sql_claims``) run through ``pg_conn``'s adapter.
A claim by the best ready task is one statement, ``UPDATE tasks ... WHERE (run_id, id) = (SELECT ...
FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING ...``, readiness, tags and ``within`` inside.

Clock: without an injected clock (None, or the wall clock ``coordstore.clock.WALL``), every stamp is the
database server's time, read inside the transaction (``database_clock``), and ``now`` arguments are
ignored: hosts with skewed clocks share one time. Claims carry an idempotency key: a claim whose
connection is lost (its response with it) reconnects and is retried once with the same key, which
returns the task the first attempt took if it committed (``statemachine.replayed``).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import psycopg
from psycopg.types.json import Jsonb

from coordstore import pg_claims, pg_wake
from coordstore import statemachine as sm
from coordstore.base import CoordStore
from coordstore.clock import WALL, wall_clock_ms
from coordstore.errors import StoreError
from coordstore.models import ClaimOrder, Run, Task
from coordstore.pg_conn import CLOCK_MS, PGConn, connect, parse_url, translate, where
from coordstore.pg_schema import check_readonly, ensure, ensure_ready_index
from coordstore.pg_tx import Tx
from coordstore.sql_claims import _CLAIM_RETURNING, _CLAIM_SET, _claimed_rows, ready_sql
from coordstore.sql_growth import SQLGrowth
from coordstore.sql_records import SQLRecords
from coordstore.sql_rows import RUN_COLS, run_from_row, task_from_row
from coordstore.sql_storage import TxRun
from coordstore.sql_verbs import SQLVerbs

# The claim's UPDATE runs in the transaction's first pipeline (pg_tx), before Python has the run's
# latest row: it writes its time as ``chains.raised`` does, the given time (or the database's) raised
# to the latest row's, and returns it (the rows of the claim are written at that time too).
_NOW = object()
_TIMED = [k for k, v in sm.taken("", "", 0, _NOW).items() if v is _NOW]  # claimed_at, updated_at
_RAISED = ("WITH clk AS (SELECT GREATEST({now}, COALESCE((SELECT ts_ms FROM history WHERE run_id=? "
           "ORDER BY seq DESC LIMIT 1), 0)) AS now) ")
_CLAIM_NOW = _CLAIM_SET.replace("UPDATE tasks SET ", "UPDATE tasks SET " + "".join(f"{k}=clk.now, " for k in _TIMED))
for _k in _TIMED:  # the placeholders the time took
    _CLAIM_NOW = _CLAIM_NOW.replace(f", {_k}=?", "").replace(f"{_k}=?, ", "")
# tags inside the claim: needed all held (JSON array contained in the agent's), a wanted one held first
_NEEDED = " AND (needed IS NULL OR needed::jsonb <@ ?::jsonb)"
_WANTED_FIRST = "CASE WHEN wanted IS NULL OR jsonb_exists_any(wanted::jsonb, ?::text[]) THEN 0 ELSE 1 END, "


def _claim_params_untimed(agent: str) -> tuple:
    """``sql_claims._claim_params`` without the times (the claim statement writes its own, ``_TIMED``)."""
    fields = sm.taken(agent, agent, 0, _NOW)
    return tuple(v for k, v in fields.items() if k != "attempt" and k not in _TIMED)


def _is_wall(clock: Callable[[], int] | None) -> bool:
    return clock is None or clock is WALL or clock is wall_clock_ms or getattr(clock, "_read", None) is wall_clock_ms


class PGStore(SQLRecords, SQLGrowth, SQLVerbs, CoordStore):
    """CoordStore on one PostgreSQL schema; one connection per instance (one process, one thread)."""

    scheme = "postgresql"

    def __init__(self, url: str, clock: Callable[[], int] | None = None, readonly: bool = False):
        self.database_clock = _is_wall(clock)
        super().__init__(url, self._db_now if self.database_clock else clock)
        self._conninfo, self.schema = parse_url(url)
        self.readonly = readonly
        self._policy: dict[str, str] = {}
        self._c: PGConn | None = None
        self._claim_fns: dict = {}  # this session's claim functions (pg_claims.function)
        self._indexed: set[str] = set()  # claim orders whose ready index this session saw
        self._open()

    def _open(self) -> None:
        c = connect(self._conninfo, self.schema, self.url, self.readonly)
        try:
            (check_readonly if self.readonly else ensure)(c, self.schema, self.url)
        except BaseException:
            c.raw.close()
            raise
        self._c = c
        self._claim_fns = {}  # a new session has none

    def close(self) -> None:
        if self._c is not None:
            pg_wake.forget(self._c.raw)
            self._c.raw.close()
            self._c = None

    # ------------------------------------------------------------------ plumbing
    def _conn(self) -> PGConn:
        if self._c is None:
            raise StoreError(f"store {where(self.url)}: used after close()")
        if self._c.raw.broken or self._c.raw.closed:
            # the session was lost (server restart, network blip): the call that saw it failed; the
            # next one gets a new session, so a runner or worker rides out a short outage
            self._reconnect()
        return self._c

    def _reconnect(self) -> None:
        """A new session in place of the current one; while the server stays unreachable this raises
        and the old (broken) session stays, so the next call tries again instead of 'used after close'."""
        lost = self._c
        self._open()
        pg_wake.forget(lost.raw)
        lost.raw.close()

    def wait_for_change(self, run_id: str, timeout_ms: float, poll_ms: float = 20) -> bool:
        """LISTEN on the run's channel, sleep until a NOTIFY or the timeout (``pg_wake``)."""
        return pg_wake.wait(self._conn().raw, self.schema, run_id, timeout_ms, self.url)

    def _db_now(self) -> int:
        return self._all(f"SELECT {CLOCK_MS}")[0][0]

    def _now(self, now: int | None) -> int:
        """With the database clock the transaction reads the time itself (``pg_tx``): 0 is a placeholder."""
        if self.database_clock:
            return 0
        return self.clock() if now is None else now

    def _write(self, now: int, run_id: str | None = None) -> Tx:
        return Tx(self._conn(), now, self._policy_of, self.url, self.schema, run_id, self.database_clock)

    @contextmanager
    def _snapshot(self) -> Iterator[PGConn]:
        """A read transaction: several SELECTs see one consistent state."""
        c = self._conn()
        try:
            c.raw.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                yield c
            finally:
                if not c.raw.closed:
                    c.raw.execute("COMMIT")
        except psycopg.Error as e:
            raise translate(e, self.url) from e

    def _all(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except psycopg.Error as e:
            raise translate(e, self.url) from e

    def _require_run(self, run_id: str) -> None:
        try:
            self._policy_of(run_id)
        except psycopg.Error as e:
            raise translate(e, self.url) from e

    # ------------------------------------------------------------------ runs
    def list_runs(self) -> list[Run]:
        return [run_from_row(r) for r in self._all(f"SELECT {RUN_COLS} FROM runs ORDER BY created_at, id")]

    # ------------------------------------------------------------------ claims
    @staticmethod
    @functools.cache
    def _claim_sql(order: str, within: bool, tags: bool, db_clock: bool) -> str:
        pick = ready_sql(order, "" if within else None, "run_id, id")
        if tags:
            where_, order_by = pick.split(" ORDER BY ")
            pick = f"{where_}{_NEEDED} ORDER BY {_WANTED_FIRST}{order_by}"
        return (_RAISED.format(now=CLOCK_MS if db_clock else "?::bigint") + _CLAIM_NOW
                + f"FROM clk WHERE (run_id, id) = ({pick} LIMIT 1 FOR UPDATE SKIP LOCKED)" + _CLAIM_RETURNING + ", clk.now")

    def claim_next(self, run_id: str, agent: str, agent_tags: Iterable[str] | None = None,
                   order: ClaimOrder = "priority", within: str | None = None, now: int | None = None,
                   seen: str | None = None, key: str | None = None) -> Task | None:
        return self._retried(key, lambda k, look: self._claim_next(run_id, agent, agent_tags, order, within, now,
                                                                   seen, k, look))

    def claim(self, run_id: str, task_id: str, agent: str, now: int | None = None,
              key: str | None = None) -> Task | None:
        return self._retried(key, lambda k, _: super(PGStore, self).claim(run_id, task_id, agent, now, k))

    def _retried(self, key: str | None, attempt: Callable[[str, bool], Task | None]) -> Task | None:
        """One claim; if the connection is lost on the way (perhaps after COMMIT, with the response),
        reconnect and retry once with the same idempotency key (made here when none is given: then
        the first attempt need not look for it, no claim can have it yet)."""
        fresh = key is None
        key = f"claim:{uuid.uuid4().hex}" if fresh else key
        try:
            return attempt(key, not fresh)
        except StoreError as e:
            if not isinstance(e.__cause__, psycopg.OperationalError) or self._c is None:
                raise
            self._reconnect()
            return attempt(key, True)

    def _claim_one(self, run_id: str, agent: str, tags: list[str] | None, order: str, within: str | None,
                   now: int | None, seen: str | None, key: str) -> tuple[bool, tuple] | None:
        """The whole claim as one CALL of this session's claim procedure (``pg_claims``): the run's
        lock, the claim with its history rows in one statement, COMMIT, then the task's definition
        (outside the lock), in one round trip."""
        c = self._conn()
        try:
            fn = pg_claims.function(c.raw, self._claim_fns, agent, order, within is not None, tags is not None,
                                    seen is not None, self.database_clock)
            if fn is None:
                return None
            args = pg_claims.call_args(f"{self.schema}/{run_id}", run_id, key, seen, within,
                                       None if self.database_clock else self._now(now), tags)
            ok, *row = c.raw.execute(f"CALL pg_temp.{fn}({pg_claims.CALL_ARGS})", args).fetchone()
        except psycopg.Error as e:
            raise translate(e, self.url) from e
        return ok, tuple(row)

    def _claim_next(self, run_id: str, agent: str, agent_tags: Iterable[str] | None, order: str,
                    within: str | None, now: int | None, seen: str | None, key: str, look: bool) -> Task | None:
        tags = None if agent_tags is None else sorted(set(agent_tags))
        if order not in self._indexed:
            ready_sql(order, None)  # InputError for an unknown order
            ensure_ready_index(self._conn(), self.schema, self.url, order)
            self._indexed.add(order)
        if not look:
            self._policy_of(run_id)  # NotFound for an unknown run (cached: no query after the first)
            got = self._claim_one(run_id, agent, tags, order, within, now, seen, key)
            if got is not None:
                ok, row = got
                if ok:
                    return None if row[0] is None else task_from_row(row)
            # None: this agent's name takes the general path; not ok: an unknown ``seen`` or
            # ``within``, nothing was written, the general path raises NotFound
        if look or within is not None:  # a replay, or an unknown container (NotFound), is found first
            with self._write(self._now(now), run_id) as tx:
                again, took = sm.replayed(TxRun(tx, run_id), key, agent) if look else (False, None)
                if within is not None:
                    tx.state(run_id, within)
            if again:
                return None if took is None else self.get_task(run_id, took)
        sql = self._claim_sql(order, within is not None, tags is not None, self.database_clock)
        params = ((run_id,) if self.database_clock else (self._now(now), run_id)) + _claim_params_untimed(agent)
        params += (run_id,) + ((run_id, within) if within is not None else ()) + ((Jsonb(tags), tags) if tags is not None else ())
        with Tx(self._conn(), self._now(now), self._policy_of, self.url, self.schema, run_id, self.database_clock,
                first=(sql, params)) as tx:
            row = tx.first[0] if tx.first else None  # TASK_COLS: id, status, attempt, ..., then its time
            if row is None:
                self._policy_of(run_id)  # NotFound for an unknown run
            else:
                tx.now, row = row[-1], row[:-1]
            now = tx.now
            st = TxRun(tx, run_id)
            sm.claim_outcome(st, seen, None if row is None else row[0], agent, now)
            if row is None:
                return None
            for entity, frm, to, data in _claimed_rows(agent, row[2]):
                tx.emit(run_id, entity, row[0], frm, to, agent, None, data, key if entity == "claim" else None)
        return task_from_row(row)
