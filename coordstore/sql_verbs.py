"""The verbs the SQL backends (SQLite, PostgreSQL) share word for word, as a mixin of their stores:
runs, graph import, task reads, and the task verbs that hand the state machine (``statemachine``) a
``sql_storage.TxRun`` inside the backend's transaction. The host provides ``_write(now, run_id)``
(a ``SQLTx`` context), ``_conn``, ``_policy`` (a dict), ``_all``, ``_now`` and ``_require_run``; ``claim_next`` is each
backend's own, being where they differ.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from coordstore import statemachine as sm
from coordstore.errors import InvalidTransition, NotFound
from coordstore.graph import GraphIndex, tags_fit, tail_lengths, validate, wanted_score
from coordstore.models import TERMINAL, ClaimOrder, Dependency, Run, Task, TaskGraph
from coordstore.sql_claims import ready_sql
from coordstore.sql_rows import (INSERT_DEF, INSERT_TASK, RUN_COLS, TASK_COLS, TASK_SELECT, loads, run_from_row, run_row,
                                 task_from_row, task_rows)
from coordstore.sql_storage import SQLTx, TxRun


class SQLVerbs:
    """Runs, graph import, task reads and task verbs of a SQL store (mixin; see module docstring)."""

    # ------------------------------------------------------------------ plumbing
    def _policy_of(self, run_id: str) -> str:
        """The run's on_blocker_failure; NotFound for an unknown run (doubles as the existence check)."""
        p = self._policy.get(run_id)
        if p is None:
            row = self._conn().execute("SELECT on_blocker_failure FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None:
                raise NotFound(f"no run {run_id!r}")
            p = self._policy[run_id] = row[0]
        return p

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
        with self._write(self._now(now)) as tx:
            r = run.model_copy(update={"status": "running",
                                       "created_at": run.created_at if run.created_at is not None else tx.now})
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

    def finish_run(self, run_id: str, status: str, reason: str | None = None, now: int | None = None) -> Run:
        self._verb(run_id, now, sm.finish_run, status, reason)
        return self.get_run(run_id)

    def reopen_run(self, run_id: str, reason: str | None = None, now: int | None = None) -> Run:
        self._verb(run_id, now, sm.reopen_run, reason)
        return self.get_run(run_id)

    # ------------------------------------------------------------------ graph import
    def _insert_graph(self, tx: SQLTx, run_id: str, ix: GraphIndex, tasks: list[Task], deps: list[Dependency],
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
            if not statuses:
                return []  # no status asked: nothing (and no "IN ()", which PostgreSQL refuses)
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
        if not statuses:
            return 0
        sql = f"SELECT COUNT(*) FROM tasks WHERE run_id=? AND status IN ({','.join('?' * len(statuses))})"
        return self._all(sql, (run_id, *statuses))[0][0]

    def dependencies(self, run_id: str) -> list[Dependency]:
        self._require_run(run_id)
        rows = self._all("SELECT from_id, to_id, type FROM deps WHERE run_id=? ORDER BY ord", (run_id,))
        return [Dependency(from_id=a, to_id=b, type=t) for a, b, t in rows]

    def ready_tasks(self, run_id: str, agent_tags: Iterable[str] | None = None, order: ClaimOrder = "priority") -> list[Task]:
        self._require_run(run_id)
        tags = None if agent_tags is None else frozenset(agent_tags)
        tasks = [task_from_row(r) for r in self._all(ready_sql(order, None, TASK_COLS), (run_id,))]
        fit = [t for t in tasks if tags_fit(t, tags)]
        return sorted(fit, key=lambda t: -wanted_score(t, tags))  # stable: keeps the order within each score

    def best_ready(self, run_id: str, agent_tags: Iterable[str] | None = None, order: ClaimOrder = "priority") -> str | None:
        # the claim's own pick on bare id/tag rows: no Task built for every ready task
        self._require_run(run_id)
        if agent_tags is None:
            rows = self._all(ready_sql(order, None, "id") + " LIMIT 1", (run_id,))
            return rows[0][0] if rows else None
        tags, fallback = frozenset(agent_tags), None
        for tid, needed, wanted in self._all(ready_sql(order, None), (run_id,)):
            if needed and not frozenset(loads(needed, [])) <= tags:
                continue
            if not wanted or frozenset(loads(wanted, [])) & tags:
                return tid
            if fallback is None:
                fallback = tid
        return fallback

    # ------------------------------------------------------------------ claims and assignment
    def claim(self, run_id: str, task_id: str, agent: str, now: int | None = None,
              key: str | None = None) -> Task | None:
        st, tid = self._verb(run_id, now, sm.claim, task_id, agent, key, target=task_id)
        if tid is None:
            return None
        return task_from_row(st.row) if st.row is not None else self.get_task(run_id, tid)  # None: a replay

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
        with self._write(self._now(None)) as tx:
            cur = tx.c.execute(
                "UPDATE tasks SET tokens_in=tokens_in+?, tokens_out=tokens_out+?, tokens_cached=tokens_cached+?, "
                "tokens_thinking=tokens_thinking+?, tokens_image=tokens_image+?, tokens_audio=tokens_audio+?, "
                "metric_6=metric_6+?, metric_7=metric_7+?, cost_usd=cost_usd+? WHERE run_id=? AND id=?",
                (*slots, cost_usd, run_id, task_id))
            if cur.rowcount == 0:
                raise NotFound(f"run {run_id!r}: no task {task_id!r}")
