"""The agents of a foreign variant as orch's agent definitions, for ``coordination: agents``.

Workflows map onto orch's policies: ``swarm`` -> pull, ``push`` -> push, ``hierarchical`` -> hybrid
(a lead pushes, workers also pull; a file whose lead must assign everything says ``workflow: push``),
``relay`` -> relay, ``solo`` -> solo; orch's own names (``pull``, ``hybrid``) are taken too.

An agent is the variant's dispatcher when its ``role`` says so, or, without a role, when its id or
tags say ``coordinator`` or ``lead`` (task-graph-mcp tags its coordinators with both). It plays the
policy's dispatching role: ``coordinator`` under push, ``lead`` under hybrid; push and hybrid need
exactly one, and the other workflows have none. Every other agent is a ``worker`` (a ``specialist``
under relay, ``solo`` under solo). Ids, tags and instructions are kept; an instruction reading
``(same as worker-1)`` is worker-1's.

A variant given only by numbers (``agents: 4``, ``agents: {count, config}``) gets the agents
task-graph-mcp's ``scripts/run_experiment.py`` launches for the same numbers: under push and
hierarchical the first of them is the coordinator or lead, the others are ``worker-{n}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from coordstore.models import DISPATCH_ROLES, ROLES

from orchestrator.runs.foreignkit import PROSE, ForeignError, Key, Out, as_count, as_map, as_str, as_tags

WORKFLOWS = {"swarm": "pull", "pull": "pull", "push": "push", "hierarchical": "hybrid", "hybrid": "hybrid",
             "relay": "relay", "solo": "solo"}
DISPATCHER_ROLE = {"push": "coordinator", "hybrid": "lead"}
WORKER_ROLE = {"pull": "worker", "push": "worker", "hybrid": "worker", "relay": "specialist", "solo": "solo"}
# as task-graph-mcp's scripts/run_experiment.py names the agents it launches by number
NUMBERED_ID = {"pull": "swarm-{n}", "relay": "relay-{n}", "solo": "agent-{n}", "push": "worker-{n}", "hybrid": "worker-{n}"}
# and tags them (task-graph-mcp tags its coordinators and leads with both words)
DISPATCHER = {"push": ("coordinator", sorted(DISPATCH_ROLES)), "hybrid": ("lead", sorted(DISPATCH_ROLES))}
_SAME_AS = re.compile(r"^\(\s*same as\s+(.+?)\s*\)$", re.IGNORECASE)


def policy_of(workflow: Any, key: Key) -> str:
    if workflow not in WORKFLOWS:
        raise ForeignError(key, f"unknown workflow {workflow!r}: orch runs {', '.join(WORKFLOWS)}")
    return WORKFLOWS[workflow]


def check_max_claims(value: Any, key: Key) -> None:
    if value != 1 or isinstance(value, bool):
        raise ForeignError(key, f"{value!r}: an orch agent works one task at a time (max_claims 1)")


@dataclass
class Agent:
    """One agent entry (``count`` alike) before the variant's roles are decided."""

    key: Key
    id: str | None = None
    count: int = 1
    tags: list[str] = field(default_factory=list)
    instruction: str = ""
    dispatcher: bool = False
    role: str | None = None  # as written (definitions)
    fields: dict[str, Key] = field(default_factory=dict)  # AgentDef field -> the file's key


def _says_dispatcher(agent_id: str | None, tags: list[str]) -> bool:
    words = set(re.split(r"[^a-z0-9]+", (agent_id or "").lower())) | {t.lower() for t in tags}
    return bool(words & DISPATCH_ROLES)


def entry(out: Out, e: Any, key: Key, policy: str, id_key: str, most: int) -> Agent:
    """One ``launch:`` item (``worker_id``, ``instruction``) or ``definitions:`` item (``id``,
    ``count``, ``prompt``); either may have ``role``, ``tags``, ``workflow``, ``max_claims``."""
    e = as_map(e, key)
    a = Agent(key=key)
    used = {id_key, "role", "tags", "workflow", "max_claims", "instruction", "prompt"}
    if e.get(id_key) is not None:
        a.id, a.fields["id"] = as_str(e[id_key], key + (id_key,)), key + (id_key,)
    if "tags" in e:
        a.tags, a.fields["tags"] = as_tags(e["tags"], key + ("tags",)), key + ("tags",)
    if "workflow" in e and policy_of(e["workflow"], key + ("workflow",)) != policy:
        raise ForeignError(key + ("workflow",), f"{e['workflow']!r} is not the variant's workflow: orch runs one workflow per variant")
    if "max_claims" in e:
        check_max_claims(e["max_claims"], key + ("max_claims",))
    texts = [k for k in ("instruction", "prompt") if k in e]
    if len(texts) == 2:
        raise ForeignError(key + ("prompt",), "an agent has an instruction or a prompt, not both")
    if texts:
        a.instruction, a.fields["instruction"] = as_str(e[texts[0]], key + (texts[0],)), key + (texts[0],)
    if "role" in e:  # said outright; else the id and tags say it
        if e["role"] not in ROLES:
            raise ForeignError(key + ("role",), f"unknown role {e['role']!r}: orch's are {', '.join(ROLES)}")
        a.role, a.dispatcher, a.fields["role"] = e["role"], e["role"] in DISPATCH_ROLES, key + ("role",)
    else:
        a.dispatcher = _says_dispatcher(a.id, a.tags)
    if id_key == "id":  # definitions may stand for several alike agents
        used.add("count")
        if "count" in e:
            a.count, a.fields["count"] = as_count(e["count"], key + ("count",), most), key + ("count",)
    out.rest(e, key, used)
    return a


