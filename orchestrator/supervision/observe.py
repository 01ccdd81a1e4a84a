"""What the supervisor sees of one agent: its process, its ingested events, its log, its task.

Events are read from the store incrementally (a cursor per agent), so one observation costs one
small query, not a rescan of the agent's history.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from coordstore.models import ACTIVE

from agents.kinds import time_scaled

from orchestrator.supervision.verdicts import AgentObservation

RECENT_STEPS = 32  # enough for any sensible loop_repeats


@dataclass
class EventState:
    """Per-agent facts folded from its events since the orchestrator started watching."""

    cursor: int = -1
    last_event_ms: int | None = None
    steps: deque = field(default_factory=lambda: deque(maxlen=RECENT_STEPS))
    rate_limited_until_ms: int | None = None
    done: bool = False

    def fold(self, events) -> None:
        for e in events:
            self.cursor = max(self.cursor, e.seq)
            self.last_event_ms = max(self.last_event_ms or 0, e.ts_ms)
            if e.type == "started":  # a new process: its predecessor's steps and pause are history
                self.steps.clear()
                self.rate_limited_until_ms = None
                self.done = False
            elif e.type == "step" and not e.data.get("poll"):
                # a poll (an agent-driven agent looking again, with backoff, for work: list_tasks
                # with the same arguments) proves life but is no loop: waiting is its job then
                self.steps.append(f"{e.data.get('name')}:{e.data.get('digest')}")
            elif e.type == "rate_limited":
                self.rate_limited_until_ms = e.ts_ms + int(float(e.data.get("retry_after", 0)) * 1000)
            elif e.type == "done":
                self.done = True


def observe_agent(ctl, agent_id: str, now: int) -> AgentObservation:
    """Build the observation of ``agent_id`` for ``Supervisor.tick`` from ``RunController`` state.
    Its ``time_scale`` is the run's when the agent's current kind is time-scaled, else 1."""
    states: dict[str, EventState] = ctl.event_states
    st = states.setdefault(agent_id, EventState())
    st.fold(ctl.store.read_events(ctl.spec.run_id, agent=agent_id, since_seq=st.cursor))
    proc = ctl.procs.get(agent_id)
    local = proc is not None  # else its runner lives elsewhere: the lease and its events tell
    alive = proc.alive() if local else True
    exit_code = None if not local or alive else proc.returncode
    cpu, ctx, state = 0.0, 0, None
    if local and alive:
        state = proc.state()
        stats = proc.stats(tick=now)  # None when the process ended since alive(): judged next tick
        if stats is not None:
            cpu, ctx = stats.cpu_s, stats.ctx_voluntary
    log_bytes = sum(p.stat().st_size for p in ctl.paths.logs.glob(f"{agent_id}.*") if p.is_file())
    scaled = time_scaled(ctl.kind_of(agent_id))
    current = None
    for t in ctl.store.list_tasks(ctl.spec.run_id, status=ACTIVE, owner=agent_id):
        if t.status == "working" or current is None:
            current = (t.id, t.attempt)
    return AgentObservation(
        agent=agent_id,
        alive=alive,
        exit_code=exit_code,
        last_event_ms=st.last_event_ms,
        ctx_switches=ctx,
        cpu_s=cpu,
        log_bytes=log_bytes,
        recent_steps=tuple(st.steps),
        current_task=current,
        rate_limited_until_ms=st.rate_limited_until_ms,
        finished=st.done and (not local or (not alive and exit_code == 0)),
        time_scale=ctl.spec.time_scale if scaled else 1.0,
        local=local,
        process_state=state,
        # a real agent playing a role (a CLI session) proves life by its output alone; the sim's
        # runner beats for it, and its hangs are expired leases
        driven=ctl.spec.coordination == "agents" and not scaled,
    )
