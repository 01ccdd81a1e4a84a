"""The coordination tools as plain Python over the store: ``CoordinationTools.call(tool, agent,
args)`` runs one tool as ``agent`` and writes its history row, whatever happens.

One method per tool, in four groups (``agenttools``: what an agent says about itself; ``readtools``:
looking; ``worktools``: claiming, assigning and finishing tasks, with their git work;
``graphtools``: growing the graph). The MCP server (``server.py``) only decides who the caller is
and passes the arguments on, so everything here runs the same over HTTP, stdio or in a test.

The row of a call (SPEC: entity ``tool``, id = the tool's name, to_state = the outcome):
``data = {"args": <first 16 hex of the sha256 of the canonical JSON of the given arguments>,
"latency_ms": <time spent in the tool>, "task": <the task it names>, ...}`` plus what each tool
adds (``created``, ``assignee``, ``status``, ``metrics``). Outcomes: ``ok``; ``error`` (a bad
argument or a refused rule); ``lost`` (a claim that lost its race); ``denied`` (a caller naming
another agent). A refused call raises ``ToolRefused`` after its row is written.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import traceback
from typing import Any

from coordstore.errors import GitError, GraphError, InvalidTransition, NotFound, OrchError, StaleAttempt, StoreError
from coordstore.models import Transition

from orchestrator.coordination.agenttools import AgentTools
from orchestrator.coordination.args import Args, Call, ToolRefused
from orchestrator.coordination.graphtools import GraphTools
from orchestrator.coordination.readtools import ReadTools
from orchestrator.coordination.runctx import RunContext
from orchestrator.coordination.worktools import WorkTools

# name -> the arguments it takes (task-graph-mcp's names where it has the tool); ``worker_id`` and
# ``agent`` name the caller itself (a call naming another agent is denied), except list_tasks's
# ``agent``, a filter ("tasks this agent may take")
TOOL_ARGS: dict[str, tuple[str, ...]] = {
    "connect": ("worker_id", "workflow", "tags", "force"),
    "disconnect": ("worker_id",),
    "list_agents": ("tags",),
    "list_tasks": ("status", "ready", "owner", "parent", "tags", "tags_any", "agent", "limit"),
    "get": ("task",),
    "claim": ("task", "worker_id", "force"),
    "update": ("task", "status", "state", "assignee", "force", "reason", "worker_id"),
    "create": ("title", "description", "parent", "priority", "points", "tags", "needed_tags", "wanted_tags",
               "blocked_by", "id", "time_estimate_ms", "agent", "worker_id"),
    "create_tree": ("tree", "parent", "agent", "worker_id"),
    "link": ("from", "to", "type", "agent"),
    "unlink": ("from", "to", "type", "agent"),
    "attach": ("task", "name", "content", "mime", "agent"),
    "attachments": ("task", "content", "name"),
    "log_metrics": ("task", "cost_usd", "values", "agent"),
    "heartbeat": ("worker_id", "agent"),
    "thinking": ("thought", "tasks", "agent"),
}
TOOLS: tuple[str, ...] = tuple(TOOL_ARGS)
SELF_ARGS: dict[str, tuple[str, ...]] = {t: tuple(a for a in ("worker_id", "agent") if a in names and t != "list_tasks")
                                         for t, names in TOOL_ARGS.items()}


def args_digest(args: dict[str, Any]) -> str:
    """First 16 hex digits of the sha256 of the arguments' canonical JSON (unset ones left out)."""
    given = {k: v for k, v in args.items() if v is not None}
    blob = json.dumps(given, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _translate(tool: str, e: OrchError) -> ToolRefused:
    """A store or git refusal as the caller's error, the tool named first."""
    if isinstance(e, NotFound | InvalidTransition | StaleAttempt | GraphError | GitError):
        return ToolRefused(f"{tool}: {e}")
    if isinstance(e, StoreError):
        return ToolRefused(f"{tool}: the store refused ({e}); try again")
    return ToolRefused(f"{tool}: {e}")


class CoordinationTools(AgentTools, ReadTools, WorkTools, GraphTools):
    """Every tool of one run. Thread-safe: each worker thread uses its own store."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.run_id = ctx.run_id

    @property
    def store(self):
        return self.ctx.store.here()

    def call(self, tool: str, agent: str, args: dict[str, Any] | None = None) -> Any:
        """Run ``tool`` as ``agent``; its result, or ``ToolRefused`` (the row written either way)."""
        t0 = time.perf_counter()
        args = dict(args or {})
        data: dict[str, Any] = {"args": args_digest(args)}
        outcome, reason = "ok", None
        try:
            c = self._begin(tool, agent, args, data)
            return getattr(self, f"tool_{tool}")(c)
        except ToolRefused as e:
            outcome, reason = e.outcome, e.text
            data.update(e.data)
            raise
        except OrchError as e:
            refused = _translate(tool, e)
            outcome, reason = refused.outcome, refused.text
            raise refused from e
        except Exception as e:  # a bug of ours: the caller gets an error, the server lives on
            traceback.print_exc(file=sys.stderr)
            outcome, reason = "error", f"{tool}: internal error ({type(e).__name__}: {e})"
            raise ToolRefused(reason) from e
        finally:
            data["latency_ms"] = round((time.perf_counter() - t0) * 1000.0, 3)
            self.record(tool, agent, outcome, reason, data)

    def record(self, tool: str, agent: str, outcome: str, reason: str | None, data: dict[str, Any]) -> None:
        """The call's history row. A store that refuses even this is said on stderr: the call's own
        answer still reaches the caller."""
        try:
            self.store.record(Transition(run_id=self.run_id, ts_ms=self.store.clock(), entity="tool", entity_id=tool,
                                         to_state=outcome, agent=agent, reason=reason, data=data))
        except StoreError as e:
            print(f"orch mcp: could not record the {tool} call of {agent}: {e}", file=sys.stderr, flush=True)

    def _begin(self, tool: str, agent: str, args: dict[str, Any], data: dict[str, Any]) -> Call:
        if tool not in TOOL_ARGS:
            raise ToolRefused(f"unknown tool {tool!r} (known: {', '.join(TOOLS)})")
        if agent not in self.ctx.agents:
            raise ToolRefused(f"{tool}: {agent!r} is not an agent of run {self.run_id}", "denied")
        named = args.get("task", args.get("parent"))  # create/create_tree name the task they grow under
        if isinstance(named, str):
            data["task"] = named
        c = Call(tool, agent, Args(tool, args, TOOL_ARGS[tool]), data)
        for name in SELF_ARGS[tool]:
            who = c.args.text(name)
            if who is not None and who != agent:
                raise c.refuse(f"{name} {who!r} is not you: this token acts as {agent!r} only", "denied")
        return c

    # ------------------------------------------------------------------ shared by the groups
    def task_of(self, c: Call, name: str = "task"):
        """The task an argument names (required); an error naming it when the run has none."""
        tid = c.args.text(name, required=True)
        try:
            return self.store.get_task(self.run_id, tid)
        except NotFound:
            raise c.refuse(f"task {tid!r} does not exist in run {self.run_id}") from None
