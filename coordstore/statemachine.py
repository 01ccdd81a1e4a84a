"""The one state machine of tasks, agents and runs, written once for every backend (``base.py``).

It holds the rules: which verb may move a task from which status (``ALLOWED``, to ``TARGET``),
what each verb sets (status, attempt, owner, times: ``taken`` and the verbs below), the history
rows it writes, the error for each refusal (same class, same text on every backend), and the
cascades a task that becomes terminal sets off. A backend holds storage, not rules: it hands the
verbs an object with the methods of ``Storage`` over one run, inside its own atomic step (the file
store's ``RunState``, the SQLite store's ``sqlite_tx.TxRun``), and the verbs read and write
through it. Every verb checks before it writes, so a refused call changes nothing.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple, Protocol

from coordstore.errors import InvalidTransition, NotFound, StaleAttempt
from coordstore.models import (ACTIVE, AGENT_STATUSES, REQUEUABLE, RUN_FINAL, RUN_OVER, SETTLED, TASK_STATUSES, TERMINAL,
                               UNSUCCESSFUL, Agent)


def _in_order(statuses) -> tuple[str, ...]:
    """A set of the shared words (models) in the statuses' own order, as refusals name them."""
    return tuple(s for s in TASK_STATUSES if s in statuses)


# verb -> the task statuses it moves a task from (claims need a ready task, see ``ready``)
ALLOWED: dict[str, tuple[str, ...]] = {
    "claim": ("pending",),
    "assign": ("pending", "assigned"),  # pending: ready, or a container (its owner owns the subtree)
    "start": ("assigned",),
    "complete": _in_order(ACTIVE),  # a container only once its children are all terminal
    "fail": _in_order(ACTIVE),
    "requeue": _in_order(REQUEUABLE),
    "cancel": ("pending", "assigned", "working"),
}
FAILED_BY_ORCHESTRATOR = ("pending", "assigned", "working")  # fail() without agent and attempt
TARGET: dict[str, str] = {
    "claim": "assigned", "assign": "assigned", "start": "working", "complete": "completed",
    "fail": "failed", "requeue": "pending", "cancel": "cancelled",
}  # fmt: skip
OWNED = ("start", "complete", "fail")  # an agent's own attempt: owner and attempt are checked first
_CAN = {"assign": "be assigned", "requeue": "be requeued", "cancel": "be cancelled"}

NOT_REAPED = SETTLED  # agents known not to be running hold no lease worth reaping
LEASE_EXPIRED = "lease expired"


class TaskState(NamedTuple):
    """What the rules read of a task."""

    status: str
    attempt: int
    owner: str | None
    parent: str | None
    is_container: bool | int
    blockers_left: int  # effective blockers not completed


class Storage(Protocol):
    """One run's storage inside one atomic step of a backend."""

    run_id: str

    def policy(self) -> str: ...  # the run's on_blocker_failure

    def state(self, tid: str) -> TaskState: ...  # NotFound for a task the run does not have

    def set_task(self, tid: str, fields: dict) -> None: ...

    def emit(self, entity: str, entity_id: str, frm: str | None, to: str, now: int, agent: str | None = None,
             reason: str | None = None, data: dict | None = None,
             key: str | None = None) -> object: ...  # one history row

    def won_with(self, key: str) -> str | None: ...  # the task of the won claim row with this key, if any

    def waiting_on(self, tid: str) -> list[str]: ...  # its effective blockers not completed, by id

    def has_open_children(self, tid: str) -> bool: ...

    def first_uncompleted_child(self, tid: str) -> tuple[str, str] | None: ...  # (id, status), template order

    def open_dependents(self, tid: str) -> list[tuple[str, str]]: ...  # (id, status) it blocks, not terminal

    def open_descendants(self, tid: str) -> list[tuple[str, str]]: ...  # (id, status) below it, not terminal

    def agent_status(self, aid: str) -> str | None: ...  # None: no such agent

    def put_agent(self, agent: Agent) -> None: ...

    def set_agent(self, aid: str, fields: dict) -> None: ...

    def run_status(self) -> str: ...

    def set_run(self, fields: dict) -> None: ...


