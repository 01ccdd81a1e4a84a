"""The runner's configuration: one JSON file per agent, written by the orchestrator (or the test
harness) with ``write`` and read by the runner with ``load``.

One pydantic model for both sides: the writer builds it from typed fields (values it took from a
validated experiment, so a failure there is a bug: pydantic's own error), the runner validates the
file against the same model, and then checks its worktree is there. Every problem of a file is an
``InputError`` naming the file and the key. Unknown keys are refused: a typo must not
silently fall back to a default in an experiment. Numbers are strict: ``"5"``, ``5.0`` or
``true`` is not a count of milliseconds, NaN and infinity are no time scale.

The schema is built on first use (``defer_build``), like the store's models, so importing the
runner stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WrapValidator, model_validator

from coordstore.errors import InputError
from coordstore.files import read_file
from coordstore.models import COORDINATIONS, ROLES, Coordination, Role, works
from coordstore.private import write_private

MergeMode = Literal["immediate", "deferred"]
MERGE_MODES: tuple[str, ...] = get_args(MergeMode)

# A runner's rhythm, the orchestrator's defaults: it renews its lease every HEARTBEAT_MS; the lease
# lasts LEASE_MS without one before reap_expired may requeue its task; POLL_MS is its wait between
# looks at the store when nothing is ready.
HEARTBEAT_MS = 1_000
LEASE_MS = 30_000
POLL_MS = 20
# agent-driven variants: where the run's coordination tools are, and the agent's token for them,
# in each agent's environment (set by the orchestrator at spawn)
MCP_URL_ENV, MCP_TOKEN_ENV = "ORCH_MCP_URL", "ORCH_MCP_TOKEN"


class _BadKey(ValueError):
    """A rule that spans keys, reported against ``key``."""

    def __init__(self, key: str, msg: str):
        super().__init__(msg)
        self.key = key


def _rule(words: str) -> WrapValidator:
    """Whatever is wrong with the value, say it in ``words`` (``{!r}`` stands for the value)."""

    def check(value: Any, handler: Any) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise ValueError(words.format(value)) from None

    return WrapValidator(check)


_NONE_IS_EMPTY = BeforeValidator(lambda v: {} if v is None else v)
Name = Annotated[str, Field(min_length=1), _rule("must be a non-empty string")]
Millis = Annotated[int, Field(gt=0), _rule("{!r} must be a positive integer (milliseconds)")]
Options = Annotated[dict[str, Any], _NONE_IS_EMPTY, _rule("must be a mapping")]


class RunnerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, defer_build=True)

    store_url: Name
    run_id: Name
    agent_id: Name
    events_dir: Name
    role: Annotated[Role, _rule(f"{{!r}} is not one of {', '.join(ROLES)}")] = "worker"
    tags: Annotated[list[str] | None, _rule("must be a list of strings or null")] = None  # None: takes any task
    kind: str = "sim"
    kind_options: Options = Field(default_factory=dict)
    policy: str = "pull"
    policy_options: Options = Field(default_factory=dict)
    # agents: the agent picks its tasks through the coordination tools (their URL and its token
    # come in its environment); the runner keeps the process, the lease and the events
    coordination: Annotated[Coordination, _rule(f"{{!r}} is not one of {', '.join(COORDINATIONS)}")] = "orch"
    instruction: str = ""  # the agent's role instruction (agent-driven variants)
    worktree: str | None = None  # None for coordinators and leads
    repo: str | None = None  # the main repository (merges land there)
    merged_ref: str | None = None
    branch: str | None = None  # the agent's branch (informational; the worktree has it checked out)
    # a worker on another host: blockers' commits are fetched from this git remote and each task's
    # commit is pushed there before the task is reported done (gitwork.remote)
    remote: str | None = None
    remote_branch: str | None = None  # the agent's branch on the remote (forced to each task's commit)
    merge_mode: Annotated[MergeMode, _rule(f"{{!r}} is not one of {', '.join(MERGE_MODES)}")] = "immediate"
    seed: Annotated[int, _rule("{!r} must be an integer")] = 0
    time_scale: Annotated[float, Field(gt=0), _rule("{!r} must be a finite number > 0")] = 1.0
    # rate limits (agents.backpressure): agent = each agent pauses alone; shared = one AIMD limiter
    # per provider in the store, its concurrency at most provider_ceiling (the agents sharing it)
    backpressure: Annotated[Literal["shared", "agent"], _rule("{!r} is not one of shared, agent")] = "agent"
    provider: str | None = None  # None: from the kind (agents.backpressure.provider_of)
    provider_ceiling: Annotated[int, Field(ge=1), _rule("{!r} must be an integer >= 1")] = 1
    budgeted: bool = False  # the run has a budget: look for its stop before each decision (agents.budgetstop)
    heartbeat_ms: Millis = HEARTBEAT_MS
    lease_ms: Millis = LEASE_MS
    poll_ms: Millis = POLL_MS

    @model_validator(mode="after")
    def _executes(self) -> "RunnerConfig":
        if self.works:
            if not self.worktree:
                raise _BadKey("worktree", f"role {self.role} executes tasks and needs a worktree")
            if self.merge_mode == "immediate" and not (self.repo and self.merged_ref):
                raise _BadKey("merged_ref", "merge_mode immediate needs both 'repo' and 'merged_ref'")
        return self

    @property
    def works(self) -> bool:
        """Whether this agent executes tasks (coordinators and leads only hand them out)."""
        return works(self.role)

    # ------------------------------------------------------------------ the file
    def write(self, path: str | Path) -> None:
        """The config file, replaced atomically, for its owner's eyes only."""
        write_private(path, self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "RunnerConfig":
        p = Path(path)
        text = read_file(p, "runner config")
        try:
            cfg = cls.model_validate_json(text)
        except ValidationError as e:
            raise _input_error(e, str(p)) from e
        return cfg._on_disk(str(p))

    @classmethod
    def from_dict(cls, data: Any, source: str = "") -> "RunnerConfig":
        """A config read from a mapping (JSON already parsed), checked as ``load`` checks a file."""
        try:
            cfg = cls.model_validate(data)
        except ValidationError as e:
            raise _input_error(e, source) from e
        return cfg._on_disk(source)

    def _on_disk(self, source: str) -> "RunnerConfig":
        """What the runner needs of the machine it runs on: its worktree."""
        if self.works and not Path(self.worktree or "").is_dir():
            raise InputError(f"{source or 'runner config'}: key 'worktree': {self.worktree} is not a directory")
        return self


def _input_error(e: ValidationError, source: str) -> InputError:
    """The one line for a config that does not validate: bad JSON or shape first, then unknown
    keys (the first by name, with the known ones), missing keys, the first bad value."""
    where = source or "runner config"
    errors = e.errors()
    kinds = {err["type"] for err in errors}
    if "json_invalid" in kinds:
        bad = next(err for err in errors if err["type"] == "json_invalid")
        return InputError(f"runner config {source}: unreadable ({bad['msg']})")
    if "model_type" in kinds:
        return InputError(f"{where}: must be a JSON object")
    unknown = sorted(str(err["loc"][0]) for err in errors if err["type"] == "extra_forbidden")
    if unknown:
        return InputError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(RunnerConfig.model_fields))})")
    missing = [str(err["loc"][0]) for err in errors if err["type"] == "missing"]
    if missing:
        return InputError(f"{where}: missing key {missing[0]!r}")
    err = errors[0]
    cause = (err.get("ctx") or {}).get("error")
    key = cause.key if isinstance(cause, _BadKey) else ".".join(str(p) for p in err["loc"])
    msg = str(cause) if isinstance(cause, ValueError) else err["msg"]
    return InputError(f"{where}: key {key!r}: {msg}")
