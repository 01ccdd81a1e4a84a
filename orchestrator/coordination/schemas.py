"""What the MCP server publishes of each tool: its description and its typed parameters (names as
task-graph-mcp spells them; ``from`` is a Python keyword, hence the alias). The server builds one
function signature per tool from these, so the SDK derives the JSON schemas and checks types."""

from __future__ import annotations

import inspect
from typing import Annotated, Any, Literal

from pydantic import Field

from coordstore.models import DEP_TYPES, TASK_STATUSES

from orchestrator.coordination.worktools import STATUSES

REQUIRED = inspect.Parameter.empty
Ids = str | list[str]
Status = Literal[STATUSES]  # what update may set
AnyStatus = Literal[TASK_STATUSES]
StartEdge = Literal[tuple(t for t in DEP_TYPES if t != "contains")]


def P(name: str, kind: Any, description: str, default: Any = None, alias: str | None = None):
    """One parameter: ``default`` REQUIRED for a required one, None otherwise (unset)."""
    field = Field(description=description, alias=alias)
    annotation = Annotated[kind if default is REQUIRED else kind | None, field]
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


WORKER = P("worker_id", str, "Your own id (optional: the token says who you are; another agent's id is refused)")
AGENT = P("agent", str, "Your own id (optional: the token says who you are; another agent's id is refused)")
TASK = P("task", str, "Task id", REQUIRED)
TAGS = "Tags (list of strings)"

TOOL_PARAMS: dict[str, tuple[str, list[inspect.Parameter]]] = {
    "connect": ("Connect as the agent your token names; call this first. Returns your agent_id (= worker_id), role, tags, "
                "the run's workflow and your instruction.",
                [WORKER, P("workflow", str, "The workflow you follow (push, pull/swarm, hybrid/hierarchical); recorded"),
                 P("tags", list[str], "Tags you announce (recorded; the experiment's tags are the ones used)"),
                 P("force", bool, "Reconnect (always allowed for your own token)")]),
    "disconnect": ("Disconnect: records that you left. Your tasks stay as they are.", [WORKER]),
    "list_agents": ("List the run's agents with role, tags, status and the tasks each one owns (assigned or working).",
                    [P("tags", list[str], "Only agents having all of these tags")]),
    "list_tasks": ("Query tasks (template order) with filters. ready=true: pending work tasks whose blockers all completed.",
                   [P("status", AnyStatus | list[AnyStatus], "Status or list of statuses"),
                    P("ready", bool, "Only tasks ready to claim (true) or not ready (false)"),
                    P("owner", str, "Only tasks owned by this agent"),
                    P("parent", str, "Only children of this task ('null': top-level tasks)"),
                    P("tags", list[str], "Only tasks carrying all of these tags (task, needed or wanted tags)"),
                    P("tags_any", list[str], "Only tasks carrying at least one of these tags"),
                    P("agent", str, "Only tasks this agent's tags qualify it for"),
                    P("limit", int, "At most this many tasks")]),
    "get": ("Get one task: its fields, blockers, dependents, children and attachment names.", [TASK]),
    "claim": ("Claim a ready task (or start one assigned to you): your worktree is brought up to date with the work "
              "of its blockers and the task becomes working. Fails if it is no longer available (a lost claim).",
              [TASK, WORKER, P("force", bool, "Not supported (use update with assignee and force)")]),
    "update": ("Change a task. status=completed (owner): commits your worktree as 'task <id>: <title>', runs the task's "
               "verify command and merges the work. status=working starts a task assigned to you; pending gives it back; "
               "failed/cancelled end it. assignee=AGENT assigns a ready task (or a container: its subtree) to an agent.",
               [TASK, P("status", Status, "New status"),
                P("state", Status, "task-graph-mcp's name for status"),
                P("assignee", str, "Agent to assign the task to"),
                P("force", bool, "Take the task from its current owner first"),
                P("reason", str, "Why (kept in the history)"), WORKER]),
    "create": ("Create a task (pending), optionally under a parent and blocked by existing tasks.",
               [P("title", str, "Title (or give a description)"), P("description", str, "What to do"),
                P("parent", str, "Parent task id"), P("priority", int, "Priority, higher first (default 5)"),
                P("points", float, "Story points"), P("tags", list[str], TAGS),
                P("needed_tags", list[str], "Tags an agent must all have to take it"),
                P("wanted_tags", list[str], "Tags an agent should have one of"),
                P("blocked_by", list[str], "Tasks that must complete before this one starts"),
                P("id", str, "Task id (default: generated)"), P("time_estimate_ms", int, "Estimated duration in ms"),
                AGENT, WORKER]),
    "create_tree": ("Create a tree of tasks at once (all or nothing): tree = {title, description?, children?: [nodes], "
                    "sibling_type?: parallel|sequential (default parallel; join_mode then|also accepted), points?, "
                    "priority?, tags?, needed_tags?, wanted_tags?, time_estimate_ms?, id?} or a list of such nodes. "
                    "Sequential siblings run in order. Returns the created ids and the root.",
                    [P("tree", dict[str, Any] | list[dict[str, Any]], "The tree (a node or a list of nodes)", REQUIRED),
                     P("parent", str, "Existing task to put the tree under"), AGENT, WORKER]),
    "link": ("Add dependencies: each 'from' task blocks each 'to' task (type blocks), or 'from' follows 'to' "
             "(type follows: 'to' first).",
             [P("from_", Ids, "Task id(s) on the from side", REQUIRED, alias="from"),
              P("to", Ids, "Task id(s) on the to side", REQUIRED),
              P("type", StartEdge, "Dependency type (default blocks)"), AGENT]),
    "unlink": ("Remove dependencies (same arguments as link); '*' on one side matches every task.",
               [P("from_", Ids, "Task id(s) on the from side, or '*'", REQUIRED, alias="from"),
                P("to", Ids, "Task id(s) on the to side, or '*'", REQUIRED),
                P("type", StartEdge, "Dependency type (default blocks)"), AGENT]),
    "attach": ("Attach a note, result or file content to a task (at most 256 KiB).",
               [TASK, P("name", str, "Attachment name", REQUIRED), P("content", str, "The content (text)"),
                P("mime", str, "MIME type (default text/plain)"), AGENT]),
    "attachments": ("List a task's attachments (name, mime, size, by whom); content=true includes the content.",
                    [TASK, P("content", bool, "Include each attachment's content"), P("name", str, "Only attachments of this name")]),
    "log_metrics": ("Log cost and up to 8 integer metrics for a task (added to its totals): values = [in, out, cached, "
                    "thinking, image, audio, free, free] tokens.",
                    [TASK, P("cost_usd", float, "Cost in USD to add"), P("values", list[int], "Up to 8 non-negative integers"),
                     AGENT]),
    "heartbeat": ("Renew your lease (you are alive and working).", [WORKER, AGENT]),
    "thinking": ("Say what you are doing right now (kept in the history).",
                 [P("thought", str, "What you are doing", REQUIRED), P("tasks", list[str], "Tasks it concerns"), AGENT]),
}