# ---------------------------------------------------------------------------- refusals
def _one_of(statuses: tuple[str, ...]) -> str:
    words = statuses[0] if len(statuses) == 1 else f"{', '.join(statuses[:-1])} or {statuses[-1]}"
    return f"{'an' if words[0] in 'aeiou' else 'a'} {words}"


def wrong_status(run_id: str, tid: str, verb: str, status: str, allowed: tuple[str, ...]) -> InvalidTransition:
    return InvalidTransition(f"run {run_id!r}: task {tid!r} is {status}; only {_one_of(allowed)} task can "
                             f"{_CAN.get(verb, verb)}")


def stale(run_id: str, tid: str, verb: str, agent: str | None, attempt: int | None, s: TaskState) -> StaleAttempt:
    return StaleAttempt(f"run {run_id!r}: {verb} of task {tid!r} by {agent!r} attempt {attempt} refused; "
                        f"it is {s.status}, owner {s.owner!r}, attempt {s.attempt}")


def check(st: Storage, verb: str, tid: str, agent: str | None = None, attempt: int | None = None) -> TaskState:
    """The task's state if ``verb`` may change it now, else the refusal: ``NotFound``, then for an
    agent's own verbs ``StaleAttempt`` (not the owner or attempt), then ``InvalidTransition``
    (status, readiness, open children)."""
    s = st.state(tid)
    if verb in OWNED and ((agent is not None and s.owner != agent) or (attempt is not None and s.attempt != attempt)):
        raise stale(st.run_id, tid, verb, agent, attempt, s)
    allowed = FAILED_BY_ORCHESTRATOR if verb == "fail" and agent is None and attempt is None else ALLOWED[verb]
    if s.status not in allowed:
        raise wrong_status(st.run_id, tid, verb, s.status, allowed)
    if verb == "assign" and s.status == "pending" and not s.is_container and s.blockers_left:
        raise InvalidTransition(f"run {st.run_id!r}: task {tid!r} is not ready: waiting on {', '.join(st.waiting_on(tid))}")
    if verb == "complete" and s.is_container and st.has_open_children(tid):
        raise InvalidTransition(f"run {st.run_id!r}: task {tid!r} is a container with unfinished children")
    return s


def ready(s: TaskState) -> bool:
    """Claimable: pending, work (not a container), every effective blocker completed."""
    return s.status in ALLOWED["claim"] and not s.is_container and not s.blockers_left


# ---------------------------------------------------------------------------- task verbs
def _move(st: Storage, tid: str, frm: str, fields: dict, now: int, agent: str | None = None,
          reason: str | None = None, data: dict | None = None) -> None:
    fields["updated_at"] = now
    st.set_task(tid, fields)
    st.emit("task", tid, frm, fields["status"], now, agent=agent, reason=reason, data=data)


def taken(agent: str, by: str, attempt: int, now: int) -> dict:
    """The fields of a claimed or assigned task: ``attempt`` is the new one (one more than it was)."""
    return {"status": TARGET["claim"], "owner": agent, "assigned_by": by, "attempt": attempt, "claimed_at": now,
            "started_at": None, "updated_at": now}


def took_rows(agent: str, by: str, frm: str, previous: str | None, attempt: int, claim: bool) -> list[tuple]:
    """The history rows, as (entity, from, to, data), of a task taken by ``agent`` for ``attempt``
    (its id and ``agent`` on each): a claim's ``won`` row first; a reassignment names the previous owner."""
    data = {"by": by, "attempt": attempt}
    if frm == "assigned":
        data["previous"] = previous
    task = ("task", frm, TARGET["claim"], data)
    return [("claim", None, "won", {"attempt": attempt}), task] if claim else [task]


