"""The records the CoordStore holds: runs, tasks, dependencies, agents, events, transitions.

Every timestamp is integer milliseconds since the epoch (``*_ms`` / ``*_at``); ``None`` means
"has not happened". Models are plain pydantic v2 models; backends store them however suits them
but must hand back exactly these shapes.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

TaskStatus = Literal["pending", "assigned", "working", "completed", "failed", "cancelled"]
TASK_STATUSES: tuple[str, ...] = get_args(TaskStatus)
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
ACTIVE: frozenset[str] = frozenset({"assigned", "working"})
UNSUCCESSFUL: tuple[str, ...] = ("failed", "cancelled")  # terminal without the work done
REQUEUABLE: frozenset[str] = ACTIVE | {"failed"}  # the statuses a requeue takes a task back to pending from

DepType = Literal["blocks", "follows", "contains"]
DEP_TYPES: tuple[str, ...] = ("blocks", "follows", "contains")

# Who an agent is in its run. Dispatch roles (the push coordinator, the hybrid lead) hand out work
# and execute none: no worktree, no agent kind.
Role = Literal["worker", "coordinator", "lead", "solo", "specialist"]
ROLES: tuple[str, ...] = get_args(Role)
DISPATCH_ROLES: frozenset[str] = frozenset({"coordinator", "lead"})


def works(role: str) -> bool:
    """Whether an agent of ``role`` executes tasks (dispatch roles only hand them out)."""
    return role not in DISPATCH_ROLES


# The supervisor's verdicts on an agent (orchestrator/supervision/verdicts.py judges them); each
# is recorded as the agent's status.
VerdictKind = Literal["active", "idle", "stalled", "looping", "dead", "stopped", "paused"]
VERDICT_KINDS: tuple[str, ...] = get_args(VerdictKind)
# verdicts that climb the recovery ladder (kill -> requeue -> respawn -> fallback -> fail)
FAILURES: frozenset[str] = frozenset({"stalled", "looping", "dead"})
# registered: not judged yet; killed: the supervisor stopped its process after a FAILURES verdict;
# it waits for its respawn
AgentStatus = Literal["registered", VerdictKind, "killed"]
AGENT_STATUSES: tuple[str, ...] = get_args(AgentStatus)
SETTLED: frozenset[str] = frozenset({"dead", "stopped", "killed"})  # agents known not to be running
UNAVAILABLE: frozenset[str] = FAILURES | SETTLED  # agents a dispatcher gives no work

RunStatus = Literal["running", "finished", "failed", "interrupted"]
RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)
RUN_FINAL: tuple[str, ...] = ("finished", "failed", "interrupted")  # the statuses finish_run may set
RUN_OVER: frozenset[str] = frozenset({"finished", "failed"})  # ended for good: nothing to resume
MergeState = Literal["merged", "conflict", "error"]
MERGE_STATES: tuple[str, ...] = get_args(MergeState)
EntityKind = Literal["task", "agent", "merge", "run", "claim", "tool", "provider"]
# entities whose rows chain (each row's from_state is the previous row's to_state), with their states;
# claim rows are attempts, each standing alone, and so are tool rows (one per coordination-tool call)
# and provider rows (a shared rate limiter's acquire/release/limited, agents.backpressure)
CHAINED: dict[str, tuple[str, ...]] = {"task": TASK_STATUSES, "agent": AGENT_STATUSES, "run": RUN_STATUSES, "merge": MERGE_STATES}
# chained entities whose state the store keeps apart from the history; note() records actions on them
NOTABLE: tuple[str, ...] = ("task", "agent", "run")
# how a coordination-tool call ended (a tool row's to_state): done; refused for a bad argument or a
# rule; a claim that lost its race; a caller whose token does not act as that agent
ToolOutcome = Literal["ok", "error", "lost", "denied"]
TOOL_OUTCOMES: tuple[str, ...] = get_args(ToolOutcome)
# who decides who does what: orch's own policies, or the agents through the coordination tools
Coordination = Literal["orch", "agents"]
COORDINATIONS: tuple[str, ...] = get_args(Coordination)
ClaimOrder = Literal["priority", "critical-path", "fifo"]

# task-graph-mcp's metrics[0..7] convention (seed 004): slot i of ``log_metrics`` values and of a
# tgmcp snapshot's ``metrics`` is the Task field METRIC_FIELDS[i], and key USAGE_KEYS[i] of a
# ``tokens`` event and of a usage dict. Slots 6 and 7 have no fixed meaning (free counters).
METRIC_FIELDS: tuple[str, ...] = (
    "tokens_in", "tokens_out", "tokens_cached", "tokens_thinking", "tokens_image", "tokens_audio", "metric_6", "metric_7",
)
USAGE_KEYS: tuple[str, ...] = ("in", "out", "cached", "thinking", "image", "audio", "slot6", "slot7")

# What happens to the dependents of a blocker that failed or was cancelled (never "unblock").
BlockerFailurePolicy = Literal["cancel", "wait"]


class _Model(BaseModel):
    # defer_build: schemas are built on first use, so a runner pays only for the models it touches
    model_config = ConfigDict(extra="forbid", validate_assignment=False, defer_build=True)


class Task(_Model):
    """One unit of work. Definition fields come from the template; state fields from the run."""

    model_config = ConfigDict(allow_inf_nan=False)  # JSON's 1e400 parses as inf: an estimate never is
    id: str = Field(min_length=1)
    title: str = ""
    description: str = ""
    priority: int = 5  # higher runs first
    points: float | None = Field(default=None, ge=0)
    time_estimate_ms: int | None = Field(default=None, ge=0)
    needed_tags: list[str] = Field(default_factory=list)  # an agent must have all of them
    wanted_tags: list[str] = Field(default_factory=list)  # an agent should have one of them
    tags: list[str] = Field(default_factory=list)  # descriptive only
    phase: str | None = None
    file_scope: list[str] = Field(default_factory=list)
    # kind-specific definition data (script commands, verify command, replay commit, ...)
    meta: dict[str, Any] = Field(default_factory=dict)

    status: TaskStatus = "pending"
    attempt: int = Field(default=0, ge=0)  # incremented by every claim/assign
    owner: str | None = None
    assigned_by: str | None = None
    completed_by: str | None = None
    reason: str | None = None  # why it last failed, was requeued or cancelled
    created_at: int | None = None
    claimed_at: int | None = None
    started_at: int | None = None
    completed_at: int | None = None
    updated_at: int | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0
    tokens_thinking: int = 0
    tokens_image: int = 0
    tokens_audio: int = 0
    metric_6: int = 0  # slots 6-7: free counters (seed 004: "available")
    metric_7: int = 0
    cost_usd: float = 0.0

    @field_validator("needed_tags", "wanted_tags", "tags", "file_scope")
    @classmethod
    def _unique_sorted(cls, v: list[str]) -> list[str]:
        return sorted(set(v))

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def metrics(self) -> list[int]:
        """The 8 metric slots in task-graph-mcp's order (METRIC_FIELDS)."""
        return [getattr(self, f) for f in METRIC_FIELDS]


