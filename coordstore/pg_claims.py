"""PostgreSQL backend, part 4: a whole ``claim_next`` as one statement, its history rows included.

Claims of a run are serialized by the run's lock (``pg_tx``: history ``seq`` gapless in commit
order), so a claim's throughput is one over the time the lock is held. Here it is held only on the
server: one CALL of a session-local procedure (``function``) takes the lock, then runs one statement
(``_build``) that picks the task (``FOR UPDATE SKIP LOCKED``, readiness, tags and ``within`` inside),
takes it and inserts the claim's history rows (data-modifying CTEs) at the run's next seqs, returning
the task's hot columns only, and COMMITs (no other round trip); the definition is read after.

The rows are the state machine's, not written here: ``_templates`` runs its own verbs
(``claim_outcome``, ``take``) on a recording storage with markers for what only the server knows
(the task taken, its attempt, the status of the task the caller saw, the key), and each marker
becomes a SQL expression. An agent whose name holds a marker (never in practice) takes the
general path (``function`` returns None), as does a caller's unknown ``seen`` or ``within`` (the
statement then writes nothing and says so: ``ok`` false; the general path raises NotFound).
"""

from __future__ import annotations

import functools
import hashlib
import re
from typing import Any

import psycopg
from psycopg import sql as pgsql
from psycopg.types.json import Jsonb

from coordstore import statemachine as sm
from coordstore.pg_conn import CLOCK_MS
from coordstore.sql_claims import ready_sql
from coordstore.sql_rows import HISTORY_COLS, HOT_COLS, READY_WHERE, dumps

# what the server fills in: the task taken, the task seen, its status, the claim's key, the new attempt
_TOOK, _SEEN, _STATUS, _KEY = "orch-mark-took", "orch-mark-seen", "orch-mark-status", "orch-mark-key"
_ATTEMPT = 7770777077
_STR_MARKS = {_TOOK: "took.id", _SEEN: "lost.id", _STATUS: "lost.status", _KEY: "%(key)s"}
_INT_MARKS = {_ATTEMPT: "took.attempt"}
_MARKS = (*_STR_MARKS, str(_ATTEMPT))
_NOW = object()
# tags inside the pick: needed all held (JSON array contained in the agent's), a wanted one held first
_NEEDED = " AND (needed IS NULL OR needed::jsonb <@ %(tags_json)s::jsonb)"
# what the locked statement returns of the task taken: its hot columns; its definition (immutable once
# added) is read after the COMMIT that releases the run's lock (``function``)
_RETURNING = f" AND status='pending' RETURNING {HOT_COLS}"
_RESULT_FROM = " FROM (SELECT 1) one LEFT JOIN took ON true"
_WANTED_FIRST = "CASE WHEN wanted IS NULL OR jsonb_exists_any(wanted::jsonb, %(tags)s::text[]) THEN 0 ELSE 1 END, "


class _Recorder:
    """The part of ``statemachine.Storage`` a claim's rows use: records them, with data encoded as stored."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def state(self, tid: str) -> sm.TaskState:  # the task seen, as the server will find it: not ready
        return sm.TaskState(_STATUS, 0, None, None, 0, 0)

    def set_task(self, tid: str, fields: dict) -> None:
        pass  # the claim's UPDATE sets the task's fields (``statemachine.taken``)

    def emit(self, entity, entity_id, frm, to, now, agent=None, reason=None, data=None, key=None) -> None:
        self.rows.append((entity, entity_id, frm, to, agent, reason, dumps(data), key))


def _recorded(step) -> list[tuple]:
    rec = _Recorder()
    step(rec)
    return rec.rows


def _templates(agent: str) -> dict[str, list[tuple]]:
    """The state machine's rows of each outcome of a claim_next by ``agent``, with markers."""
    pending = sm.TaskState(sm.ALLOWED["claim"][0], _ATTEMPT - 1, None, None, 0, 0)
    return {
        "lost_took": _recorded(lambda st: sm.claim_outcome(st, _SEEN, _TOOK, agent, 0)),
        "lost_none": _recorded(lambda st: sm.claim_outcome(st, _SEEN, None, agent, 0)),
        "won": _recorded(lambda st: sm.take(st, _TOOK, pending, agent, agent, 0, claim=True, key=_KEY)),
        "empty": _recorded(lambda st: sm.claim_outcome(st, None, None, agent, 0)),
    }


def _expr(v: Any, params: dict) -> str:
    """SQL for one field of a recorded row: a marker's expression, a JSON text with markers replaced
    in it, or a literal (a parameter)."""
    if isinstance(v, str) and v in _STR_MARKS:
        return f"{_STR_MARKS[v]}::text"
    name = f"p{len(params)}"
    params[name] = v
    out = f"%({name})s::text"
    if isinstance(v, str):
        for m, e in _STR_MARKS.items():  # a string in JSON: quoted (a missing task taken is null)
            if f'"{m}"' in v:
                out = f"replace({out}, '\"{m}\"', COALESCE(to_json({e})::text, 'null'))"
        for m, e in _INT_MARKS.items():
            if str(m) in v:
                out = f"replace({out}, '{m}', ({e})::text)"
    return out


