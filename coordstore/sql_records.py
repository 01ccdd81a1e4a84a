"""The SQL backends (SQLite, PostgreSQL): the run's records around the task graph — agents, events,
history, and whole-run dump/load — as a mixin of their stores (which provide ``_write``, ``_verb``,
``_all``, ``_policy_of``, ``_require_run``, ``_snapshot`` and ``_insert_graph``).
"""

from __future__ import annotations

from coordstore import statemachine as sm
from coordstore.chains import check_note, check_record, note_data
from coordstore.errors import InvalidTransition, NotFound
from coordstore.graph import validate
from coordstore.models import ACTIVE, Agent, Dependency, Event, RunDump, TaskGraph, Transition
from coordstore.sql_rows import (
    AGENT_COLS, EVENT_COLS, HISTORY_COLS, INSERT_HISTORY, RUN_COLS, TASK_SELECT, agent_from_row, agent_row, dumps,
    event_from_row, run_from_row, run_row, task_from_row, transition_from_row, transition_row,
)
from coordstore.sql_storage import TxRun

# the stored status of what note() annotates, by (run, id); a run note's id is the run's (check_note)
_STATUS_OF = {
    "task": "SELECT status FROM tasks WHERE run_id=? AND id=?",
    "agent": "SELECT status FROM agents WHERE run_id=? AND id=?",
    "run": "SELECT status FROM runs WHERE id=? AND id=?",
}
# the active (assigned or working) tasks of one agent, in template order: requeued when it is reaped
_OWNED_ACTIVE = ("SELECT id FROM tasks WHERE run_id=? AND owner=? AND status IN ("
                 + ", ".join(f"'{s}'" for s in sorted(ACTIVE)) + ") ORDER BY ord")
# the latest row of one merge (the head of its chain), through the partial index history_merge
_MERGE_HEAD = "SELECT to_state FROM history WHERE run_id=? AND entity='merge' AND entity_id=? ORDER BY seq DESC LIMIT 1"


