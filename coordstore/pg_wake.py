"""PostgreSQL: idle waiters sleep on LISTEN and are woken by a NOTIFY sent when a change commits.

A write transaction that commits a transition of a run that can give an idle agent something to do
or end its wait (a task added, completed, failed, cancelled or requeued to ``pending``; the run
closed or reopened) sends ``pg_notify`` on the run's channel in its COMMIT pipeline (``pg_tx``):
PostgreSQL delivers it at commit, and never for a rolled-back one. Claims (``assigned``) and starts
(``working``) send nothing: they take work away, they give none; an assignment by a coordinator does.

A waiter (``wait``) LISTENs on the channel on its own session once, then blocks on the socket until
a notification or the timeout. Notifications that arrive while the session runs other queries wait
in psycopg's backlog and end the next wait at once. A notification can still be lost (a session
reconnected, a listener added after the commit): callers poll at their timeout whatever happens.
"""

from __future__ import annotations

import hashlib

import psycopg

from coordstore.pg_conn import translate

# to_state of a task row that wakes waiters; run rows always wake
_WAKING = frozenset({"pending", "completed", "failed", "cancelled"})
NOTIFY = "SELECT pg_notify(%s, '')"


def channel(schema: str, run_id: str) -> str:
    """The run's channel: a plain identifier (hashed, so any schema or run id fits in 63 bytes)."""
    return "orch_" + hashlib.sha1(f"{schema}/{run_id}".encode()).hexdigest()[:24]


def wakes(rows: list[tuple]) -> set[str]:
    """The runs among buffered history rows (``sql_storage.SQLTx``: run_id, seq, ts, entity,
    entity_id, from, to, ...) whose waiters a commit of them should wake. An assignment wakes (a
    push worker waits for one), a claim's own ``assigned`` row does not."""
    claimed = {r[4] for r in rows if r[3] == "claim"}
    return {r[0] for r in rows if r[3] == "run" or (r[3] == "task" and r[5] != r[6] and (
        r[6] in _WAKING or (r[6] == "assigned" and r[4] not in claimed)))}


def notify(raw: psycopg.Connection, schema: str, runs: set[str]) -> None:
    """Queue the runs' notifications in the open transaction (sent by PostgreSQL at its commit)."""
    for run_id in runs:
        raw.execute(NOTIFY, (channel(schema, run_id),))


def wait(raw: psycopg.Connection, schema: str, run_id: str, timeout_ms: float, url: str) -> bool:
    """Block up to ``timeout_ms`` for a notification of the run on ``raw`` (autocommit, idle);
    True when one came (or on the first call of this session: it was not listening before)."""
    listening = _LISTENING.setdefault(id(raw), set())
    chan = channel(schema, run_id)
    try:
        if chan not in listening:
            raw.execute(f"LISTEN {chan}")
            listening.add(chan)
            return True
        woken = False
        for _ in raw.notifies(timeout=max(0.0, timeout_ms) / 1000.0, stop_after=1):
            woken = True
        if woken:  # several commits since the last look: one look serves them all
            for _ in raw.notifies(timeout=0):
                pass
        return woken
    except psycopg.Error as e:
        raise translate(e, url) from e


def forget(raw: psycopg.Connection) -> None:
    """The session is closed: its LISTENs are gone with it."""
    _LISTENING.pop(id(raw), None)


_LISTENING: dict[int, set[str]] = {}  # id of a session -> the channels it LISTENs on