def _setters(agent: str, params: dict) -> str:
    """The SET list of ``statemachine.taken``: its times are the statement's (``clk.now``), attempt one up."""
    sets = []
    for k, v in sm.taken(agent, agent, 0, _NOW).items():
        if k == "attempt":
            continue
        if v is _NOW:
            sets.append(f"{k}=clk.now")
        else:
            params[f"f_{k}"] = v
            sets.append(f"{k}=%(f_{k})s")
    return ", ".join(sets) + ", attempt=attempt+1"


def _named(sql: str, names: list[str]) -> str:
    """The shared SQL's ``?`` placeholders, in order, as psycopg's named ones."""
    parts = sql.replace("%", "%%").split("?")
    assert len(parts) == len(names) + 1, (sql, names)
    return parts[0] + "".join(f"%({n})s{p}" for n, p in zip(names, parts[1:]))


@functools.lru_cache(maxsize=256)
def _build(agent: str, order: str, within: bool, tags: bool, seen: bool, db_clock: bool) -> tuple[str, dict] | None:
    """(SQL, its fixed parameters) of an agent's claim; the caller adds run, now, key, seen, within, tags."""
    if any(m in agent for m in _MARKS):
        return None
    params: dict = {}
    pick = _named(ready_sql(order, "" if within else None, "run_id, id"), ["run"] + (["run", "within"] if within else []))
    if tags:
        where_, order_by = pick.split(" ORDER BY ")
        pick = f"{where_}{_NEEDED} ORDER BY {_WANTED_FIRST}{order_by}"
    now = CLOCK_MS if db_clock else "%(now)s::bigint"
    checks = ["true"]
    if seen:
        checks.append("EXISTS (SELECT 1 FROM seen)")
    if within:
        checks.append("EXISTS (SELECT 1 FROM tasks WHERE run_id=%(run)s AND id=%(within)s)")
    ctes = [
        "last AS (SELECT seq, ts_ms FROM history WHERE run_id=%(run)s ORDER BY seq DESC LIMIT 1)",
        # the time: the given one (or the database's), raised to the run's latest row's (``chains.raised``)
        f"clk AS (SELECT GREATEST({now}, COALESCE((SELECT ts_ms FROM last), 0)) AS now, "
        "COALESCE((SELECT seq FROM last), 0) AS seq)",
    ]
    if seen:
        ctes.append(f"seen AS (SELECT id, status, ({READY_WHERE}) AS ready FROM tasks WHERE run_id=%(run)s AND id=%(seen)s)")
    ctes.append(f"ok AS (SELECT {' AND '.join(checks)} AS ok)")
    ctes.append(f"took AS (UPDATE tasks SET {_setters(agent, params)} FROM clk WHERE (run_id, id) = "
                f"({pick} LIMIT 1 FOR UPDATE SKIP LOCKED) AND (SELECT ok FROM ok)"
                + _RETURNING + ")")
    t = _templates(agent)
    # (rows, FROM/WHERE): each outcome's rows, lost before won (``claim_outcome`` before ``take``)
    outcomes = [("won", "FROM took")]
    if seen:
        # ``lost_race``: the task seen, not taken by this claim, no longer ready (the CTEs share the
        # snapshot from before the UPDATE, which changed no other task)
        ctes.append("lost AS (SELECT id, status FROM seen WHERE NOT ready AND id IS DISTINCT FROM (SELECT id FROM took))")
        outcomes = [("lost_took", "FROM lost, took"), ("lost_none", "FROM lost WHERE NOT EXISTS (SELECT 1 FROM took)")] + outcomes
    nothing = "NOT EXISTS (SELECT 1 FROM took)" + (" AND NOT EXISTS (SELECT 1 FROM lost)" if seen else "")
    outcomes.append(("empty", f"FROM ok WHERE ok AND {nothing}"))
    names = HISTORY_COLS.split(", ")[3:]  # entity ... key: a recorded row's fields, in order
    selects = []
    for name, source in outcomes:
        for i, row in enumerate(t[name]):
            # the row's seq after the run's latest: lost rows (at most one outcome of them) before won ones
            n = f"{i + 1} + {len(t['lost_took'])} * (SELECT count(*) FROM lost)" if name == "won" and seen else str(i + 1)
            fields = ", ".join(f"{_expr(v, params)} AS {c}" for v, c in zip(row, names, strict=True))
            selects.append(f"SELECT {n} AS n, {fields} {source}")
    ctes.append("rows AS (" + " UNION ALL ".join(selects) + ")")
    ctes.append(f"ins AS (INSERT INTO history ({HISTORY_COLS}) SELECT %(run)s, clk.seq + rows.n, "
                f"clk.now, {', '.join(names)} FROM rows, clk WHERE (SELECT ok FROM ok))")
    # the statement's one row: whether the caller's tasks exist (else nothing was written), then the task taken
    sql = "WITH " + ",\n".join(ctes) + "\nSELECT (SELECT ok FROM ok), took.*" + _RESULT_FROM
    return sql, params