def claimed_rows(agent: str, attempt: int) -> list[tuple]:
    """The rows of a won claim (``took_rows``): for a backend that writes the fields (``taken``) of
    the claimed task in one statement of its own."""
    return took_rows(agent, agent, ALLOWED["claim"][0], None, attempt, claim=True)


def take(st: Storage, tid: str, s: TaskState, agent: str, by: str, now: int, claim: bool = False,
         key: str | None = None) -> None:
    """``key``: a claim's idempotency key, carried by its ``won`` row."""
    st.set_task(tid, taken(agent, by, s.attempt + 1, now))
    for entity, frm, to, data in took_rows(agent, by, s.status, s.owner, s.attempt + 1, claim):
        st.emit(entity, tid, frm, to, now, agent=agent, data=data, key=key if entity == "claim" else None)


def replayed(st: Storage, key: str | None, agent: str) -> tuple[bool, str | None]:
    """A claim retried with the idempotency ``key`` of a claim already won (its response was lost):
    (True, the task it took if ``agent`` still owns it and it is not terminal, else None), and the
    retry writes nothing. (False, None): no claim won with this key (or no key): claim as usual."""
    if key is None:
        return False, None
    tid = st.won_with(key)
    if tid is None:
        return False, None
    s = st.state(tid)
    return True, (tid if s.owner == agent and s.status not in TERMINAL else None)


def claim(st: Storage, tid: str, agent: str, key: str | None, now: int) -> str | None:
    """Claim one named task: won if ready, else a ``lost`` row naming its status. Returns the task
    taken (``tid``; with a ``key`` already won, the task that claim took, see ``replayed``) or None."""
    again, took = replayed(st, key, agent)
    if again:
        return took
    s = st.state(tid)
    if not ready(s):
        st.emit("claim", tid, None, "lost", now, agent=agent, data={"status": s.status})
        return None
    take(st, tid, s, agent, agent, now, claim=True, key=key)
    return tid


def nothing_to_claim(st: Storage, agent: str, now: int) -> None:
    st.emit("claim", "", None, "empty", now, agent=agent)


def lost_race(st: Storage, seen: str | None, took: str | None, agent: str, now: int) -> bool:
    """Whether a ``claim_next`` that took ``took`` (None: nothing) lost the race for ``seen``, the
    task its caller saw as best when it looked; if so, writes the ``lost`` row for ``seen`` (data: its
    status now and what was taken). Call it inside the claim's atomic step, after the pick and
    before any won row. ``seen`` still ready is no lost race (nobody took it; a better task turned
    ready, or the caller's look did not match its claim): no row. ``NotFound`` for an unknown
    ``seen``."""
    if seen is None or seen == took:
        return False
    s = st.state(seen)
    if ready(s):
        return False
    st.emit("claim", seen, None, "lost", now, agent=agent, data={"status": s.status, "took": took})
    return True


def claim_outcome(st: Storage, seen: str | None, took: str | None, agent: str, now: int) -> None:
    """The rows of a ``claim_next`` besides a won pair, once the backend picked ``took`` (None:
    nothing claimable): the ``lost`` row of the race for ``seen`` if it was lost, and when nothing
    was taken and no race lost, the ``empty`` row (a look at an empty queue). Written before the
    won rows (``take`` / ``claimed_rows``), in the same atomic step."""
    if not lost_race(st, seen, took, agent, now) and took is None:
        nothing_to_claim(st, agent, now)


def assign(st: Storage, tid: str, agent: str, by: str, now: int) -> None:
    take(st, tid, check(st, "assign", tid), agent, by, now)


def start(st: Storage, tid: str, agent: str, attempt: int, now: int) -> None:
    s = check(st, "start", tid, agent, attempt)
    _move(st, tid, s.status, {"status": TARGET["start"], "started_at": now}, now, agent=agent, data={"attempt": attempt})


