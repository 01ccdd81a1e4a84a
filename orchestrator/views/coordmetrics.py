"""Metrics of coordination: what agents did with the coordination tools and what it cost them.

Computed from a ``RunDump``'s history (tool rows, task rows, claim rows, merge rows, the notes of a
growing graph), its events (``step`` and ``tokens``) and its agents' roles; the README defines each
key. Both families get every key: a run coordinated by orch (no tool rows) has 0 calls, 0 ms and 0
tokens of coordination, which is the truth of the ideal baseline; a key that is a mean over
samples a run does not have (no pushed assignment, no decomposition, no tool call) is ``None``.

What the agents report, and how it is read here:

* Every coordination-tool call is a ``tool`` row: ``entity_id`` the tool, ``to_state`` its outcome
  (``ok|error|lost|denied``), ``agent``, ``data.latency_ms`` (server-side), ``data.task``.
* An agent's decision time is a ``step`` event named ``turn`` with ``data.ms``: the milliseconds it
  spent deciding one coordination turn (after time scaling, i.e. real ms like every other time).
* Tokens: ``usage.py`` (an agent's ``tokens`` events, else its ``log_metrics`` calls), as for the
  run's ``tokens``, so the coordinators' share is part of the run's total.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from statistics import mean
from typing import Any

from coordstore.graph import GraphIndex
from coordstore.models import DISPATCH_ROLES, TOOL_OUTCOMES, RunDump, Transition

from orchestrator.views.usage import total_tokens, usage_by_agent

TURN_STEP = "turn"  # the step event of one coordination decision: data.ms = time spent deciding
CLAIM_TOOL = "claim"
CREATION_TOOLS = frozenset({"create", "create_tree"})

# the claim keys first: they are computed for both families from the same rows
CLAIM_KEYS = ("claim_attempts", "claim_conflicts", "claim_contention", "claim_empty")
COORDINATION_KEYS = CLAIM_KEYS + (
    "coordination_calls", "coordination_calls_per_task", "coordination_calls_by_outcome", "coordination_ms",
    "tool_latency_p50_ms", "tool_latency_p99_ms", "coordinator_calls", "coordinator_busy_ms", "coordinator_tokens",
    "assignment_latency_ms", "assignment_latency_p50_ms", "tasks_added", "decomposed_tasks", "decomposition_ms",
    "subtasks_per_decomposed_task", "duplicated_work", "duplicated_commits",
)


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear between the closest ranks (numpy's default); None if empty."""
    xs = sorted(values)
    if not xs:
        return None
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def _number(v: Any) -> float:
    """A reported number, 0 for anything else (a malformed row or event must not stop the metrics)."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else 0.0


def _latency(r: Transition) -> float:
    return _number((r.data or {}).get("latency_ms"))


def claim_counts(history: list[Transition]) -> dict[str, Any]:
    """Claim attempts are the claims that named or took a task: the store's ``won`` and ``lost``
    claim rows (``claim``/``claim_next`` of either family; a ``claim_next`` told what its caller's
    look saw, ``seen``, writes ``lost`` when another agent took that task first, so a pulling
    agent's lost race counts even when it took another task), plus ``claim`` tool calls recorded
    ``lost`` that never reached the store (no lost claim row of their own, by the same agent for
    the same task, earlier in the history). A ``claim_next`` that found nothing ready (``empty``)
    is a look at an empty queue, not a contended claim: counted apart as ``claim_empty``.
    contention = lost / attempts."""
    won = lost = empty = 0
    unmatched: Counter[tuple[str | None, str | None]] = Counter()  # the store's lost rows not yet paired with a tool row
    for r in history:
        if r.entity == "claim":
            if r.to_state == "won":
                won += 1
            elif r.to_state == "lost":
                lost += 1
                unmatched[(r.agent, r.entity_id)] += 1
            elif r.to_state == "empty":
                empty += 1
        elif r.entity == "tool" and r.entity_id == CLAIM_TOOL and r.to_state == "lost":
            key = (r.agent, (r.data or {}).get("task"))
            if unmatched[key]:
                unmatched[key] -= 1  # the same attempt: the server records its row after the store's
            else:
                lost += 1
    attempts = won + lost
    return {"claim_attempts": attempts, "claim_conflicts": lost,
            "claim_contention": round(lost / attempts, 4) if attempts else 0.0, "claim_empty": empty}


def assignment_latencies(rows: list[Transition]) -> list[int]:
    """Per assignment made by another agent (``data.by`` != the assignee): the time until that
    assignee's ``working`` row for the task. An assignment taken back or moved before work started
    gives no sample; a reassignment starts the clock again for the new assignee."""
    open_: dict[str, tuple[str | None, int]] = {}
    out = []
    for r in rows:
        if r.entity != "task" or r.is_note:
            continue
        if r.to_state == "assigned":
            by = (r.data or {}).get("by")
            if by and by != r.agent:
                open_[r.entity_id] = (r.agent, r.ts_ms)
            else:
                open_.pop(r.entity_id, None)
        elif r.to_state == "working" and r.entity_id in open_:
            agent, t0 = open_.pop(r.entity_id)
            if agent == r.agent:
                out.append(r.ts_ms - t0)
        else:
            open_.pop(r.entity_id, None)
    return out


def _turn_ms(dump: RunDump, agents: set[str] | None) -> float:
    return sum(_number(e.data.get("ms")) for e in dump.events
               if e.type == "step" and e.data.get("name") == TURN_STEP and (agents is None or e.agent in agents))


def decomposition_ms(tools: list[Transition]) -> float:
    """Σ over successful creation calls (``create``, ``create_tree``) of the time the agent took to
    produce them: from the end of its previous tool call (its row) to the end of this one, i.e. its
    decision time plus the call; the call's own latency for an agent's first call."""
    last: dict[str | None, int] = {}
    total = 0.0
    for r in tools:
        if r.entity_id in CREATION_TOOLS and r.to_state == "ok":
            total += (r.ts_ms - last[r.agent]) if r.agent in last else _latency(r)
        last[r.agent] = r.ts_ms
    return total


def _growth(dump: RunDump) -> tuple[int, int, int]:
    """(tasks added mid-run, tasks that gained children mid-run, added tasks below those).

    A task that gained children is one with a ``linked`` note of a ``contains`` edge: ``add_tasks``
    writes one on each task that was already there when children were put under it."""
    added = {r.entity_id for r in dump.history if r.entity == "task" and r.from_state is None and r.reason == "added"}
    decomposed = {r.entity_id for r in dump.history if r.entity == "task" and r.is_note
                  and r.data.get("action") == "linked" and r.data.get("type") == "contains"}
    ix = GraphIndex(dump.tasks, dump.dependencies)
    below = set()
    for d in decomposed:
        below.update(t for t in ix.descendants(d) if t in added)
    return len(added), len(decomposed), len(below)


def _duplicates(rows: list[Transition], task_ids: set[str]) -> tuple[int, int]:
    """(tasks worked by more than one agent, tasks with more than one distinct commit recorded:
    on their completion row, ``data.commit``, and on their merge rows, ``data.source``)."""
    workers: dict[str, set[str | None]] = defaultdict(set)
    commits: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if r.entity == "task" and r.to_state == "working" and not r.is_note:
            workers[r.entity_id].add(r.agent)
        sha = None
        if r.entity == "task" and r.to_state == "completed":
            sha = (r.data or {}).get("commit")
        elif r.entity == "merge" and r.entity_id in task_ids:  # per-task merges (the final merge names branches)
            sha = (r.data or {}).get("source")
        if isinstance(sha, str) and sha:
            commits[r.entity_id].add(sha)
    return sum(len(a) > 1 for a in workers.values()), sum(len(c) > 1 for c in commits.values())


def coordination_metrics(dump: RunDump, tasks_completed: int) -> dict[str, Any]:
    """Every key of ``COORDINATION_KEYS``; ``tasks_completed`` = completed work tasks (the divisor
    of calls per task)."""
    history = dump.history
    tools = [r for r in history if r.entity == "tool"]
    dispatchers = {a.id for a in dump.agents if a.role in DISPATCH_ROLES}
    coord_tools = [r for r in tools if r.agent in dispatchers]
    latencies = [_latency(r) for r in tools]
    assign = assignment_latencies(history)
    added, decomposed, below = _growth(dump)
    dup_work, dup_commits = _duplicates(history, {t.id for t in dump.tasks})
    outcomes = Counter(r.to_state for r in tools)
    return {
        **claim_counts(history),
        "coordination_calls": len(tools),
        "coordination_calls_per_task": round(len(tools) / tasks_completed, 3) if tasks_completed else 0.0,
        "coordination_calls_by_outcome": {o: outcomes.get(o, 0) for o in TOOL_OUTCOMES},
        "coordination_ms": round(sum(latencies) + _turn_ms(dump, None), 3),
        "tool_latency_p50_ms": _r(percentile(latencies, 50)),
        "tool_latency_p99_ms": _r(percentile(latencies, 99)),
        "coordinator_calls": len(coord_tools),
        "coordinator_busy_ms": round(sum(_latency(r) for r in coord_tools) + _turn_ms(dump, dispatchers), 3),
        "coordinator_tokens": sum(total_tokens(u) for a, u in usage_by_agent(dump).items() if a in dispatchers),
        "assignment_latency_ms": _r(mean(assign)) if assign else None,
        "assignment_latency_p50_ms": _r(percentile(assign, 50)),
        "tasks_added": added,
        "decomposed_tasks": decomposed,
        "decomposition_ms": round(decomposition_ms(tools), 3),
        "subtasks_per_decomposed_task": round(below / decomposed, 3) if decomposed else None,
        "duplicated_work": dup_work,
        "duplicated_commits": dup_commits,
    }