class SQLRecords:
    """Agents, events, history and snapshots of the SQL stores (mixin; see module docstring)."""

    # ------------------------------------------------------------------ agents
    def register_agent(self, run_id: str, agent: Agent, lease_ms: int | None = None, now: int | None = None) -> Agent:
        with self._write(self._now(now), run_id) as tx:
            self._policy_of(run_id)
            return sm.register(TxRun(tx, run_id), agent, lease_ms, tx.now)

    def get_agent(self, run_id: str, agent_id: str) -> Agent:
        rows = self._all(f"SELECT {AGENT_COLS} FROM agents WHERE run_id=? AND id=?", (run_id, agent_id))
        if not rows:
            raise NotFound(f"run {run_id!r}: no agent {agent_id!r}")
        return agent_from_row(rows[0])

    def list_agents(self, run_id: str) -> list[Agent]:
        self._require_run(run_id)
        return [agent_from_row(r) for r in self._all(f"SELECT {AGENT_COLS} FROM agents WHERE run_id=? ORDER BY id", (run_id,))]

    def heartbeat(self, run_id: str, agent_id: str, lease_ms: int, current_task: str | None = None,
                  now: int | None = None) -> Agent:
        with self._write(self._now(now)) as tx:
            rows = tx.c.execute(
                f"UPDATE agents SET last_heartbeat=?, lease_expires=?, current_task=? WHERE run_id=? AND id=? "
                f"RETURNING {AGENT_COLS}", (tx.now, tx.now + lease_ms, current_task, run_id, agent_id)).fetchall()
            if not rows:
                raise NotFound(f"run {run_id!r}: no agent {agent_id!r}")
        return agent_from_row(rows[0])

    def set_agent_status(self, run_id: str, agent_id: str, status: str, reason: str | None = None,
                         data: dict | None = None, now: int | None = None) -> Agent:
        self._verb(run_id, now, sm.set_agent_status, agent_id, status, reason, data)
        return self.get_agent(run_id, agent_id)

    def reap_expired(self, run_id: str, now: int | None = None) -> list[str]:
        requeued: list[str] = []
        with self._write(self._now(now), run_id) as tx:  # leases are compared with now as given; rows at tx.now
            now = tx.given
            self._policy_of(run_id)
            st = TxRun(tx, run_id)
            agents = tx.c.execute("SELECT id, status, lease_expires FROM agents WHERE run_id=? AND lease_expires < ? "
                                  "ORDER BY id", (run_id, now)).fetchall()
            for agent_id, status, lease_expires in agents:
                if sm.expired(status, lease_expires, now):
                    owned = [t for (t,) in tx.c.execute(_OWNED_ACTIVE, (run_id, agent_id))]
                    sm.reap(st, agent_id, owned, tx.now)
                    requeued += owned
        return requeued

    # ------------------------------------------------------------------ events
    def append_events(self, run_id: str, events: list[Event]) -> int:
        with self._write(self._now(None)) as tx:
            self._policy_of(run_id)
            cur = tx.c.executemany(
                f"INSERT INTO events (run_id, {EVENT_COLS}) VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                [(run_id, e.agent, e.seq, e.ts_ms, e.type, e.task, dumps(e.data)) for e in events])
            return max(cur.rowcount, 0)

    def read_events(self, run_id: str, agent: str | None = None, since_seq: int = -1,
                    limit: int | None = None) -> list[Event]:
        if agent is not None:
            sql, params = "WHERE run_id=? AND agent=? AND seq>? ORDER BY seq", (run_id, agent, since_seq)
        else:
            sql, params = "WHERE run_id=? AND seq>? ORDER BY ts_ms, agent, seq", (run_id, since_seq)
        if limit is not None:
            sql, params = sql + " LIMIT ?", (*params, limit)
        return [event_from_row(r) for r in self._all(f"SELECT {EVENT_COLS} FROM events {sql}", params)]

    def last_event_seq(self, run_id: str, agent: str) -> int:
        rows = self._all("SELECT MAX(seq) FROM events WHERE run_id=? AND agent=?", (run_id, agent))
        return -1 if rows[0][0] is None else rows[0][0]

    # ------------------------------------------------------------------ history
    @staticmethod
    def _keyed(tx, run_id: str, key: str | None) -> bool:
        """Whether a row with idempotency ``key`` is already in the run's history."""
        if key is None:
            return False
        return tx.c.execute("SELECT 1 FROM history WHERE run_id=? AND key=?", (run_id, key)).fetchone() is not None

    def record(self, transition: Transition) -> Transition | None:
        t = transition
        with self._write(t.ts_ms, t.run_id) as tx:
            self._policy_of(t.run_id)
            check_record(t)
            if self._keyed(tx, t.run_id, t.key):
                return None
            head = tx.c.execute(_MERGE_HEAD, (t.run_id, t.entity_id)).fetchone() if t.entity == "merge" else None
            row = t.model_copy(update={"from_state": head[0] if head else None, "ts_ms": tx.now})
            seq = tx.emit(t.run_id, t.entity, t.entity_id, row.from_state, t.to_state, agent=t.agent,
                          reason=t.reason, data=t.data, key=t.key)
        return row.model_copy(update={"seq": seq})

    def note(self, run_id: str, entity: str, entity_id: str, action: str, reason: str | None = None,
             agent: str | None = None, data: dict | None = None, key: str | None = None,
             now: int | None = None) -> Transition | None:
        check_note(run_id, entity, entity_id, action)
        with self._write(self._now(now), run_id) as tx:
            self._policy_of(run_id)
            row = tx.c.execute(_STATUS_OF[entity], (run_id, entity_id)).fetchone()
            if row is None:
                raise NotFound(f"run {run_id!r}: no {entity} {entity_id!r}")
            if self._keyed(tx, run_id, key):
                return None
            data = note_data(action, data)
            seq = tx.emit(run_id, entity, entity_id, row[0], row[0], agent=agent, reason=reason, data=data, key=key)
        return Transition(seq=seq, run_id=run_id, ts_ms=tx.now, entity=entity, entity_id=entity_id, from_state=row[0],
                          to_state=row[0], agent=agent, reason=reason, data=data, key=key)

    def history(self, run_id: str, since_seq: int = 0, entity: str | None = None, entity_id: str | None = None,
                agent: str | None = None) -> list[Transition]:
        where, params = ["run_id=?", "seq>?"], [run_id, since_seq]
        for col, val in (("entity", entity), ("entity_id", entity_id), ("agent", agent)):
            if val is not None:
                where.append(f"{col}=?")
                params.append(val)
        sql = f"SELECT {HISTORY_COLS} FROM history WHERE {' AND '.join(where)} ORDER BY seq"
        return [transition_from_row(r) for r in self._all(sql, tuple(params))]

    # ------------------------------------------------------------------ snapshot
    def dump_run(self, run_id: str) -> RunDump:
        with self._snapshot() as c:
            run = c.execute(f"SELECT {RUN_COLS} FROM runs WHERE id=?", (run_id,)).fetchone()
            if run is None:
                raise NotFound(f"no run {run_id!r}")
            q = lambda sql: c.execute(sql, (run_id,)).fetchall()  # noqa: E731
            return RunDump(
                run=run_from_row(run),
                tasks=[task_from_row(r) for r in q(f"{TASK_SELECT} WHERE t.run_id=? ORDER BY t.ord")],
                dependencies=[Dependency(from_id=a, to_id=b, type=t) for a, b, t in
                              q("SELECT from_id, to_id, type FROM deps WHERE run_id=? ORDER BY ord")],
                agents=[agent_from_row(r) for r in q(f"SELECT {AGENT_COLS} FROM agents WHERE run_id=? ORDER BY id")],
                events=[event_from_row(r) for r in
                        q(f"SELECT {EVENT_COLS} FROM events WHERE run_id=? ORDER BY agent, seq")],
                history=[transition_from_row(r) for r in
                         q(f"SELECT {HISTORY_COLS} FROM history WHERE run_id=? ORDER BY seq")],
            )

    def load_run(self, dump: RunDump) -> None:
        run_id = dump.run.id
        ix = validate(TaskGraph(tasks=dump.tasks, dependencies=dump.dependencies))
        bad = [t.seq for t in dump.history if t.run_id != run_id]
        if bad:
            raise InvalidTransition(f"run {run_id!r}: dump has history rows of another run (seq {bad[0]})")
        with self._write(self._now(None)) as tx:
            if tx.c.execute("SELECT 1 FROM runs WHERE id=?", (run_id,)).fetchone():
                raise InvalidTransition(f"run {run_id!r} already exists")
            tx.c.execute(f"INSERT INTO runs ({RUN_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)", run_row(dump.run))
            self._insert_graph(tx, run_id, ix, dump.tasks, dump.dependencies, None)
            tx.c.executemany(f"INSERT INTO agents (run_id, {AGENT_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                             (agent_row(run_id, a) for a in dump.agents))
            tx.c.executemany(f"INSERT INTO events (run_id, {EVENT_COLS}) VALUES (?,?,?,?,?,?,?)",
                             ((run_id, e.agent, e.seq, e.ts_ms, e.type, e.task, dumps(e.data)) for e in dump.events))
            tx.c.executemany(INSERT_HISTORY, (transition_row(t) for t in dump.history))
