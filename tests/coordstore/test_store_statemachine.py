"""One state machine on every backend: every verb from every task status gives the same outcome
(allowed: the same new status, attempt, owner and rows; refused: the same error class and text),
and that outcome is the table written here, which ``coordstore/statemachine.py`` must hold too."""

from __future__ import annotations

import pytest

from coordstore import BACKENDS, open_store
from coordstore.errors import InvalidTransition, OrchError, StaleAttempt
from coordstore.models import TASK_STATUSES, Agent, Run

from conftest import FakeClock, make_graph, make_store_url
from contract_helpers import refused, state

RUN = "r"
# verb (and the caller's variant) -> the statuses it moves a task from, as base.py documents them
ALLOWED_FROM = {
    "claim": {"pending"},
    "assign": {"pending", "assigned"},
    "start": {"assigned"},
    "complete": {"assigned", "working"},
    "fail": {"assigned", "working"},
    "fail-by-orchestrator": {"pending", "assigned", "working"},
    "requeue": {"assigned", "working", "failed"},
    "cancel": {"pending", "assigned", "working"},
}
TARGET = {"claim": "assigned", "assign": "assigned", "start": "working", "complete": "completed", "fail": "failed",
          "requeue": "pending", "cancel": "cancelled"}
AGENTS_OWN = {"start", "complete", "fail"}  # an agent's own attempt: the owner and attempt are checked first
STALE = ("start-stale-attempt", "complete-by-another")  # calls that never own the attempt
# the refusal's text after "task 't' is <status>; "
ONLY = {
    "assign": "only a pending or assigned task can be assigned",
    "start": "only an assigned task can start",
    "complete": "only an assigned or working task can complete",
    "fail": "only an assigned or working task can fail",
    "fail-by-orchestrator": "only a pending, assigned or working task can fail",
    "requeue": "only an assigned, working or failed task can be requeued",
    "cancel": "only a pending, assigned or working task can be cancelled",
}
# every task but a pending one was claimed by w1 (attempt 1); the owner stays once it ends
SETUP = {
    "pending": [],
    "assigned": ["claim"],
    "working": ["claim", "start"],
    "completed": ["claim", "start", "complete"],
    "failed": ["claim", "start", "fail"],
    "cancelled": ["claim", "cancel"],
}


def caller(verb: str, owner: str | None, attempt: int) -> tuple[str, int]:
    """Who calls an agent's own verb, with which attempt: the owner (w1 when there is none) with
    the current attempt, but for the ``STALE`` calls."""
    return {"start-stale-attempt": (owner or "w1", attempt + 1), "complete-by-another": ("w9", attempt)}.get(
        verb, (owner or "w1", attempt))


def call(store, verb: str, agent: str, attempt: int):
    """The verb on task ``t``."""
    return {
        "claim": lambda: store.claim(RUN, "t", "w2"),
        "assign": lambda: store.assign(RUN, "t", "w2", by="lead"),
        "start": lambda: store.start(RUN, "t", agent, attempt),
        "complete": lambda: store.complete(RUN, "t", agent, attempt, data={"sha": "abc"}),
        "fail": lambda: store.fail(RUN, "t", agent, attempt, "broken"),
        "fail-by-orchestrator": lambda: store.fail(RUN, "t", None, None, "dropped"),
        "requeue": lambda: store.requeue(RUN, "t", "retry", by="sup"),
        "cancel": lambda: store.cancel(RUN, "t", "scope cut", by="lead"),
        "start-stale-attempt": lambda: store.start(RUN, "t", agent, attempt),
        "complete-by-another": lambda: store.complete(RUN, "t", agent, attempt),
    }[verb]()


def outcome(store, clock, status: str, verb: str) -> tuple:
    """Bring task ``t`` to ``status``, call ``verb``: ("done", task, new rows) or ("refused", class, text)."""
    store.create_run(Run(id=RUN))
    store.add_graph(RUN, make_graph(["t", "u"]))
    steps = {"claim": lambda: store.claim(RUN, "t", "w1"), "start": lambda: store.start(RUN, "t", "w1", 1),
             "complete": lambda: store.complete(RUN, "t", "w1", 1), "fail": lambda: store.fail(RUN, "t", "w1", 1, "boom"),
             "cancel": lambda: store.cancel(RUN, "t", "cut", by="lead")}
    for step in SETUP[status]:
        clock.advance(10)
        steps[step]()
    t = store.get_task(RUN, "t")
    assert t.status == status
    before = state(store, RUN)
    clock.advance(10)
    try:
        call(store, verb, *caller(verb, t.owner, t.attempt))
    except OrchError as e:
        assert state(store, RUN) == before, f"{verb} from {status}: a refused call changed the store"
        return "refused", type(e), str(e)
    return "done", store.get_task(RUN, "t"), store.history(RUN, since_seq=len(before[0]))


