"""The role scripts by name: what the scripted model server plays for a real CLI that is one agent of
an agent-driven run for the whole run (``agents.clis.serverurl.ROLE_SCRIPTS``; ``conversation``
explains their options, ``roleworkers`` and ``roledispatch`` what each one does)."""

from __future__ import annotations

from typing import Any

from agents.clis.serverurl import ROLE_SCRIPTS

from orchestrator.modelserver.conversation import RoleScript
from orchestrator.modelserver.roledispatch import CoordinatorScript, LeadScript
from orchestrator.modelserver.roleworkers import DecomposerScript, WorkerScript

ROLES: dict[str, type[RoleScript]] = {c.name: c for c in (CoordinatorScript, WorkerScript, LeadScript, DecomposerScript)}
assert set(ROLES) == set(ROLE_SCRIPTS), "every role script the player may name is played here"


def make_role_script(name: str, work: Any) -> RoleScript:
    """The role script ``name``; ``work`` is the server's task script, for the claimed tasks' work."""
    return ROLES[name](work)