class Dependency(_Model):
    """An edge as written in a template.

    ``blocks``:   from_id completes before to_id starts.
    ``follows``:  from_id follows to_id, so to_id completes before from_id starts.
    ``contains``: from_id is the parent (container) of to_id.
    """

    from_id: str
    to_id: str
    type: DepType

    @property
    def start_edge(self) -> tuple[str, str] | None:
        """(blocker, blocked) for start-blocking edges, None for containment."""
        if self.type == "blocks":
            return (self.from_id, self.to_id)
        if self.type == "follows":
            return (self.to_id, self.from_id)
        return None


class TaskGraph(_Model):
    """Tasks plus edges, as imported from a template or snapshot (validated by graph.validate)."""

    tasks: list[Task]
    dependencies: list[Dependency] = Field(default_factory=list)


class Run(_Model):
    id: str = Field(min_length=1)
    experiment: str = ""
    variant: str = ""
    status: RunStatus = "running"
    seed: int | None = None
    on_blocker_failure: BlockerFailurePolicy = "cancel"
    created_at: int | None = None
    finished_at: int | None = None
    reason: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)


class Agent(_Model):
    id: str = Field(min_length=1)
    kind: str = "sim"
    role: str = "worker"  # one of ROLES (a str: a store reads back whatever it holds)
    tags: list[str] = Field(default_factory=list)
    status: AgentStatus = "registered"
    pid: int | None = None
    create_time: float | None = None  # psutil create_time, so a reused pid is never mistaken
    current_task: str | None = None
    registered_at: int | None = None
    last_heartbeat: int | None = None
    lease_expires: int | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


class Event(_Model):
    """One event an agent emitted (one file of its events directory)."""

    agent: str
    seq: int = Field(ge=0)  # the agent's own monotonic sequence number
    ts_ms: int
    type: str
    task: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class Transition(_Model):
    """One row of the append-only history; ``seq`` is assigned by the store, 1..N gap-free per run.

    A note (``CoordStore.note``) records an action that changed no state: it repeats the state
    (``from_state == to_state``) and names the action in ``data.action``. Readers that count
    changes skip notes (``is_note``).
    """

    seq: int = 0
    run_id: str
    ts_ms: int
    entity: EntityKind
    entity_id: str
    from_state: str | None = None
    to_state: str
    agent: str | None = None
    reason: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    key: str | None = None  # idempotency key: a second row with the same key is not written

    @property
    def is_note(self) -> bool:
        return self.from_state == self.to_state and "action" in self.data

    @property
    def is_requeue(self) -> bool:
        """A task taken back to pending (by the supervisor, a lease reaper or a retry)."""
        return self.entity == "task" and self.to_state == "pending" and self.from_state in REQUEUABLE


class RunDump(_Model):
    """Everything a store holds about one run, in deterministic order (snapshot payload)."""

    run: Run
    tasks: list[Task]
    dependencies: list[Dependency]
    agents: list[Agent] = Field(default_factory=list)
    events: list[Event] = Field(default_factory=list)
    history: list[Transition] = Field(default_factory=list)
