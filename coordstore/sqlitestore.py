"""The SQLite backend of the CoordStore (``sqlite:///abs/path.db``).

Every write runs inside ``BEGIN IMMEDIATE`` (a deferred BEGIN would fail most contended claims when
it upgrades to a writer) on an autocommit connection in WAL mode, and writes its transition rows in
the same transaction. Claims pick the best ready row from a partial index, update it with
``UPDATE ... WHERE status='pending' RETURNING``, and build the returned model after COMMIT so the
write lock is held as briefly as possible. The rules of every verb are ``statemachine``'s: this
backend stores what they decide. Schema and codecs: ``sqlite_schema``; the transaction and the
state machine's storage in it: ``sqlite_tx``; agents, events, history and snapshots: ``sqlite_records``;
the graph growing mid-run: ``sqlite_growth``.
"""

from __future__ import annotations

import functools
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from coordstore import statemachine as sm
from coordstore.base import CoordStore, wall_clock_ms
from coordstore.errors import InputError, InvalidTransition, NotFound, StoreError, StoreURLError
from coordstore.graph import GraphIndex, tail_lengths, tags_fit, validate, wanted_score
from coordstore.models import TERMINAL, ClaimOrder, Dependency, Run, Task, TaskGraph
from coordstore.sqlite_growth import SQLiteGrowth
from coordstore.sqlite_records import SQLiteRecords
from coordstore.sqlite_schema import (
    BUSY_TIMEOUT_S, INSERT_DEF, INSERT_TASK, READY_ORDERS, READY_WHERE, RUN_COLS, TASK_COLS, TASK_SELECT,
    connect, connect_readonly, dumps, loads, mapped, ready_index_ddl, run_from_row, run_row, task_from_row,
    task_rows, translate,
)
from coordstore.sqlite_tx import Tx, TxRun

# A claim's one UPDATE sets the fields of a taken task (statemachine.taken), the attempt one up.
_TAKEN = [k for k in sm.taken("", "", 0, 0) if k != "attempt"]
_CLAIM_SET = "UPDATE tasks SET " + ", ".join(f"{k}=?" for k in _TAKEN) + ", attempt=attempt+1 "
_CLAIM_RETURNING = f" AND status='pending' RETURNING {TASK_COLS}"
_CLAIM = _CLAIM_SET + "WHERE run_id=? AND id=?" + _CLAIM_RETURNING
_WITHIN = " AND id IN (SELECT task_id FROM ancestry WHERE run_id=? AND ancestor=?)"


@functools.lru_cache(maxsize=1024)
def _claimed_rows(agent: str, attempt: int) -> tuple:
    """A won claim's rows (``statemachine.claimed_rows``), their data encoded once per agent and
    attempt: claims repeat the same few, and encoding them is a good part of a claim's time in the lock."""
    return tuple((entity, frm, to, dumps(data)) for entity, frm, to, data in sm.claimed_rows(agent, attempt))


def _claim_params(agent: str, now: int) -> tuple:
    """The values of ``_CLAIM_SET``'s placeholders: a claim is taken by the agent itself."""
    fields = sm.taken(agent, agent, 0, now)
    del fields["attempt"]
    return (*fields.values(),)


def _path_of(url: str) -> str:
    scheme, _, rest = url.partition("://")
    if scheme != "sqlite" or not rest.startswith("/") or rest.endswith("/"):
        raise StoreURLError(f"store URL {url!r}: expected sqlite:///absolute/path/to/file.db")
    return rest


