"""The runner's configuration: one JSON file per agent, written by the orchestrator.

A plain dataclass (not pydantic) so the runner starts fast; every problem is an ``InputError``
naming the file and the key. Unknown keys are refused: a typo must not silently fall back to a
default in an experiment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from coordstore.errors import InputError
from coordstore.numbers import is_number

ROLES = ("worker", "coordinator", "lead", "solo", "specialist")
MERGE_MODES = ("immediate", "deferred")
# roles that hand out work and execute none (no worktree, no agent kind)
DISPATCH_ROLES = ("coordinator", "lead")


@dataclass
class RunnerConfig:
    store_url: str
    run_id: str
    agent_id: str
    events_dir: str
    role: str = "worker"
    tags: list[str] | None = None  # None: takes any task
    kind: str = "sim"
    kind_options: dict[str, Any] = field(default_factory=dict)
    policy: str = "pull"
    policy_options: dict[str, Any] = field(default_factory=dict)
    worktree: str | None = None  # None for coordinators and leads
    repo: str | None = None  # the main repository (merges land there)
    merged_ref: str | None = None
    branch: str | None = None  # the agent's branch (informational; the worktree has it checked out)
    merge_mode: str = "immediate"
    seed: int = 0
    time_scale: float = 1.0
    heartbeat_ms: int = 1_000
    lease_ms: int = 30_000
    poll_ms: int = 20
    source: str = field(default="", repr=False)  # where this config came from, for messages

    @property
    def works(self) -> bool:
        """Whether this agent executes tasks (coordinators and leads only hand them out)."""
        return self.role not in DISPATCH_ROLES

    def _bad(self, key: str, msg: str) -> InputError:
        return InputError(f"{self.source or 'runner config'}: key {key!r}: {msg}")

    def check(self) -> "RunnerConfig":
        for key in ("store_url", "run_id", "agent_id", "events_dir"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise self._bad(key, "must be a non-empty string")
        if self.role not in ROLES:
            raise self._bad("role", f"{self.role!r} is not one of {', '.join(ROLES)}")
        if self.merge_mode not in MERGE_MODES:
            raise self._bad("merge_mode", f"{self.merge_mode!r} is not one of {', '.join(MERGE_MODES)}")
        if self.tags is not None and (not isinstance(self.tags, list) or not all(isinstance(t, str) for t in self.tags)):
            raise self._bad("tags", "must be a list of strings or null")
        for key in ("kind_options", "policy_options"):
            if not isinstance(getattr(self, key), dict):
                raise self._bad(key, "must be a mapping")
        for key in ("heartbeat_ms", "lease_ms", "poll_ms"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise self._bad(key, f"{v!r} must be a positive integer (milliseconds)")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise self._bad("seed", f"{self.seed!r} must be an integer")
        if not is_number(self.time_scale) or self.time_scale <= 0:
            raise self._bad("time_scale", f"{self.time_scale!r} must be a finite number > 0")
        if self.works:
            if not self.worktree:
                raise self._bad("worktree", f"role {self.role} executes tasks and needs a worktree")
            if not Path(self.worktree).is_dir():
                raise self._bad("worktree", f"{self.worktree} is not a directory")
            if self.merge_mode == "immediate" and not (self.repo and self.merged_ref):
                raise self._bad("merged_ref", "merge_mode immediate needs both 'repo' and 'merged_ref'")
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "") -> "RunnerConfig":
        if not isinstance(data, dict):
            raise InputError(f"{source or 'runner config'}: must be a JSON object")
        known = {f.name for f in fields(cls)} - {"source"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"{source or 'runner config'}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
        missing = [k for k in ("store_url", "run_id", "agent_id", "events_dir") if k not in data]
        if missing:
            raise InputError(f"{source or 'runner config'}: missing key {missing[0]!r}")
        opts = {k: (v if v is not None else {}) for k, v in data.items() if k in ("kind_options", "policy_options")}
        return cls(**{**data, **opts}, source=source).check()

    @classmethod
    def load(cls, path: str | Path) -> "RunnerConfig":
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError as e:
            raise InputError(f"runner config {p}: no such file") from e
        except (OSError, ValueError) as e:
            raise InputError(f"runner config {p}: unreadable ({e})") from e
        return cls.from_dict(data, source=str(p))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "source"}
