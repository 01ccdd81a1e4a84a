"""One run's directory and its frozen specification: every path of a run comes from ``RunPaths``.

Layout::

    <run dir>/run.json          the frozen RunSpec (what resume needs)
    <run dir>/experiment.yaml   the experiment file as it was
    <run dir>/orch.db           the store (file/sqlite), unless --store points elsewhere
    <run dir>/events/<agent>/   each agent's event files
    <run dir>/logs/<agent>.*    each agent's process output
    <run dir>/agents/<agent>.json  each runner's config
    <run dir>/worktrees/<agent> each agent's worktree
    <run dir>/repo/             the demo repository, when no --repo was given
    <run dir>/snapshot.json.gz, transitions.jsonl, metrics.json, criteria.json, summary.md   the exports
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from coordstore.errors import InputError
from coordstore.models import Role, works
from coordstore.private import private_dir, write_private


class AgentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    role: Role = "worker"
    tags: list[str] | None = None  # None: takes any task
    kind: str = "sim"
    options: dict[str, Any] = Field(default_factory=dict)
    instruction: str = ""  # agent-driven variants: the role's instruction

    @property
    def works(self) -> bool:
        """Coordinators and leads hand out work; they get no worktree."""
        return works(self.role)


class RunSpec(BaseModel):
    """Everything needed to (re)start a run, frozen into ``run.json`` at setup."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # JSON has no NaN: run.json must read back
    run_id: str
    experiment_id: str
    variant: str
    policy: str
    policy_options: dict[str, Any] = Field(default_factory=dict)
    coordination: str = "orch"  # orch | agents (coordstore.models.COORDINATIONS)
    kind_options: dict[str, Any] = Field(default_factory=dict)
    agents: list[AgentSpec]
    template: str  # path of the template file
    repo: str  # the target repository (the demo repo lives inside the run dir)
    base: str  # the base commit sha
    store_url: str
    seed: int
    time_scale: float
    timeout_s: float
    merge_mode: str = "immediate"
    on_blocker_failure: str = "cancel"
    supervision: dict[str, Any] = Field(default_factory=dict)
    model_server: str | None = None  # script of the run's own model server (None: agents use their own)
    allow_failures: bool = False  # failed or cancelled tasks leave the run finished (else: failed)
    workers: str = "local"  # local: orch spawns the runners; external: `orch worker`s take the agents' slots
    remote: str | None = None  # git URL of the bare repository where coordinator and workers meet (external)
    verify: dict[str, Any] | None = None  # the variant's verify: in its full form (runs.mergeverify.VerifySpec); None: none
    backpressure: str = "shared"  # rate limits: shared per provider, or each agent alone (agents.backpressure)
    budget: dict[str, Any] | None = None  # {usd, tokens}: stop dispatching once spent (orchestrator.runs.budget)

    @property
    def branch_prefix(self) -> str:
        return f"orch/{self.run_id}"

    def pacing(self, agent: AgentSpec, kind: str) -> dict[str, Any]:
        """The agent's back-pressure keys of its runner config (``agents.backpressure.pacing``),
        and whether the run has a budget to watch."""
        from agents.backpressure import pacing  # lazy: only where runner configs are written

        working = [(a.kind, {**self.kind_options, **a.options}) for a in self.agents if a.works]
        keys = pacing(self.backpressure, kind, {**self.kind_options, **agent.options}, working)
        return {**keys, "budgeted": bool(self.budget)}

    def agent_branch(self, agent: str) -> str:
        return f"{self.branch_prefix}/{agent}"

    @property
    def merged_branch(self) -> str:
        return f"{self.branch_prefix}/merged"


class RunPaths:
    def __init__(self, run_dir: Path):
        self.root = Path(run_dir).resolve()

    spec = property(lambda self: self.root / "run.json")
    experiment = property(lambda self: self.root / "experiment.yaml")
    db = property(lambda self: self.root / "orch.db")
    file_store = property(lambda self: self.root / "store")
    events = property(lambda self: self.root / "events")
    logs = property(lambda self: self.root / "logs")
    agent_configs = property(lambda self: self.root / "agents")
    worktrees = property(lambda self: self.root / "worktrees")
    demo_repo = property(lambda self: self.root / "repo")
    snapshot = property(lambda self: self.root / "snapshot.json.gz")
    transitions = property(lambda self: self.root / "transitions.jsonl")
    metrics = property(lambda self: self.root / "metrics.json")
    criteria = property(lambda self: self.root / "criteria.json")
    summary = property(lambda self: self.root / "summary.md")

    def events_of(self, agent: str) -> Path:
        return self.events / agent

    def worktree_of(self, agent: str) -> Path:
        return self.worktrees / agent

    def agent_config(self, agent: str) -> Path:
        return self.agent_configs / f"{agent}.json"

    def store_url(self, scheme_or_url: str) -> str:
        """A full URL as given, or the run dir's own store for a bare scheme."""
        if "://" in scheme_or_url:
            return scheme_or_url
        if scheme_or_url == "sqlite":
            return f"sqlite://{self.db}"
        if scheme_or_url == "file":
            return f"file://{self.file_store}"
        raise InputError(f"store {scheme_or_url!r}: give a URL or one of: sqlite, file")

    def write_spec(self, spec: RunSpec) -> None:
        private_dir(self.root)
        write_private(self.spec, spec.model_dump_json(indent=2) + "\n")

    def read_spec(self) -> RunSpec:
        try:
            return RunSpec.model_validate(json.loads(self.spec.read_text()))
        except FileNotFoundError as e:
            raise InputError(f"{self.root}: not a run directory (no run.json)") from e
        except (ValueError, OSError) as e:
            raise InputError(f"{self.spec}: unreadable run spec ({e})") from e
