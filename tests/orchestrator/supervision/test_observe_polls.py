"""An agent-driven agent waiting for work polls the coordination tools with the same arguments again
and again (``poll`` steps): a sign of life, not a loop. The same steps without the mark are a loop."""

from __future__ import annotations

from agents.events import args_digest
from coordstore.models import Event
from orchestrator.supervision.observe import EventState
from orchestrator.supervision.verdicts import AgentObservation, SupervisionConfig, judge

T0 = 1_700_000_000_000
CFG = SupervisionConfig(stall_after_ms=10_000, loop_repeats=5)


def step(seq: int, poll: bool, task: str | None = None) -> Event:
    args = {"owner": "w1", "status": "assigned"}
    data = {"name": "list_tasks", "digest": args_digest(args), "tool": True, **({"poll": True} if poll else {})}
    return Event(agent="w1", seq=seq, ts_ms=T0 + 100 * seq, type="step", task=task, data=data)


def verdicts(poll: bool, current_task=None) -> list[str]:
    """Twenty looks, 100 ms apart, judged after each (the agent holds ``current_task``)."""
    st, track, kinds = EventState(), None, []
    for i in range(20):
        st.fold([step(i, poll)])
        obs = AgentObservation(agent="w1", alive=True, last_event_ms=st.last_event_ms, recent_steps=tuple(st.steps),
                               current_task=current_task)
        v, track = judge(track, obs, CFG, T0 + 100 * i + 50)
        kinds.append(v.kind)
    return kinds


def test_a_waiting_agents_polls_are_never_a_loop():
    assert set(verdicts(poll=True)) == {"idle"}
    # a hybrid worker owning its subtree (an assigned container) waits for work inside it the same way
    assert set(verdicts(poll=True, current_task=("unit", 1))) == {"active"}


def test_the_same_calls_unmarked_are_a_loop():
    kinds = verdicts(poll=False, current_task=("t1", 1))
    assert kinds.index("looping") == CFG.loop_repeats - 1  # the fifth identical call


def test_polls_keep_the_agent_alive_in_the_supervisors_eyes():
    st = EventState()
    st.fold([step(0, True), step(1, True)])
    assert st.last_event_ms == T0 + 100 and list(st.steps) == []
