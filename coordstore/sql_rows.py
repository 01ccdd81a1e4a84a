"""Row codecs of the SQL backends (SQLite, PostgreSQL): the columns of each table as SQL text, and
models <-> row tuples. Dialect-free: placeholders are ``?`` (the PostgreSQL connection adapter,
``pg_conn``, rewrites them), JSON columns are text, so both backends store the same bytes.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

from coordstore.models import METRIC_FIELDS, Agent, Event, Run, Task, Transition

READY_WHERE = "status='pending' AND is_container=0 AND blockers_left=0"
TERMINAL_SQL = "('completed','failed','cancelled')"


# ---------------------------------------------------------------------------- codecs
_encode = json.JSONEncoder(separators=(",", ":")).encode  # built once: json.dumps(separators=) builds one per call
# how the encoder writes each scalar of a flat dict (bool before int: True is an int too)
_SCALAR = {str: encode_basestring_ascii, int: int.__repr__, bool: {True: "true", False: "false"}.__getitem__,
           type(None): lambda _: "null"}


def dumps(v: Any) -> str | None:
    """JSON for a dict/list column; empty containers are stored as NULL. A flat dict of str keys
    and str/int/bool/None values (most history data: attempts, owners, blockers) is written without
    the encoder's per-call setup, to the same text."""
    if not v:
        return None
    if type(v) is dict:
        try:
            return "{" + ",".join([f"{encode_basestring_ascii(k)}:{_SCALAR[type(x)](x)}" for k, x in v.items()]) + "}"
        except (KeyError, TypeError):  # a nested, float or other value, or a key that is not a str
            pass
    return _encode(v)


def loads(s: str | None, empty: Any) -> Any:
    return json.loads(s) if s else empty


# definition fields kept in task_defs.defn as JSON (everything not hot, ordered on or routed by)
DEFN_FIELDS = ("title", "description", "points", "time_estimate_ms", "tags", "phase", "file_scope", "meta")
# the hot columns of a task, as claims and transitions return them
HOT_COLS = (
    "id, status, attempt, owner, assigned_by, completed_by, reason, priority, needed, wanted, "
    "created_at, claimed_at, started_at, completed_at, updated_at, "
    + ", ".join(METRIC_FIELDS) + ", cost_usd"
)
_HOT_NAMES = tuple(c.strip() for c in HOT_COLS.split(","))
# a whole task from a statement on ``tasks`` alone (UPDATE ... RETURNING, ready query): hot + definition
TASK_COLS = HOT_COLS + ", (SELECT defn FROM task_defs d WHERE d.run_id=tasks.run_id AND d.id=tasks.id)"
# a whole task: hot columns plus the definition (last column); callers add WHERE/ORDER on ``t.``
TASK_SELECT = (
    "SELECT " + ", ".join(f"t.{c}" for c in _HOT_NAMES) + ", d.defn "
    "FROM tasks t JOIN task_defs d ON d.run_id=t.run_id AND d.id=t.id"
)


def task_from_row(row: tuple) -> Task:
    """A Task from HOT_COLS followed by the defn JSON (``TASK_COLS`` or ``TASK_SELECT``)."""
    d = json.loads(row[len(_HOT_NAMES)])
    d.update(zip(_HOT_NAMES, row))
    d["needed_tags"] = loads(d.pop("needed"), [])
    d["wanted_tags"] = loads(d.pop("wanted"), [])
    return Task.model_validate(d)


def task_rows(run_id: str, t: Task, ord_: int, cp_rank: float, is_container: bool, parent: str | None,
              blockers_left: int, now: int | None) -> tuple[tuple, tuple]:
    """(tasks row, task_defs row) of a task; ``now`` fills missing created/updated stamps."""
    defn = _encode(t.model_dump(include=set(DEFN_FIELDS)))
    fill = (lambda v: v if v is not None else now)
    hot = (
        run_id, t.id, ord_, t.status, t.attempt, t.owner, t.assigned_by, t.completed_by, t.reason,
        t.priority, cp_rank, int(is_container), blockers_left, parent, dumps(t.needed_tags),
        dumps(t.wanted_tags), fill(t.created_at), t.claimed_at, t.started_at, t.completed_at, fill(t.updated_at),
        *t.metrics, t.cost_usd,
    )
    return hot, (run_id, t.id, defn)


INSERT_TASK = (
    "INSERT INTO tasks (run_id, id, ord, status, attempt, owner, assigned_by, completed_by, reason, "
    "priority, cp_rank, is_container, blockers_left, parent, needed, wanted, created_at, claimed_at, "
    "started_at, completed_at, updated_at, " + ", ".join(METRIC_FIELDS) + ", cost_usd) "
    "VALUES (" + ",".join("?" * (22 + len(METRIC_FIELDS))) + ")"
)
INSERT_DEF = "INSERT INTO task_defs (run_id, id, defn) VALUES (?,?,?)"

RUN_COLS = "id, experiment, variant, status, seed, on_blocker_failure, created_at, finished_at, reason, config"


def run_from_row(r: tuple) -> Run:
    return Run(id=r[0], experiment=r[1], variant=r[2], status=r[3], seed=r[4], on_blocker_failure=r[5],
               created_at=r[6], finished_at=r[7], reason=r[8], config=loads(r[9], {}))


def run_row(r: Run) -> tuple:
    return (r.id, r.experiment, r.variant, r.status, r.seed, r.on_blocker_failure, r.created_at,
            r.finished_at, r.reason, dumps(r.config))


AGENT_COLS = ("id, kind, role, tags, status, pid, create_time, current_task, registered_at, "
              "last_heartbeat, lease_expires, meta")


def agent_from_row(r: tuple) -> Agent:
    return Agent(id=r[0], kind=r[1], role=r[2], tags=loads(r[3], []), status=r[4], pid=r[5], create_time=r[6],
                 current_task=r[7], registered_at=r[8], last_heartbeat=r[9], lease_expires=r[10],
                 meta=loads(r[11], {}))


def agent_row(run_id: str, a: Agent) -> tuple:
    return (run_id, a.id, a.kind, a.role, json.dumps(a.tags), a.status, a.pid, a.create_time, a.current_task,
            a.registered_at, a.last_heartbeat, a.lease_expires, dumps(a.meta))


EVENT_COLS = "agent, seq, ts_ms, type, task, data"


def event_from_row(r: tuple) -> Event:
    return Event(agent=r[0], seq=r[1], ts_ms=r[2], type=r[3], task=r[4], data=loads(r[5], {}))


HISTORY_COLS = "run_id, seq, ts_ms, entity, entity_id, from_state, to_state, agent, reason, data, key"
INSERT_HISTORY = f"INSERT INTO history ({HISTORY_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)"


def transition_from_row(r: tuple) -> Transition:
    return Transition(run_id=r[0], seq=r[1], ts_ms=r[2], entity=r[3], entity_id=r[4], from_state=r[5],
                      to_state=r[6], agent=r[7], reason=r[8], data=loads(r[9], {}), key=r[10])


def transition_row(t: Transition) -> tuple:
    return (t.run_id, t.seq, t.ts_ms, t.entity, t.entity_id, t.from_state, t.to_state, t.agent, t.reason,
            dumps(t.data), t.key)
