"""Supervision: judge every agent each tick and climb the recovery ladder.

``Supervisor.tick(now)`` first lets the store reap expired leases (``store.reap_expired(now)``:
an agent that stopped renewing its lease -- SIGSTOPped, hung, on a host that went away -- is
``dead`` with reason ``lease expired`` and its tasks are requeued in the same step, each row
naming the lease; a task that had used ``max_retries`` attempts then fails, as below). Then it
asks the ``Controller`` for an observation of every agent, judges it (``verdicts.judge``, pure;
a reaped agent is ``dead`` whatever its process looks like, the process state is evidence),
records each *change* of verdict with ``store.set_agent_status`` (the evidence in the
transition's data), and for ``stalled`` / ``looping`` / ``dead`` climbs:

1. kill the process group (the controller does SIGTERM, grace, SIGKILL) and set the agent
   ``killed``: the verdict's summary is the reason, the backoff and due respawn are in the row's
   data. If something survives, the error goes into that row and the ladder goes on: the requeue
   bumps the attempt, so the store refuses any late write of the old process;
2. the agent's current task: ``store.fail`` if it has used ``max_retries`` attempts (the reason
   names every verdict and expired lease that cost it an attempt), else ``controller.avoid``
   (routing hint) and ``store.requeue`` with the verdict as reason (the next claim/assign
   increments the attempt). Other work tasks it held but had not started are requeued too:
   their process is gone. A reaped agent holds none any more: its tasks are requeued once;
3. respawn the runner after ``backoff_ms(consecutive failures)``; a later tick performs it once
   ``now >= due`` (nothing sleeps);
4. once the slot has failed ``max_retries`` times in a row, it respawns as ``fallback_kind``
   (and stays that kind). A streak ends when the agent completes a task;
5. when every agent (two or more) has failed ``circuit_failures`` times in a row, the circuit
   opens: ``controller.degrade(keep)`` once, recorded as a ``degraded`` note on the run
   (idempotency key ``degrade:<run>``), and the other agents' tasks are requeued.

An agent's history is one chain of statuses (coordstore/chains.py): ``... -> stalled -> killed
-> registered`` (the respawned runner's registration) ``-> idle ...``, or ``... -> dead`` (the
reap, reason ``lease expired``) ``-> killed -> registered ...``. Actions that change no
status are notes (``store.note``: the row repeats the status, ``data.action`` names it):
``respawned`` (with the fallback and the streak) and ``respawn-failed`` (the slot stays
``killed``). Store writes made here use ``by="supervisor"``. A new Supervisor (after ``orch
resume``) starts with empty streaks but knows from the history whether the run was already degraded.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

from coordstore.base import CoordStore
from coordstore.errors import MOVED_ON, NotFound, OrchError
from coordstore.models import ACTIVE, FAILURES, Task, Transition
from coordstore.statemachine import LEASE_EXPIRED, expired  # the reap's rule and how its rows begin

from orchestrator.supervision.verdicts import AgentObservation, SupervisionConfig, Track, Verdict, judge

SUPERVISOR = "supervisor"  # the `by` of every store write the supervisor makes
DEGRADED = "degraded"  # the action of the run note written when the circuit opens


@runtime_checkable
class Controller(Protocol):
    """What the supervisor needs from whoever runs the agent processes (the orchestrator)."""

    def agents(self) -> list[str]:
        """Ids of the agents to supervise now (degraded-away agents are no longer listed)."""

    def observe(self, agent: str, now: int) -> AgentObservation:
        """The agent's current process as seen at ``now``: only events of that process count
        (after a respawn, ``last_event_ms`` and ``recent_steps`` start empty)."""

    def kill(self, agent: str) -> None:
        """Stop the agent's whole process group (SIGTERM, ``kill_grace_s``, SIGKILL); no survivor."""

    def respawn(self, agent: str, kind: str | None) -> None:
        """Start a fresh runner for ``agent``; ``kind`` None = its configured kind."""

    def degrade(self, keep: str) -> None:
        """Stop every agent but ``keep`` for good; ``keep`` works through the tasks alone."""

    def avoid(self, task_id: str, agent: str) -> None:
        """Routing hint: give ``task_id`` to another agent than ``agent`` where the policy allows."""


@dataclass
class Slot:
    """The supervisor's memory of one agent slot (across its respawns)."""

    track: Track | None = None  # judge's state for the current process
    status: str | None = None  # last status recorded in the store
    failures: int = 0  # consecutive failures (kills) of this slot
    total_failures: int = 0
    last_failure: str | None = None
    respawn_due_ms: int | None = None  # set while killed and waiting for its respawn
    kind: str | None = None  # kind for respawns once fallen back (None = its own)
    retired: bool = False  # dropped by degrade: never judged or respawned again

    @property
    def down(self) -> bool:
        return self.respawn_due_ms is not None


