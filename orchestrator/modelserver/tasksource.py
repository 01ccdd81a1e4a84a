"""Finding the task of a request that carries no session context.

An agent CLI pointed at the bare server URL (the same ``ANTHROPIC_BASE_URL`` for every agent of
a run) still says which task it works on: orch's prompt has a ``Task <id>: <title>`` line
(``agents.clis.prompt``). The server reads the id from the conversation's first user message and
asks a task source for the rest: a graph file (a template or snapshot: what the task is) or a
run's store (also its current attempt and the run's seed). The session becomes ``<id>.<attempt>``,
so each task (and each retry of it) has its own turns and fault state.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Protocol

from coordstore import open_store
from coordstore.errors import NotFound
from coordstore.templates import load_graph

from agents.clis.serverurl import ROLE_SCRIPTS, SessionContext, task_context

TASK_LINE = re.compile(r"^Task (\S+?):\s", re.M)  # the line orch's default prompt opens the task with
ATTEMPT_LINE = re.compile(r"\bThis is attempt (\d+)\b")


class TaskSource(Protocol):
    def lookup(self, task_id: str) -> dict[str, Any] | None:
        """``{"task": {...}, "attempt": int | None, "seed": int | None}`` or None if unknown."""


class GraphTasks:
    """Tasks of a template or snapshot file (read once)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self.tasks = {t.id: task_context(t) for t in load_graph(path).tasks}

    def lookup(self, task_id: str) -> dict[str, Any] | None:
        t = self.tasks.get(task_id)
        return None if t is None else {"task": t, "attempt": None, "seed": None}


class StoreTasks:
    """Tasks of one run in its store, read at each lookup (attempts change as tasks are retried)."""

    def __init__(self, store_url: str, run_id: str):
        self.store_url, self.run_id = store_url, run_id

    def check(self) -> None:
        """Fail now (``OrchError`` naming the store or run) rather than at the first request."""
        with open_store(self.store_url, readonly=True) as s:
            s.get_run(self.run_id)

    def lookup(self, task_id: str) -> dict[str, Any] | None:
        with open_store(self.store_url, readonly=True) as s:
            try:
                t = s.get_task(self.run_id, task_id)
            except NotFound:
                return None
            seed = s.get_run(self.run_id).seed
        return {"task": task_context(t), "attempt": max(1, t.attempt), "seed": seed}


def fill(ctx: SessionContext, prompt: str, source: TaskSource | None) -> SessionContext:
    """``ctx`` with the task named in ``prompt`` filled in (unchanged if it has a task or none is
    named, or if it is a role session: its tasks are the ones it claims)."""
    if ctx.task or ctx.script in ROLE_SCRIPTS:
        return ctx
    m = TASK_LINE.search(prompt or "")
    if m is None:
        return ctx
    tid = m.group(1)
    found = source.lookup(tid) if source is not None else None
    a = ATTEMPT_LINE.search(prompt)
    attempt = (found or {}).get("attempt") or (int(a.group(1)) if a else 1)
    seed = (found or {}).get("seed")
    named = ctx.session != "default"
    return SessionContext(session=ctx.session if named else f"{tid}.{attempt}", script=ctx.script,
                          task=(found or {}).get("task") or {"id": tid}, seed=ctx.seed if seed is None else seed,
                          attempt=attempt, time_scale=ctx.time_scale, worktree=ctx.worktree)