def numbered(policy: str, total: int, tags: list[str], key: Key, dispatchers: int | None = None) -> list[Agent]:
    """``total`` agents given by number, as task-graph-mcp launches them (module docstring)."""
    if dispatchers is None:
        dispatchers = 1 if policy in DISPATCHER else 0
    out = []
    if dispatchers:
        agent_id, dtags = DISPATCHER.get(policy, ("coordinator", ["coordinator"]))
        out.append(Agent(key=key, id=agent_id, count=dispatchers, tags=dtags, dispatcher=True))
    if total - dispatchers > 0:
        out.append(Agent(key=key, id=NUMBERED_ID[policy], count=total - dispatchers, tags=list(tags)))
    return out


def _ids(agents: list[Agent]) -> None:
    """Every agent's id is its own: ``{n}`` numbers alike agents; a repeated id is refused."""
    seen: dict[str, Key] = {}
    for a in agents:
        if a.id is None:
            continue
        if a.count > 1 and "{n}" not in a.id:
            raise ForeignError(a.fields.get("id", a.key), f"{a.count} agents cannot share the id {a.id!r}: number them with {{n}}")
        for n in range(1, a.count + 1):
            one = a.id.replace("{n}", str(n))
            if one in seen:
                raise ForeignError(a.fields.get("id", a.key), f"agent id {one!r} is given twice in this variant")
            seen[one] = a.key


def _same_as(agents: list[Agent]) -> None:
    """``(same as worker-1)``: worker-1's instruction, followed through chains."""
    by_id = {a.id.replace("{n}", str(n)): a for a in agents if a.id for n in range(1, a.count + 1)}
    for a in agents:
        text, path = a.instruction, [a.id]
        while (m := _SAME_AS.match(text)) is not None:
            ref = m.group(1)
            if ref not in by_id:
                raise ForeignError(a.fields["instruction"], f"{text!r}: this variant has no agent {ref!r} "
                                                            f"(it has: {', '.join(i for i in by_id)})")
            if ref in path:
                raise ForeignError(a.fields["instruction"], f"{text!r}: the instructions refer to each other in a circle")
            path.append(ref)
            text = by_id[ref].instruction
        a.instruction = text


def _why_dispatcher(a: Agent) -> Key:
    """The key that made ``a`` a dispatcher: its role, else its tags, else its id."""
    if "role" in a.fields:
        return a.fields["role"]
    if {t.lower() for t in a.tags} & DISPATCH_ROLES:
        return a.fields.get("tags", a.key)
    return a.fields.get("id", a.key)


def _roles(agents: list[Agent], policy: str, workflow: Any, key: Key) -> list[str]:
    dispatchers = [a for a in agents if a.dispatcher]
    if policy not in DISPATCHER_ROLE:
        if dispatchers:
            d = dispatchers[0]
            raise ForeignError(_why_dispatcher(d),
                               f"agent {d.id or '(unnamed)'} is a coordinator or lead (by its id, tags or role), "
                               f"but workflow {workflow!r} (orch's {policy}) has none")
    else:
        role = DISPATCHER_ROLE[policy]
        if not dispatchers:
            raise ForeignError(key, f"workflow {workflow!r} needs one {role} among its agents (an agent whose id, "
                                    f"tags or role say coordinator or lead); there is none")
        if len(dispatchers) > 1 or dispatchers[0].count > 1:
            d = dispatchers[-1]
            raise ForeignError(d.fields.get("count", d.key) if len(dispatchers) == 1 else d.key,
                               f"a second coordinator or lead: orch runs one {role} per variant")
        if all(a.dispatcher for a in agents):
            raise ForeignError(key, f"workflow {workflow!r} has a {role} but no worker")
    for a in agents:  # a worker's role as written must be one the workflow has
        if a.role and not a.dispatcher and a.role not in ("worker", WORKER_ROLE[policy]):
            raise ForeignError(a.fields["role"], f"{a.role!r}: workflow {workflow!r} (orch's {policy}) has no such role")
    total = sum(a.count for a in agents)
    if policy == "solo" and total != 1:
        raise ForeignError(key, f"workflow {workflow!r} runs exactly one agent, not {total}")
    return [DISPATCHER_ROLE[policy] if a.dispatcher else WORKER_ROLE[policy] for a in agents]


def finish(out: Out, agents: list[Agent], policy: str, workflow: Any, key: Key, orch_key: Key, most: int) -> list[dict]:
    """The variant's agents as AgentDef data; ``key`` is the file's agents key (for errors about
    them all), ``orch_key`` the translated variant's ``agents`` (for where each came from)."""
    total = sum(a.count for a in agents)
    if total > most:
        raise ForeignError(key, f"{total} agents in all, at most {most}")
    _ids(agents)
    _same_as(agents)
    defs = []
    for j, (a, role) in enumerate(zip(agents, _roles(agents, policy, workflow, key))):
        d = {"count": a.count, "role": role, "tags": a.tags, "instruction": a.instruction}
        if a.id is not None:
            d["id"] = a.id
        defs.append(d)
        out.came_from(orch_key + (j,), a.key)
        for f, k in a.fields.items():
            out.came_from(orch_key + (j, f), k)
    return defs


def declared_counts(out: Out, agents: list[Agent], block: dict, key: Key) -> None:
    """``total``/``count``, ``coordinator`` and ``workers`` must say what the agents listed are."""
    dispatchers = sum(a.count for a in agents if a.dispatcher)
    have = {"total": sum(a.count for a in agents), "count": sum(a.count for a in agents),
            "coordinator": dispatchers, "workers": sum(a.count for a in agents) - dispatchers}
    for k, n in have.items():
        if k in block and block[k] != n:
            raise ForeignError(key + (k,), f"says {block[k]!r}, but the agents defined make {n}")
    out.rest(block, key, {"total", "count", "coordinator", "workers", "definitions", "config", *PROSE})