class Supervisor:
    def __init__(self, store: CoordStore, run_id: str, config: SupervisionConfig | None, controller: Controller):
        """``config`` None = the defaults. Every agent ``controller.agents()`` lists must be
        registered in the store (verdicts are recorded with ``set_agent_status``)."""
        self.store = store
        self.run_id = run_id
        self.config = config if config is not None else SupervisionConfig()
        self.controller = controller
        self.slots: dict[str, Slot] = {}
        self.degraded = any(r.data.get("action") == DEGRADED for r in store.history(run_id, entity="run"))

    # ------------------------------------------------------------------ the loop step
    def tick(self, now: int) -> list[Verdict]:
        """Reap expired leases, judge every agent at ``now`` (ms) and act; returns the verdicts of
        the agents judged (agents waiting for their respawn have no process to judge)."""
        reaped = self._reap(now)
        agents = list(self.controller.agents())
        verdicts: list[Verdict] = []
        for agent in agents:
            slot = self.slots.setdefault(agent, Slot())
            if slot.retired:
                continue
            if slot.down:
                if now < slot.respawn_due_ms:  # type: ignore[operator]
                    continue
                if not self._respawn(agent, slot, now):
                    continue
            verdicts.append(self._judge(agent, slot, now, agent in reaped))
        self._circuit([a for a in agents if not self.slots[a].retired], now)
        return verdicts

    def _reap(self, now: int) -> set[str]:
        """The agents whose lease ran out at ``now``, reaped by the store (module docstring)."""
        agents = self.store.list_agents(self.run_id)
        if not any(expired(a.status, a.lease_expires, now) for a in agents):
            return set()  # nothing can have run out: spare the store a write
        was = {a.id: a.status for a in agents}
        for tid in self.store.reap_expired(self.run_id, now):
            rows = self.store.history(self.run_id, entity="task", entity_id=tid)
            if rows and rows[-1].from_state == "working":  # it cost an attempt, like the ladder's current task
                try:
                    self._give_up_if_exhausted(self.store.get_task(self.run_id, tid), None, now)
                except MOVED_ON:
                    continue
        return {a.id for a in self.store.list_agents(self.run_id) if a.status == "dead" and was.get(a.id) != "dead"}

    def _judge(self, agent: str, slot: Slot, now: int, lease_expired: bool = False) -> Verdict:
        before = slot.track.obs.current_task if slot.track else None
        obs = self.controller.observe(agent, now)
        if lease_expired:
            obs = replace(obs, lease_expired=True)
        verdict, slot.track = judge(slot.track, obs, self.config, now)
        if verdict.kind != slot.status:
            self.store.set_agent_status(self.run_id, agent, verdict.kind, reason=verdict.summary, data=verdict.evidence, now=now)
            slot.status = verdict.kind
        if verdict.failed:
            self._climb(agent, slot, verdict, obs, now)
        elif before and before != obs.current_task and self._completed_by(before[0], agent):
            slot.failures = 0  # it finished a task: the failure streak is over
        return verdict

    # ------------------------------------------------------------------ the ladder
    def _climb(self, agent: str, slot: Slot, verdict: Verdict, obs: AgentObservation, now: int) -> None:
        cfg = self.config
        kill_error = None
        try:
            self.controller.kill(agent)
        except OrchError as e:  # a survivor of SIGKILL: go on, the attempt fence refuses its writes
            kill_error = str(e)
        slot.failures += 1
        slot.total_failures += 1
        slot.last_failure = verdict.kind
        if cfg.fallback_kind is not None and slot.failures >= cfg.max_retries:
            slot.kind = cfg.fallback_kind
        delay = cfg.backoff_ms(slot.failures)
        slot.respawn_due_ms = now + delay
        slot.track = None
        evidence = {"verdict": verdict.kind, "failures": slot.failures, "backoff_ms": delay,
                    "respawn_due_ms": slot.respawn_due_ms, "respawn_kind": slot.kind}
        if kill_error:
            evidence["kill_error"] = kill_error
        self.store.set_agent_status(self.run_id, agent, "killed", reason=verdict.summary, data=evidence, now=now)
        slot.status = "killed"
        self._settle_tasks(agent, verdict.kind, obs.current_task, now)

    def _settle_tasks(self, agent: str, kind: str, current: tuple[str, int] | None, now: int) -> None:
        """Fail or requeue the task the failed agent was on; requeue its other work tasks."""
        owned = self._owned_work(agent)
        if current is None:  # the controller did not say: the task it was working on
            current = next(((t.id, t.attempt) for t in owned if t.status == "working"), None)
        for t in owned:
            try:
                if current and t.id == current[0]:
                    if self._give_up_if_exhausted(t, kind, now):
                        continue
                    self.controller.avoid(t.id, agent)
                self.store.requeue(self.run_id, t.id, reason=kind, by=SUPERVISOR, now=now)
            except MOVED_ON:
                continue

    def _give_up_if_exhausted(self, t: Task, why: str | None, now: int) -> bool:
        """Fail ``t`` once it has used ``max_retries`` attempts, the reason naming every failure
        that cost one (and ``why``, this one, if no row names it yet); True if it failed."""
        if t.attempt < self.config.max_retries:
            return False
        reasons = self._failure_reasons(t.id) + ([why] if why else [])
        reason = f"{', '.join(reasons)} after {t.attempt} attempts (max_retries {self.config.max_retries})"
        self.store.fail(self.run_id, t.id, None, None, reason=reason, now=now)
        return True

    def _respawn(self, agent: str, slot: Slot, now: int) -> bool:
        """Perform a due respawn; a failing respawn counts as one more failure and backs off."""
        slot.respawn_due_ms = None
        slot.track = None
        try:
            self.controller.respawn(agent, slot.kind)
        except OrchError as e:
            slot.failures += 1
            slot.total_failures += 1
            delay = self.config.backoff_ms(slot.failures)
            slot.respawn_due_ms = now + delay
            self._note(agent, "respawn-failed", str(e), now, failures=slot.failures, respawn_due_ms=slot.respawn_due_ms)
            return False
        if self.store.get_agent(self.run_id, agent).status == "killed":  # the controller did not re-register it
            self.store.set_agent_status(self.run_id, agent, "registered", reason="respawned", now=now)
        reason = f"respawn after {slot.last_failure} ({slot.failures} failure(s) in a row)"
        row = self._note(agent, "respawned", reason, now, kind=slot.kind, fallback=slot.kind is not None, failures=slot.failures)
        slot.status = row.to_state if row else None
        return True

    def _circuit(self, agents: list[str], now: int) -> None:
        """Open the circuit once when every agent is failing: one agent goes on alone."""
        n = self.config.circuit_failures
        if self.degraded or len(agents) < 2 or any(self.slots[a].failures < n for a in agents):
            return
        keep = min(agents, key=lambda a: (self.slots[a].failures, self.slots[a].down, self.slots[a].total_failures, a))
        self.controller.degrade(keep)
        self.degraded = True
        self.store.note(
            self.run_id, "run", self.run_id, DEGRADED, agent=keep,
            reason=f"circuit open: every agent failed {n}+ times in a row; {keep} goes on alone, sequentially",
            data={"keep": keep, "failures": {a: self.slots[a].failures for a in agents}},
            key=f"degrade:{self.run_id}", now=now,
        )
        for a in agents:
            if a == keep:
                continue
            self.slots[a].retired = True
            self.slots[a].respawn_due_ms = None
            for t in self._owned_work(a):
                try:
                    self.store.requeue(self.run_id, t.id, reason="degraded", by=SUPERVISOR, now=now)
                except MOVED_ON:
                    continue

    # ------------------------------------------------------------------ store helpers
    def _owned_work(self, agent: str) -> list[Task]:
        """Assigned/working tasks of ``agent`` that are work, not containers (subtree ownership)."""
        owned = self.store.list_tasks(self.run_id, status=ACTIVE, owner=agent)
        return [t for t in owned if not self.store.list_tasks(self.run_id, parent=t.id)]

    def _failure_reasons(self, task_id: str) -> list[str]:
        rows = self.store.history(self.run_id, entity="task", entity_id=task_id)
        return [r.reason for r in rows if r.to_state == "pending" and r.reason
                and (r.reason in FAILURES or r.reason.startswith(LEASE_EXPIRED))]

    def _completed_by(self, task_id: str, agent: str) -> bool:
        try:
            t = self.store.get_task(self.run_id, task_id)
        except NotFound:
            return False
        return t.status == "completed" and t.completed_by == agent

    def _note(self, agent: str, action: str, reason: str, now: int, **data: Any) -> Transition | None:
        return self.store.note(self.run_id, "agent", agent, action, reason=reason, agent=agent, data=data, now=now)


__all__ = ["Controller", "SUPERVISOR", "Slot", "Supervisor", "SupervisionConfig", "AgentObservation", "Verdict", "judge"]
