"""`orch history`: a run's transitions, filtered, and the time its tasks spent in each status and
with each agent (``--summary``). Read from the store like every view in ``runinfo``."""

from __future__ import annotations

from typing import Any

from coordstore.base import CoordStore
from coordstore.clock import wall_clock_ms
from coordstore.errors import NotFound, UsageError
from coordstore.graph import GraphIndex, work_ids
from coordstore.models import Run

from orchestrator.views.runinfo import SCHEMA_VERSION, RunRef, liveness
from orchestrator.views.timeinstatus import breakdown, by_task, periods, run_end_ms

HISTORY_ENTITIES = ("task", "agent", "merge", "run", "claim", "tool", "provider")  # tool: the agents' coordination calls; provider: shared rate limiters


def history_view(ref: RunRef, task: str | None = None, agent: str | None = None, entity: str | None = None) -> dict[str, Any]:
    """The run's transitions, filtered; ``offset_ms`` counts from the run's first row."""
    if entity is not None and entity not in HISTORY_ENTITIES:
        raise UsageError(f"--entity {entity!r}: one of {', '.join(HISTORY_ENTITIES)}")
    with ref.open_store() as store:
        _check_filters(ref, store, task, agent)
        rows = store.history(ref.run_id)
    origin = rows[0].ts_ms if rows else 0
    if task is not None:  # the task's own rows, its claims, its merges and the tool calls naming it
        rows = [r for r in rows if (r.entity_id == task and r.entity in ("task", "claim", "merge"))
                or (r.entity == "tool" and (r.data or {}).get("task") == task)]
    if agent is not None:
        rows = [r for r in rows if r.agent == agent or (r.entity == "agent" and r.entity_id == agent)]
    if entity is not None:
        rows = [r for r in rows if r.entity == entity]
    return {
        "version": SCHEMA_VERSION,
        "run_id": ref.run_id,
        "origin_ms": origin,
        "filter": {"task": task, "agent": agent, "entity": entity},
        "transitions": [
            {"seq": r.seq, "ts_ms": r.ts_ms, "offset_ms": r.ts_ms - origin, "entity": r.entity, "id": r.entity_id,
             "from": r.from_state, "to": r.to_state, "agent": r.agent, "reason": r.reason, "data": r.data}
            for r in rows
        ],
    }


def _check_filters(ref: RunRef, store: CoordStore, task: str | None, agent: str | None) -> Run:
    """The run (a store without it has no history of it, not an empty one); ``UsageError`` for
    --task and --agent together, or naming a task or agent the run does not have."""
    if task and agent:
        raise UsageError("--task and --agent: give one of them")
    run = store.get_run(ref.run_id)
    if task is not None:
        try:
            store.get_task(ref.run_id, task)
        except NotFound as e:
            raise UsageError(f"--task {task!r}: no such task in run {ref.run_id}") from e
    if agent is not None:
        ref.check_agent(agent)
    return run


def history_summary_view(ref: RunRef, task: str | None = None, agent: str | None = None,
                         now: int | None = None) -> dict[str, Any]:
    """Time per status and per agent (``orchestrator.views.timeinstatus``): the run's sums over
    its work tasks and each task's breakdown; ``task``: that task alone; ``agent``: only the
    periods that agent owned. Open periods close at the run's end, or now while it runs."""
    now = now or wall_clock_ms()
    with ref.open_store() as store:
        run = _check_filters(ref, store, task, agent)
        status, _ = liveness(ref, store, run, now)
        tasks = store.list_tasks(ref.run_id)
        deps = store.dependencies(ref.run_id)
        rows = store.history(ref.run_id)
    end = run_end_ms(run, rows, now if status == "running" else None)
    work = set(work_ids(GraphIndex(tasks, deps)))
    ps = [p for p in periods(rows, end) if (task is None or p.task == task) and (agent is None or p.agent == agent)]
    per_task = by_task(ps)
    shown = [t for t in tasks if t.id == task] if task is not None else [t for t in tasks if t.id in per_task]
    return {
        "version": SCHEMA_VERSION,
        "run_id": ref.run_id,
        "status": status,
        "end_ms": end,
        "filter": {"task": task, "agent": agent},
        "work_tasks": len(work),
        **breakdown(p for p in ps if task is not None or p.task in work),
        "tasks": [{"id": t.id, "status": t.status, "work": t.id in work, **breakdown(per_task.get(t.id, []))} for t in shown],
    }