class SQLiteStore(SQLiteRecords, SQLiteGrowth, CoordStore):
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

    def _policy_of(self, run_id: str) -> str:
        """The run's on_blocker_failure; NotFound for an unknown run (doubles as the existence check)."""
        p = self._policy.get(run_id)
        if p is None:
            row = self._conn().execute("SELECT on_blocker_failure FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None:
                raise NotFound(f"no run {run_id!r}")
            p = self._policy[run_id] = row[0]
        return p

    def _require_run(self, run_id: str) -> None:
        with mapped(self.path):
            self._policy_of(run_id)

    def _tagset(self, s: str) -> frozenset[str]:
        ts = self._tagsets.get(s)
        if ts is None:
            ts = self._tagsets[s] = frozenset(loads(s, []))
        return ts

    def _verb(self, run_id: str, now: int | None, verb: Callable, *args, target: str | None = None) -> tuple:
        """One verb of the state machine in one transaction: ``verb(storage, *args, now)``, ``now``
        raised. Returns (the storage, whose ``row`` is ``target``'s as the verb left it, the result)."""
        with self._write(self._now(now), run_id) as tx:
            st = TxRun(tx, run_id, target)
            result = verb(st, *args, tx.now)
        return st, result

    def _task_verb(self, run_id: str, now: int | None, verb: Callable, task_id: str, *args) -> Task:
        return task_from_row(self._verb(run_id, now, verb, task_id, *args, target=task_id)[0].row)

    # ------------------------------------------------------------------ runs
    def create_run(self, run: Run, now: int | None = None) -> Run:
        now = self._now(now)
        r = run.model_copy(update={"status": "running", "created_at": run.created_at if run.created_at is not None else now})
        with self._write(now) as tx:
            if tx.c.execute("SELECT 1 FROM runs WHERE id=?", (r.id,)).fetchone():
                raise InvalidTransition(f"run {r.id!r} already exists")
            tx.c.execute(f"INSERT INTO runs ({RUN_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)", run_row(r))
            tx.emit(r.id, "run", r.id, None, "running")
        return r

    def get_run(self, run_id: str) -> Run:
        rows = self._all(f"SELECT {RUN_COLS} FROM runs WHERE id=?", (run_id,))
        if not rows:
            raise NotFound(f"no run {run_id!r}")
        return run_from_row(rows[0])

    def list_runs(self) -> list[Run]:
        return [run_from_row(r) for r in self._all(f"SELECT {RUN_COLS} FROM runs ORDER BY created_at, rowid")]

    def finish_run(self, run_id: str, status: str, reason: str | None = None, now: int | None = None) -> Run:
        self._verb(run_id, now, sm.finish_run, status, reason)
        return self.get_run(run_id)

    def reopen_run(self, run_id: str, reason: str | None = None, now: int | None = None) -> Run:
        self._verb(run_id, now, sm.reopen_run, reason)
        return self.get_run(run_id)

    # ------------------------------------------------------------------ graph import
    def _insert_graph(self, tx: Tx, run_id: str, ix: GraphIndex, tasks: list[Task], deps: list[Dependency],
                      fill_now: int | None) -> None:
        """Insert tasks/deps with everything claims need precomputed (one transaction, caller's)."""
        c = tx.c
        taken = {r[0] for r in c.execute("SELECT id FROM tasks WHERE run_id=?", (run_id,))} & set(ix.tasks)
        if taken:
            raise InvalidTransition(f"run {run_id!r}: task id(s) already exist: {', '.join(sorted(taken)[:5])}")
        tails = tail_lengths(ix)
        pairs = ix.effective_blocker_pairs()
        status = {t.id: t.status for t in tasks}
        left = Counter(blocked for blocker, blocked in pairs if status[blocker] != "completed")
        ord0 = c.execute("SELECT COALESCE(MAX(ord), -1) + 1 FROM tasks WHERE run_id=?", (run_id,)).fetchone()[0]
        dep0 = c.execute("SELECT COALESCE(MAX(ord), -1) + 1 FROM deps WHERE run_id=?", (run_id,)).fetchone()[0]
        rows = [task_rows(run_id, t, ord0 + i, tails.get(t.id, 0.0), ix.is_container(t.id), ix.parent.get(t.id),
                          left[t.id], fill_now) for i, t in enumerate(tasks)]
        c.executemany(INSERT_TASK, (hot for hot, _ in rows))
        c.executemany(INSERT_DEF, (defn for _, defn in rows))
        c.executemany("INSERT INTO deps (run_id, ord, from_id, to_id, type) VALUES (?,?,?,?,?)",
                      ((run_id, dep0 + i, d.from_id, d.to_id, d.type) for i, d in enumerate(deps)))
        c.executemany("INSERT INTO eff_blocks (run_id, blocker, blocked) VALUES (?,?,?)",
                      ((run_id, b, t) for b, t in pairs))
        c.executemany("INSERT INTO ancestry (run_id, ancestor, task_id) VALUES (?,?,?)",
                      ((run_id, a, t) for t in ix.order for a in ix.ancestors(t)))

    def add_graph(self, run_id: str, graph: TaskGraph, now: int | None = None) -> None:
        now = self._now(now)
        ix = validate(graph)  # GraphError before anything is written
        with self._write(now, run_id) as tx:
            self._policy_of(run_id)
            self._insert_graph(tx, run_id, ix, graph.tasks, graph.dependencies, tx.now)
            for t in graph.tasks:
                tx.emit(run_id, "task", t.id, None, t.status, reason="import")
            # containers whose imported children are already all terminal close now, not never
            done_parents = {ix.parent[t.id] for t in graph.tasks if t.status in TERMINAL and t.id in ix.parent}
            sm.close_containers(TxRun(tx, run_id), [t for t in ix.order if t in done_parents], tx.now)

    # ------------------------------------------------------------------ task reads
    def get_task(self, run_id: str, task_id: str) -> Task:
        rows = self._all(f"{TASK_SELECT} WHERE t.run_id=? AND t.id=?", (run_id, task_id))
        if not rows:
            self._require_run(run_id)
            raise NotFound(f"run {run_id!r}: no task {task_id!r}")
        return task_from_row(rows[0])

    def list_tasks(self, run_id: str, status: str | Iterable[str] | None = None, owner: str | None = None,
                   parent: str | None = None) -> list[Task]:
        self._require_run(run_id)
        where, params = ["t.run_id=?"], [run_id]
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            where.append(f"t.status IN ({','.join('?' * len(statuses))})")
            params += statuses
        for col, val in (("owner", owner), ("parent", parent)):
            if val is not None:
                where.append(f"t.{col}=?")
                params.append(val)
        sql = f"{TASK_SELECT} WHERE {' AND '.join(where)} ORDER BY t.ord"
        return [task_from_row(r) for r in self._all(sql, tuple(params))]

    def count_tasks(self, run_id: str, status: str | Iterable[str] | None = None) -> int:
        self._require_run(run_id)
        if status is None:
            return self._all("SELECT COUNT(*) FROM tasks WHERE run_id=?", (run_id,))[0][0]
        statuses = [status] if isinstance(status, str) else list(status)
        sql = f"SELECT COUNT(*) FROM tasks WHERE run_id=? AND status IN ({','.join('?' * len(statuses))})"
        return self._all(sql, (run_id, *statuses))[0][0]

    def dependencies(self, run_id: str) -> list[Dependency]:
        self._require_run(run_id)
        rows = self._all("SELECT from_id, to_id, type FROM deps WHERE run_id=? ORDER BY ord", (run_id,))
        return [Dependency(from_id=a, to_id=b, type=t) for a, b, t in rows]

    @staticmethod
    def _ready_sql(order: str, within: str | None, cols: str = "id, needed, wanted") -> str:
        if order not in READY_ORDERS:
            raise InputError(f"claim order {order!r}: one of {', '.join(READY_ORDERS)}")
        return (f"SELECT {cols} FROM tasks WHERE run_id=? AND {READY_WHERE}"
                f"{_WITHIN if within is not None else ''} ORDER BY {READY_ORDERS[order][0]}")

    def _ensure_ready_index(self, order: str, now: int) -> None:
        """Create the partial index of this claim order once (its own small transaction)."""
        if order in self._indexed:
            return
        self._ready_sql(order, None)  # InputError for an unknown order
        with self._write(now) as tx:
            tx.c.execute(ready_index_ddl(order))
        self._indexed.add(order)

    def ready_tasks(self, run_id: str, agent_tags: Iterable[str] | None = None, order: ClaimOrder = "priority") -> list[Task]:
        self._require_run(run_id)
        tags = None if agent_tags is None else frozenset(agent_tags)
        tasks = [task_from_row(r) for r in self._all(self._ready_sql(order, None, TASK_COLS), (run_id,))]
        fit = [t for t in tasks if tags_fit(t, tags)]
        return sorted(fit, key=lambda t: -wanted_score(t, tags))  # stable: keeps the order within each score

    def best_ready(self, run_id: str, agent_tags: Iterable[str] | None = None, order: ClaimOrder = "priority") -> str | None:
        # the claim's own pick, stopping at the first fit: not every ready task read and built
        self._require_run(run_id)
        if agent_tags is None:
            rows = self._all(self._ready_sql(order, None, "id") + " LIMIT 1", (run_id,))
            return rows[0][0] if rows else None
        with mapped(self.path):
            return self._pick(self._conn(), run_id, frozenset(agent_tags), order, None)

    # ------------------------------------------------------------------ claims and assignment
    def _pick(self, c: sqlite3.Connection, run_id: str, tags: frozenset[str], order: str,
              within: str | None) -> str | None:
        """The best ready task id for these tags: first wanted-tag match in order, else first fit.
        Walks the ready index lazily and stops at the first wanted-tag match."""
        params = (run_id,) if within is None else (run_id, run_id, within)
        cur = c.execute(self._ready_sql(order, within), params)
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
        pick = cls._ready_sql(order, "" if within else None, "rowid") + " LIMIT 1"  # rowid: no PK descent
        return _CLAIM_SET + f"WHERE rowid=({pick})" + _CLAIM_RETURNING

    def claim_next(self, run_id: str, agent: str, agent_tags: Iterable[str] | None = None,
                   order: ClaimOrder = "priority", within: str | None = None, now: int | None = None,
                   seen: str | None = None) -> Task | None:
        now = self._now(now)
        tags = None if agent_tags is None else frozenset(agent_tags)
        self._ensure_ready_index(order, now)
        with self._write(now, run_id) as tx:
            now = tx.now
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
                tx.emit(run_id, entity, row[0], frm, to, agent, None, data)
        return task_from_row(row)

    def claim(self, run_id: str, task_id: str, agent: str, now: int | None = None) -> Task | None:
        st, won = self._verb(run_id, now, sm.claim, task_id, agent, target=task_id)
        return task_from_row(st.row) if won else None

    def assign(self, run_id: str, task_id: str, agent: str, by: str, now: int | None = None) -> Task:
        return self._task_verb(run_id, now, sm.assign, task_id, agent, by)

    # ------------------------------------------------------------------ task lifecycle
    def start(self, run_id: str, task_id: str, agent: str, attempt: int, now: int | None = None) -> Task:
        return self._task_verb(run_id, now, sm.start, task_id, agent, attempt)

    def complete(self, run_id: str, task_id: str, agent: str, attempt: int, data: dict | None = None,
                 now: int | None = None) -> Task:
        return self._task_verb(run_id, now, sm.complete, task_id, agent, attempt, data)

    def fail(self, run_id: str, task_id: str, agent: str | None, attempt: int | None, reason: str,
             now: int | None = None) -> Task:
        return self._task_verb(run_id, now, sm.fail, task_id, agent, attempt, reason)

    def requeue(self, run_id: str, task_id: str, reason: str, by: str | None = None, now: int | None = None) -> Task:
        return self._task_verb(run_id, now, sm.requeue, task_id, reason, by)

    def cancel(self, run_id: str, task_id: str, reason: str, by: str | None = None, now: int | None = None) -> Task:
        return self._task_verb(run_id, now, sm.cancel, task_id, reason, by)

    def add_usage(self, run_id: str, task_id: str, tokens_in: int = 0, tokens_out: int = 0, tokens_cached: int = 0,
                  tokens_thinking: int = 0, cost_usd: float = 0.0, *, tokens_image: int = 0, tokens_audio: int = 0,
                  metric_6: int = 0, metric_7: int = 0) -> None:
        slots = (tokens_in, tokens_out, tokens_cached, tokens_thinking, tokens_image, tokens_audio, metric_6, metric_7)
        with self._write(self.clock()) as tx:
            cur = tx.c.execute(
                "UPDATE tasks SET tokens_in=tokens_in+?, tokens_out=tokens_out+?, tokens_cached=tokens_cached+?, "
                "tokens_thinking=tokens_thinking+?, tokens_image=tokens_image+?, tokens_audio=tokens_audio+?, "
                "metric_6=metric_6+?, metric_7=metric_7+?, cost_usd=cost_usd+? WHERE run_id=? AND id=?",
                (*slots, cost_usd, run_id, task_id))
            if cur.rowcount == 0:
                raise NotFound(f"run {run_id!r}: no task {task_id!r}")
