"""The history's chain rules, written once for every backend (see ``base.py``, "History chains").

Every entity in ``models.CHAINED`` has a history that is a chain: its first row comes from None,
each later row's ``from_state`` is the previous row's ``to_state``, every ``to_state`` is one of
the entity's states, and ``ts_ms`` never goes back. Backends guarantee it by construction: they
derive ``from_state`` from what they store (never from the caller) and raise a row's time to the
run's latest row (``raised``). What callers may append through ``record`` and ``note`` is checked
here.
"""

from __future__ import annotations

from coordstore.errors import InputError, InvalidTransition
from coordstore.models import MERGE_STATES, NOTABLE, Transition


def raised(now: int, last_ts: int | None) -> int:
    """The time an operation writes at: ``now``, or the run's latest row's time if that is later
    (a stale ``now`` or another process's clock never puts history out of time order)."""
    return now if last_ts is None or now >= last_ts else last_ts


def check_record(t: Transition) -> None:
    """``record`` appends merge rows (and unchained ones); task, agent and run rows belong to the
    verbs that change those states, or to ``note``."""
    if t.entity in NOTABLE:
        raise InvalidTransition(
            f"run {t.run_id!r}: {t.entity} rows are written by the store's {t.entity} operations; "
            f"record an action on a {t.entity} with note()"
        )
    if t.entity == "merge" and t.to_state not in MERGE_STATES:
        raise InvalidTransition(f"run {t.run_id!r}: merge state {t.to_state!r}; one of {', '.join(MERGE_STATES)}")


def check_note(run_id: str, entity: str, entity_id: str, action: str) -> None:
    if entity not in NOTABLE:
        raise InvalidTransition(f"run {run_id!r}: note() records actions on {', '.join(NOTABLE)}, not on {entity!r}")
    if entity == "run" and entity_id != run_id:
        raise InvalidTransition(f"run {run_id!r}: a run note names the run itself, not {entity_id!r}")
    if not action:
        raise InputError(f"run {run_id!r}: note on {entity} {entity_id!r} needs an action")


def note_data(action: str, data: dict | None) -> dict:
    return {**(data or {}), "action": action}