def complete(st: Storage, tid: str, agent: str, attempt: int, data: dict | None, now: int) -> None:
    """The task keeps its last reason (why it was last requeued); the row has none."""
    s = check(st, "complete", tid, agent, attempt)
    _move(st, tid, s.status, {"status": TARGET["complete"], "completed_by": agent, "completed_at": now}, now,
          agent=agent, data=data)
    settle(st, tid, TARGET["complete"], now)


def fail(st: Storage, tid: str, agent: str | None, attempt: int | None, reason: str, now: int) -> None:
    s = check(st, "fail", tid, agent, attempt)
    _move(st, tid, s.status, {"status": TARGET["fail"], "reason": reason}, now, agent=agent, reason=reason)
    settle(st, tid, TARGET["fail"], now)


def cancel(st: Storage, tid: str, reason: str, by: str | None, now: int) -> None:
    s = check(st, "cancel", tid)
    _move(st, tid, s.status, {"status": TARGET["cancel"], "reason": reason}, now, agent=by, reason=reason)
    settle(st, tid, TARGET["cancel"], now)


def requeue(st: Storage, tid: str, reason: str, by: str | None, now: int) -> None:
    """Back to pending, owner cleared (kept in ``data.previous``), attempt kept (the next claim
    increments it); failed ancestor containers reopen (their failure was this child's)."""
    s = check(st, "requeue", tid)
    _reopen(st, tid, s, reason, by, now)
    p = s.parent
    while p is not None:
        ps = st.state(p)
        if ps.status != "failed":
            break
        _reopen(st, p, ps, f"child {tid} requeued", by, now)
        p = ps.parent


def _reopen(st: Storage, tid: str, s: TaskState, reason: str, by: str | None, now: int) -> None:
    fields = {"status": TARGET["requeue"], "owner": None, "assigned_by": None, "claimed_at": None, "started_at": None,
              "reason": reason}
    _move(st, tid, s.status, fields, now, agent=by, reason=reason, data={"previous": s.owner} if s.owner else None)


# ---------------------------------------------------------------------------- cascades
def settle(st: Storage, tid: str, status: str, now: int) -> None:
    """The consequences of ``tid`` having just become ``status`` (terminal), in the same step.

    completed: its dependents lose one blocker (the storage keeps that count). failed (policy
    ``cancel``) or cancelled: every open dependent is cancelled, naming the blocker that started
    the chain. A failed or cancelled container takes its open descendants with it. Then the parent
    container completes (all children completed) or fails (all terminal, not all completed), and
    so on up."""
    _drain(st, deque([(tid, status, tid, status)]), now)


def close_containers(st: Storage, containers: list[str], now: int) -> None:
    """Complete or fail each open container whose children are all terminal (an imported graph),
    each with its cascade."""
    queue: deque = deque()
    for p in containers:
        _close(st, p, queue, now)
        _drain(st, queue, now)


def _drain(st: Storage, queue: deque, now: int) -> None:
    while queue:
        tid, status, origin, origin_status = queue.popleft()
        s = st.state(tid)
        if status in UNSUCCESSFUL:
            if status == "cancelled" or st.policy() == "cancel":
                why = f"blocker {origin} {origin_status}"
                data = {"blocker": origin} if origin == tid else {"blocker": origin, "via": tid}
                for dep, dep_status in st.open_dependents(tid):
                    _move(st, dep, dep_status, {"status": "cancelled", "reason": why}, now, reason=why, data=data)
                    queue.append((dep, "cancelled", origin, origin_status))
            if s.is_container:
                why = f"container {tid} {status}"
                for sub, sub_status in st.open_descendants(tid):
                    _move(st, sub, sub_status, {"status": "cancelled", "reason": why}, now, reason=why,
                          data={"container": tid})
                    queue.append((sub, "cancelled", tid, status))
        if s.parent is not None:
            _close(st, s.parent, queue, now)


