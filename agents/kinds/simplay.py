"""The sim kind's player in agent-driven variants: the role its agent has under the variant's policy
(``simdispatch``, ``simworkers``), seated at the coordination tools (``simroles.Seat``).

The runner (``agents.driven``) calls ``begin()`` once (``connect``), ``step()`` until the run is
over -- waiting ``wait_s()`` after each step that found nothing to do -- then ``end()``
(``disconnect``).
"""

from __future__ import annotations

from typing import Any

from coordstore.errors import AgentError

from agents.kinds.sim import SimKind
from agents.kinds.simdispatch import Coordinator, Lead
from agents.kinds.simroles import ROLE_KEYS, RoleOptions, Seat
from agents.kinds.simworkers import HybridWorker, PushWorker, SwarmWorker
from agents.toolclient import ToolRefused

ROLES = {("push", "coordinator"): Coordinator, ("push", "worker"): PushWorker, ("pull", "worker"): SwarmWorker,
         ("hybrid", "lead"): Lead, ("hybrid", "worker"): HybridWorker}


def role_class(policy: str, role: str) -> type:
    """The class playing ``role`` under ``policy`` (AgentError when the sim plays no such role)."""
    cls = ROLES.get((policy, role))
    if cls is None:
        plays = ", ".join(f"{r} under {p}" for p, r in ROLES)
        raise AgentError(f"the sim plays no {role} under policy {policy} in agent-driven variants (it plays: {plays})")
    return cls


class SimPlayer:
    def __init__(self, cfg, client, events, pulse):
        self.seat = Seat(cfg, client, events, pulse, dict(cfg.kind_options))
        self.role = role_class(cfg.policy, cfg.role)(self.seat)
        self.unknown = list(self.seat.sim.unknown)  # the role's own keys were taken out before

    @classmethod
    def preflight(cls, policy: str, role: str, options: dict[str, Any] | None) -> None:
        """At plan time: the role exists and the options read as the runner will read them."""
        role_class(policy, role)
        RoleOptions.build(options or {})
        SimKind.preflight({k: v for k, v in (options or {}).items() if k not in ROLE_KEYS})

    def begin(self) -> None:
        s = self.seat
        hello = s.call("connect", worker_id=s.me)
        said = hello.get("instruction") if isinstance(hello, dict) else None
        s.events.log(f"connected as {s.me} ({s.cfg.role} under {s.cfg.policy})" + (f"; instruction: {said}" if said else ""))

    def step(self) -> bool:
        progressed = self.role.step()
        if progressed:
            self.seat.empty_looks = 0
        return progressed

    def wait_s(self) -> float:
        return self.seat.wait_s()

    def end(self) -> None:
        try:
            self.seat.call("disconnect")
        except ToolRefused as e:
            self.seat.events.log(f"disconnect refused: {e.text}", level="warning")
