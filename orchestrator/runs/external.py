"""The supervisor's ``Controller`` for a run whose runners live on workers (``workers: external``).

No runner is local: there is nothing to spawn, observe or kill here. ``spawn_all`` registers each
agent without a lease (an untaken slot is never reaped) and opens its slot; a worker takes it and
registers the agent with its runner's lease (``orchestrator.runs.worker``). The observation is the
lease and the events the worker ingests (``observe_agent`` with no local process). ``kill`` closes
the slot's next generation (its worker stops the runner; the supervisor requeues its tasks, as
the reap already did for an expired lease); ``respawn`` reopens it for any worker, with the
fallback kind when the supervisor chose one; ``degrade`` closes the others for good.
"""

from __future__ import annotations

from coordstore.models import SETTLED, Agent

from orchestrator.rundir import RunPaths, RunSpec
from orchestrator.runs.slots import SlotTable, close_slot, open_slot
from orchestrator.supervision.control import AgentRoster


class ExternalController(AgentRoster):
    def __init__(self, spec: RunSpec, paths: RunPaths, store):
        super().__init__(spec, paths, store)
        self.table = SlotTable(spec.run_id)

    def _slot(self, agent_id: str):
        return self.table.refresh(self.store).get(agent_id)

    def _unleased(self, agent_id: str) -> None:
        """(Re-)register the agent with no lease: nothing to reap until a worker's runner holds it."""
        a = self.agent(agent_id)
        self.store.register_agent(self.spec.run_id, Agent(id=a.id, kind=self.kind_of(a.id), role=a.role, tags=a.tags or [],
                                                          meta={"slot": "open"}), lease_ms=None)

    # ------------------------------------------------------------------ start
    def spawn_all(self) -> None:
        for a in self.spec.agents:
            self._unleased(a.id)
            open_slot(self.store, self.spec.run_id, a.id, 1, kind=self.kind_of(a.id))

    def spawn(self, agent_id: str) -> None:
        """Open the slot's next generation (a resume: whichever runner held it is not ours to know)."""
        self.respawn(agent_id)

    def attach_all(self) -> list[str]:
        """After a coordinator restart: slots whose runner is gone (settled agents) reopen."""
        gone = [a.id for a in self.spec.agents if self.store.get_agent(self.spec.run_id, a.id).status in SETTLED]
        return gone

    # ------------------------------------------------------------------ Controller protocol
    def kill(self, agent_id: str) -> None:
        slot = self._slot(agent_id)
        gen = slot.gen if slot is not None else 0
        if slot is None or not slot.closed:
            close_slot(self.store, self.spec.run_id, agent_id, gen + 1, reason="supervisor: runner given up; its worker stops it")

    def respawn(self, agent_id: str, kind: str | None = None) -> None:
        if kind:
            self.kind_override[agent_id] = kind
        slot = self._slot(agent_id)
        gen = 0 if slot is None else slot.gen
        if slot is None or not slot.closed:
            gen += 1  # not closed first (a resume): the next generation supersedes the runner that held it
        self.event_states.pop(agent_id, None)  # the next runner starts with a clean record
        self._unleased(agent_id)
        open_slot(self.store, self.spec.run_id, agent_id, gen, kind=self.kind_of(agent_id), reason=f"slot reopened (generation {gen})")

    def degrade(self, keep: str) -> None:
        for a in self.spec.agents:
            if a.id != keep and a.works:
                self.disabled.add(a.id)
                slot = self._slot(a.id)
                close_slot(self.store, self.spec.run_id, a.id, (slot.gen if slot else 0) + 1, reason=f"degraded to {keep} alone")
                self.store.set_agent_status(self.spec.run_id, a.id, "stopped", reason=f"degraded to {keep} alone")

    def stop_all(self, grace_s: float = 3.0) -> None:
        """Close every slot: the workers stop whatever runner still holds one."""
        slots = self.table.refresh(self.store)
        for a in self.spec.agents:
            s = slots.get(a.id)
            if s is not None and not s.closed:
                close_slot(self.store, self.spec.run_id, a.id, s.gen + 1, reason="run over")

    def all_exited(self) -> bool:
        """Every runner a worker holds has said it stopped (open slots hold none)."""
        slots = self.table.refresh(self.store)
        agents = {a.id: a for a in self.store.list_agents(self.spec.run_id)}
        return all(s.taken is None or agents[a].status in SETTLED for a, s in slots.items() if a in agents)
