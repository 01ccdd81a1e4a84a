"""Distribution policies: which task an agent runs next. Selected by name, enforced in code.

``policy.next()`` returns a ``Task`` the agent now owns (status ``assigned``, owner = the agent),
``WAIT`` (nothing for it now: the runner sleeps ``poll_ms``), ``AGAIN`` (a dispatcher made progress:
ask again at once) or ``OVER`` (every task is terminal, or the run was closed). Roles per policy:

=========  ==========================================  =====================================
policy     executes tasks                              hands out tasks
=========  ==========================================  =====================================
pull       worker: ``claim_next(order)``               -
solo       solo (one agent): pull, critical-path first -
relay      specialist: pull routed by its tags;        -
           records ``handoff`` notes
push       worker: only tasks assigned to it           coordinator (``dispatch.PushCoordinator``)
hybrid     worker: pull within its containers, steal   lead (``dispatch.HybridLead``)
best_of    worker: enter an open round, else pull and   -
           hold a round of N attempts (``bestof``)
=========  ==========================================  =====================================

Pulling agents look with the read-only ``ready_tasks`` before they claim, so an idle agent
polling an empty queue does not write an ``empty`` claim row every ``poll_ms``; the claim names
the task the look saw best (``claim_next(seen=...)``), so a race lost between the look and the
claim is recorded by the store (``lost``), which is what contention measures.

``policy_options.avoid_conflicts`` (pull, relay, hybrid workers, the push coordinator): a ready
task whose ``file_scope`` meets that of a task in progress is held back (``collisions``).
"""

from __future__ import annotations

from coordstore.errors import InputError
from coordstore.models import works

from agents.policies.base import AGAIN, OPTIONS, OVER, WAIT, Policy, PolicyEnv, check_options
from agents.policies.bestof import BestOf, Entry
from agents.policies.dispatch import HybridLead, PushCoordinator
from agents.policies.workers import HybridWorker, Pull, PushWorker, Relay, Solo

__all__ = ["AGAIN", "OPTIONS", "OVER", "WAIT", "Entry", "Policy", "PolicyEnv", "check_options", "make_policy"]

WORKER_POLICIES = {"pull": Pull, "solo": Solo, "relay": Relay, "push": PushWorker, "hybrid": HybridWorker, "best_of": BestOf}


def make_policy(name: str, env: PolicyEnv) -> Policy:
    """The policy object for this agent's role under policy ``name`` (``InputError`` if the pair
    makes no sense, e.g. a coordinator under pull)."""
    check_options(name, env.options)
    if not works(env.role):
        wanted = {"coordinator": ("push", PushCoordinator), "lead": ("hybrid", HybridLead)}[env.role]
        if name != wanted[0]:
            raise InputError(f"role {env.role} only exists under policy {wanted[0]}, not {name}")
        return wanted[1](env)
    return WORKER_POLICIES[name](env)
