"""What a claim is in SQL, for both SQL backends: the ready rows of each claim order, the one UPDATE
that takes a task (its fields are ``statemachine.taken``'s) and the rows a won claim writes. How the
best row is picked inside that UPDATE is each backend's (SQLite: by rowid; PostgreSQL: FOR UPDATE
SKIP LOCKED with tags and ``within`` in the statement).
"""

from __future__ import annotations

import functools

from coordstore import statemachine as sm
from coordstore.errors import InputError
from coordstore.sql_rows import READY_WHERE, TASK_COLS, dumps

# claim order -> (ORDER BY of the ready query, its partial index). SQLite creates each index on the
# first claim in that order (every ready index is rewritten by every claim, and a deployment uses one).
READY_ORDERS: dict[str, tuple[str, str]] = {
    "priority": ("priority DESC, ord", "tasks_ready_priority"),
    "critical-path": ("cp_rank DESC, ord", "tasks_ready_cp"),
    "fifo": ("ord", "tasks_ready_fifo"),
}


def ready_index_ddl(order: str) -> str:
    cols, name = READY_ORDERS[order]
    return f"CREATE INDEX IF NOT EXISTS {name} ON tasks(run_id, {cols}) WHERE {READY_WHERE}"


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


def ready_sql(order: str, within: str | None, cols: str = "id, needed, wanted") -> str:
    """The run's ready tasks in claim ``order`` (``?``: run id, then run id and container for ``within``)."""
    if order not in READY_ORDERS:
        raise InputError(f"claim order {order!r}: one of {', '.join(READY_ORDERS)}")
    return (f"SELECT {cols} FROM tasks WHERE run_id=? AND {READY_WHERE}"
            f"{_WITHIN if within is not None else ''} ORDER BY {READY_ORDERS[order][0]}")