def _close(st: Storage, p: str, queue: deque, now: int) -> None:
    ps = st.state(p)
    if ps.status in TERMINAL or not ps.is_container or st.has_open_children(p):
        return
    child = st.first_uncompleted_child(p)
    if child is None:
        to = "completed"
        _move(st, p, ps.status, {"status": to, "reason": None, "completed_at": now}, now, reason="all children completed")
    else:
        to, why = "failed", f"children not all completed: {child[0]} {child[1]}"
        _move(st, p, ps.status, {"status": to, "reason": why}, now, reason=why, data={"child": child[0]})
    queue.append((p, to, p, to))  # a failed container is the blocker its dependents name


# ---------------------------------------------------------------------------- agents
def register(st: Storage, agent: Agent, lease_ms: int | None, now: int) -> Agent:
    """Create or re-register (respawn) an agent: ``registered``, lease from now."""
    old = st.agent_status(agent.id)
    a = agent.model_copy(update={
        "status": "registered", "registered_at": now, "last_heartbeat": now,
        "lease_expires": agent.lease_expires if lease_ms is None else now + lease_ms,
    })  # fmt: skip
    st.put_agent(a)
    st.emit("agent", a.id, old, "registered", now, agent=a.id, reason="respawned" if old else None,
            data={"pid": a.pid, "kind": a.kind})
    return a


def _agent(st: Storage, aid: str) -> str:
    old = st.agent_status(aid)
    if old is None:
        raise NotFound(f"run {st.run_id!r}: no agent {aid!r}")
    return old


def check_agent_status(aid: str, status: str) -> None:
    if status not in AGENT_STATUSES:
        raise InvalidTransition(f"agent {aid!r}: unknown status {status!r}; one of {', '.join(AGENT_STATUSES)}")


def set_agent_status(st: Storage, aid: str, status: str, reason: str | None, data: dict | None, now: int) -> None:
    """Setting the current status again writes nothing."""
    check_agent_status(aid, status)
    old = _agent(st, aid)
    if old != status:
        st.set_agent(aid, {"status": status})
        st.emit("agent", aid, old, status, now, agent=aid, reason=reason, data=data)


def expired(status: str, lease_expires: int | None, now: int) -> bool:
    """Whether ``reap_expired(now)`` takes this agent (``now`` as given, not raised)."""
    return status not in NOT_REAPED and lease_expires is not None and lease_expires < now


def reap(st: Storage, aid: str, owned: list[str], now: int) -> None:
    """An expired agent is ``dead``; the tasks it ``owned`` (assigned or working) are requeued."""
    old = _agent(st, aid)
    st.set_agent(aid, {"status": "dead", "current_task": None})
    st.emit("agent", aid, old, "dead", now, agent=aid, reason=LEASE_EXPIRED)
    for tid in owned:
        requeue(st, tid, f"{LEASE_EXPIRED}: agent {aid}", None, now)


# ---------------------------------------------------------------------------- runs
def finish_run(st: Storage, status: str, reason: str | None, now: int) -> None:
    """Finishing with the current status writes nothing."""
    if status not in RUN_FINAL:
        raise InvalidTransition(f"run {st.run_id!r}: cannot finish as {status!r}; one of {', '.join(RUN_FINAL)}")
    old = st.run_status()
    if old != status:
        st.set_run({"status": status, "finished_at": now, "reason": reason})
        st.emit("run", st.run_id, old, status, now, reason=reason)


def reopen_needed(run_id: str, status: str) -> bool:
    """The rule of ``reopen_run``: an ``interrupted`` run reopens (True), a ``running`` one is left
    as it is (False), an ended one is refused."""
    if status in RUN_OVER:
        raise InvalidTransition(f"run {run_id!r} already {status}; only an interrupted run can be resumed")
    return status != "running"


def reopen_run(st: Storage, reason: str | None, now: int) -> None:
    old = st.run_status()
    if reopen_needed(st.run_id, old):
        st.set_run({"status": "running", "finished_at": None, "reason": reason})
        st.emit("run", st.run_id, old, "running", now, reason=reason)
