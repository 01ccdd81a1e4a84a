"""The SQL backends (SQLite, PostgreSQL): the graph growing mid-run (``add_tasks``, ``link``, ``unlink``)
as a mixin of their stores (which provide ``_write`` and ``_policy_of``).

The rules are ``growth.py``'s. What claims read precomputed (``eff_blocks``, ``ancestry``, and per task
``parent``, ``is_container``, ``blockers_left``, ``cp_rank``) is derived again from the grown graph in
the same transaction, so the partial ready indexes hold exactly the ready rows at COMMIT.
"""

from __future__ import annotations

from collections.abc import Iterable

from coordstore import growth
from coordstore.graph import GraphIndex, tail_lengths
from coordstore.models import Dependency, Task
from coordstore.sql_rows import INSERT_DEF, INSERT_TASK, TASK_SELECT, task_from_row, task_rows
from coordstore.sql_storage import SQLTx as Tx, TxRun

_DERIVED = "UPDATE tasks SET parent=?, is_container=?, blockers_left=?, cp_rank=? WHERE run_id=? AND id=?"


def _graph(tx: Tx, run_id: str) -> tuple[list[Task], list[int], list[Dependency], dict[str, str]]:
    """(tasks in template order, the edges' ords, the edges, statuses) as the transaction sees them."""
    tasks = [task_from_row(r) for r in tx.c.execute(f"{TASK_SELECT} WHERE t.run_id=? ORDER BY t.ord", (run_id,))]
    rows = tx.c.execute("SELECT ord, from_id, to_id, type FROM deps WHERE run_id=? ORDER BY ord", (run_id,)).fetchall()
    deps = [Dependency(from_id=a, to_id=b, type=k) for _, a, b, k in rows]
    return tasks, [r[0] for r in rows], deps, {t.id: t.status for t in tasks}


def _rederive(tx: Tx, run_id: str, ix: GraphIndex, status: dict[str, str]) -> None:
    """Store again everything readiness and claims derive from the graph (``sqlite_schema``'s layout, PostgreSQL's too)."""
    c = tx.c
    pairs = ix.effective_blocker_pairs()
    left = {t: 0 for t in ix.order}
    for blocker, blocked in pairs:
        left[blocked] += status[blocker] != "completed"
    tails = tail_lengths(ix)
    c.execute("DELETE FROM eff_blocks WHERE run_id=?", (run_id,))
    c.executemany("INSERT INTO eff_blocks (run_id, blocker, blocked) VALUES (?,?,?)", ((run_id, b, t) for b, t in pairs))
    c.execute("DELETE FROM ancestry WHERE run_id=?", (run_id,))
    c.executemany("INSERT INTO ancestry (run_id, ancestor, task_id) VALUES (?,?,?)",
                  ((run_id, a, t) for t in ix.order for a in ix.ancestors(t)))
    c.executemany(_DERIVED, ((ix.parent.get(t), int(ix.is_container(t)), left[t], tails.get(t, 0.0), run_id, t)
                             for t in ix.order))


class SQLGrowth:
    """``add_tasks``, ``link`` and ``unlink`` of the SQL stores (mixin; see module docstring)."""

    def add_tasks(self, run_id: str, tasks: list[Task], deps: Iterable[Dependency] = (), parent: str | None = None,
                  by: str | None = None, now: int | None = None) -> list[Task]:
        new = list(tasks)
        with self._write(self._now(now), run_id) as tx:
            self._policy_of(run_id)
            old, _, old_deps, status = _graph(tx, run_id)
            plan = growth.plan_add(run_id, old, old_deps, status, new, list(deps), parent)
            ord0 = tx.c.execute("SELECT COALESCE(MAX(ord), -1) + 1 FROM tasks WHERE run_id=?", (run_id,)).fetchone()[0]
            dep0 = tx.c.execute("SELECT COALESCE(MAX(ord), -1) + 1 FROM deps WHERE run_id=?", (run_id,)).fetchone()[0]
            stamped = [t.model_copy(update={"created_at": tx.now, "updated_at": tx.now}) for t in new]
            rows = [task_rows(run_id, t, ord0 + i, 0.0, False, None, 0, tx.now) for i, t in enumerate(stamped)]
            tx.c.executemany(INSERT_TASK, (hot for hot, _ in rows))
            tx.c.executemany(INSERT_DEF, (defn for _, defn in rows))
            tx.c.executemany("INSERT INTO deps (run_id, ord, from_id, to_id, type) VALUES (?,?,?,?,?)",
                             ((run_id, dep0 + i, d.from_id, d.to_id, d.type) for i, d in enumerate(plan.deps)))
            _rederive(tx, run_id, plan.ix, {**status, **{t.id: t.status for t in new}})
            growth.emit_added(TxRun(tx, run_id), new, plan.deps, status, by, tx.now)
            ids = [t.id for t in new]
            got = {t.id: t for t in (task_from_row(r) for r in tx.c.execute(
                f"{TASK_SELECT} WHERE t.run_id=? AND t.ord >= ? ORDER BY t.ord", (run_id, ord0)))}
        return [got[t] for t in ids]

    def link(self, run_id: str, from_id: str, to_id: str, type: str = "blocks", by: str | None = None,
             now: int | None = None) -> None:
        d = Dependency(from_id=from_id, to_id=to_id, type=type)
        with self._write(self._now(now), run_id) as tx:
            self._policy_of(run_id)
            tasks, _, deps, status = _graph(tx, run_id)
            ix = growth.plan_link(run_id, tasks, deps, status, d)
            tx.c.execute("INSERT INTO deps (run_id, ord, from_id, to_id, type) VALUES "
                         "(?, (SELECT COALESCE(MAX(ord), -1) + 1 FROM deps WHERE run_id=?), ?, ?, ?)",
                         (run_id, run_id, from_id, to_id, type))
            _rederive(tx, run_id, ix, status)
            growth.emit_linked(TxRun(tx, run_id), growth.LINKED, d, status[growth.constrained(d)], by, tx.now)

    def unlink(self, run_id: str, from_id: str, to_id: str, type: str = "blocks", by: str | None = None,
               now: int | None = None) -> None:
        d = Dependency(from_id=from_id, to_id=to_id, type=type)
        with self._write(self._now(now), run_id) as tx:
            self._policy_of(run_id)
            tasks, ords, deps, status = _graph(tx, run_id)
            at = growth.plan_unlink(run_id, deps, status, d)
            tx.c.execute("DELETE FROM deps WHERE run_id=? AND ord=?", (run_id, ords[at]))
            _rederive(tx, run_id, GraphIndex(tasks, deps[:at] + deps[at + 1:]), status)
            growth.emit_linked(TxRun(tx, run_id), growth.UNLINKED, d, status[growth.constrained(d)], by, tx.now)