def expected(status: str, verb: str) -> tuple:
    """What the table says: (class, text) of a refusal, or (new status, attempt, owner)."""
    owner, attempt = (None, 0) if status == "pending" else ("w1", 1)
    name = verb.split("-")[0]
    agent, tried = caller(verb, owner, attempt)
    if name in AGENTS_OWN and verb != "fail-by-orchestrator" and (agent, tried) != (owner, attempt):
        return StaleAttempt, (f"run {RUN!r}: {name} of task 't' by {agent!r} attempt {tried} refused; "
                              f"it is {status}, owner {owner!r}, attempt {attempt}")
    if status not in ALLOWED_FROM[verb]:
        if verb == "claim":
            return status, attempt, owner  # a lost claim: nothing changes but its claim row
        return InvalidTransition, f"run {RUN!r}: task 't' is {status}; {ONLY[verb]}"
    to, taken = TARGET[name], name in ("claim", "assign")
    return to, attempt + taken, "w2" if taken else None if to == "pending" else owner


def test_the_state_machine_holds_the_table():
    from coordstore import statemachine as sm

    assert {v: set(s) for v, s in sm.ALLOWED.items()} == {v: s for v, s in ALLOWED_FROM.items() if v in sm.ALLOWED}
    assert set(sm.FAILED_BY_ORCHESTRATOR) == ALLOWED_FROM["fail-by-orchestrator"]
    assert sm.TARGET == TARGET and set(sm.OWNED) == AGENTS_OWN


@pytest.mark.parametrize("status", TASK_STATUSES)
def test_every_verb_from_every_status_is_the_same_on_every_backend(tmp_path, status):
    for verb in (*ALLOWED_FROM, *STALE):
        got = {}
        for backend in sorted(BACKENDS):
            clock = FakeClock()
            with open_store(make_store_url(backend, tmp_path / f"{verb}-{backend}"), clock=clock) as store:
                got[backend] = out = outcome(store, clock, status, verb)
            if backend == "postgresql" and out[0] != "refused":  # it keys every claim itself (lost-response retry)
                assert all(r.key for r in out[2] if r.entity == "claim" and r.to_state == "won")
                got[backend] = (*out[:2], [r.model_copy(update={"key": None}) if r.entity == "claim" else r
                                           for r in out[2]], *out[3:])
        want = expected(status, verb)
        for backend, out in got.items():
            where = f"{verb} from {status} on {backend}"
            if out[0] == "refused":
                assert out[1:] == want, where
            else:
                task, rows = out[1], out[2]
                assert (task.status, task.attempt, task.owner) == want, where
                if verb == "claim":
                    assert rows[0].entity == "claim" and rows[0].to_state == ("won" if status == "pending" else "lost")
                else:
                    assert (rows[0].entity_id, rows[0].from_state, rows[0].to_state) == ("t", status, want[0]), where
        first, *others = got.values()
        for other in others:
            assert other == first, f"{verb} from {status}: the backends differ"


# ---------------------------------------------------------------------------- exact texts, per backend
def test_refusals_that_need_more_than_the_status(store, new_run):
    run = new_run(["a", "b", "c", "P", "p1"], [("a", "blocks", "c"), ("b", "blocks", "c"), ("P", "contains", "p1")])
    with refused(store, run, InvalidTransition) as e:
        store.assign(run, "c", "w1", by="lead")
    assert str(e.value) == "run 'r': task 'c' is not ready: waiting on a, b"
    p = store.assign(run, "P", "lead", by="coord")
    with refused(store, run, InvalidTransition) as e:
        store.complete(run, "P", "lead", p.attempt)
    assert str(e.value) == "run 'r': task 'P' is a container with unfinished children"


def test_agent_and_run_refusals(store, new_run):
    run = new_run(["a"])
    store.register_agent(run, Agent(id="w1"), lease_ms=1000)
    with refused(store, run, InvalidTransition) as e:
        store.set_agent_status(run, "w1", "asleep")
    assert str(e.value).startswith("agent 'w1': unknown status 'asleep'; one of registered, active, ")
    with refused(store, run, InvalidTransition) as e:
        store.finish_run(run, "done")
    assert str(e.value) == "run 'r': cannot finish as 'done'; one of finished, failed, interrupted"
    store.finish_run(run, "failed")
    with refused(store, run, InvalidTransition) as e:
        store.reopen_run(run)
    assert str(e.value) == "run 'r' already failed; only an interrupted run can be resumed"