# ---------------------------------------------------------------------------- as one call
# The statement above, with the run's lock before it, as a session-local PL/pgSQL procedure
# (``pg_temp``: no DDL in the store, nothing shared between sessions): ``CALL`` in autocommit runs
# outside any transaction block, so the procedure COMMITs itself: the lock, the claim and COMMIT, then,
# with the lock released, the task's definition, in one message and one round trip; PL/pgSQL caches
# the plans. Each statement in it reads a fresh snapshot (READ COMMITTED): the claim, after the lock,
# sees every commit of the run's writers before it.
# The claim COMMITs asynchronously (``synchronous_commit`` off for it only): the run's lock is released
# without waiting for the WAL flush, which serialized every claim of a run behind one fsync (3-4 ms
# under load: 16 agents claimed at 1/8 of one agent's speed). Durability before the reply is kept: the
# procedure's last transaction writes WAL under an xid (a transactional logical message: an xid alone
# writes none and commits asynchronously), so its COMMIT flushes the WAL up to its own commit record,
# past the claim's, outside the lock (concurrent claims share one flush). Another session may see a
# claim a moment before it is durable (a crash then loses it with everything after it in the WAL); the
# claiming agent never does: it is answered after the flush.
_ARGS = ("lk", "run", "key", "seen", "within", "now", "tags_json", "tags")
_ARG_TYPES = ("text", "text", "text", "text", "text", "bigint", "jsonb", "text[]")
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
CALL_ARGS = ", ".join(["%s"] * len(_ARGS))


def _body(sql: str, fixed: dict, raw: psycopg.Connection) -> str:
    """The statement with its arguments as $n and its fixed values as literals (psycopg quotes them)."""
    def sub(m: re.Match) -> str:
        name = m.group(1)
        if name in _ARGS:
            return f"${_ARGS.index(name) + 1}"
        return pgsql.Literal(fixed[name]).as_string(raw)
    return _PLACEHOLDER.sub(sub, sql).replace("%%", "%")


def _column_types(raw: psycopg.Connection) -> dict[str, str]:
    rows = raw.execute("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                       "WHERE attrelid = 'tasks'::regclass AND attnum > 0 AND NOT attisdropped").fetchall()
    return dict(rows)


def function(raw: psycopg.Connection, made: dict, agent: str, order: str, within: bool, tags: bool, seen: bool,
             db_clock: bool) -> str | None:
    """The name of this session's claim procedure for these arguments, created on first use (``made``:
    the session's names by arguments); None: this agent takes the general path."""
    args = (agent, order, within, tags, seen, db_clock)
    name = made.get(args)
    if name is not None:
        return name
    built = _build(*args)
    if built is None:
        return None
    sql, fixed = built
    body = _body(sql, fixed, raw)
    if "$orch$" in body:
        return None
    types = made.get("types") or made.setdefault("types", _column_types(raw))
    cols = [c.strip() for c in HOT_COLS.split(",")]
    outs = ["r_ok"] + [f"r_{c}" for c in cols]
    out = ", ".join([f"INOUT {o} {t} DEFAULT NULL" for o, t in zip(outs, ["boolean"] + [types[c] for c in cols])]
                    + ["INOUT r_defn text DEFAULT NULL"])
    head, _, _ = body.rpartition(_RESULT_FROM)
    name = "orch_claim_" + hashlib.sha1(repr(args).encode()).hexdigest()[:16]
    params = ", ".join(f"p_{a} {t}" for a, t in zip(_ARGS, _ARG_TYPES))
    raw.execute(f"CREATE OR REPLACE PROCEDURE pg_temp.{name}({params}, {out}) LANGUAGE plpgsql AS $orch$\n"
                "#variable_conflict use_column\nBEGIN\n"
                "PERFORM pg_advisory_xact_lock(hashtextextended($1, 0));\n"
                "SET LOCAL synchronous_commit = off;\n"  # released without the flush (above)
                f"{head} INTO {', '.join(outs)}{_RESULT_FROM};\nCOMMIT;\n"
                "IF r_id IS NOT NULL THEN SELECT defn INTO r_defn FROM task_defs WHERE run_id=$2 AND id=r_id; END IF;\n"
                "PERFORM pg_logical_emit_message(true, 'orch', '');\n"  # WAL and an xid: a flushed COMMIT
                "END $orch$")
    made[args] = name
    return name


def call_args(lock_key: str, run_id: str, key: str, seen: str | None, within: str | None, now: int | None,
              tags: list[str] | None) -> tuple:
    return (lock_key, run_id, key, seen, within, now, None if tags is None else Jsonb(tags), tags)
