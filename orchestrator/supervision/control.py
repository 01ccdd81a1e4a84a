"""The run's agent processes: spawn runners, observe them for the supervisor, kill, respawn, degrade.

Implements the supervisor's ``Controller`` protocol over real processes (``procs``) and the store.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from coordstore.models import Agent
from coordstore.private import private_dir

from agents.config import MCP_TOKEN_ENV, RunnerConfig

from orchestrator.coordination.tokens import read_tokens
from orchestrator.rundir import AgentSpec, RunPaths, RunSpec
from orchestrator.supervision.interrupts import deferred
from orchestrator.supervision.observe import observe_agent
from orchestrator.supervision.procs import AgentProcess, spawn
from orchestrator.supervision.verdicts import SupervisionConfig


class AgentRoster:
    """What every ``Controller`` keeps of the run's agents, wherever their runners live: specs, the
    supervisor's switches (fallback kinds, disabled agents, avoid hints) and the evidence record."""

    def __init__(self, spec: RunSpec, paths: RunPaths, store):
        self.spec = spec
        self.paths = paths
        self.store = store
        self.procs: dict[str, object] = {}  # local runners only: observe_agent judges the others by lease and events
        self.kind_override: dict[str, str] = {}
        self.disabled: set[str] = set()  # agents stopped for good (degraded mode)
        self.avoid_hints: dict[str, set[str]] = {}
        self.event_states: dict = {}  # observe.EventState per agent
        self.extra_env: dict[str, str] = {}  # e.g. the run's model server URL, given to every runner
        self.supervision = SupervisionConfig.load(spec.supervision, where="execution.supervision")

    def agent(self, agent_id: str) -> AgentSpec:
        return next(a for a in self.spec.agents if a.id == agent_id)

    def kind_of(self, agent_id: str) -> str:
        """The kind the agent's runner runs now (its fallback kind once the supervisor switched it)."""
        return self.kind_override.get(agent_id, self.agent(agent_id).kind)

    # ------------------------------------------------------------------ Controller protocol (shared part)
    def agents(self) -> list[str]:
        return [a.id for a in self.spec.agents if a.id not in self.disabled]

    def observe(self, agent_id: str, now: int):
        return observe_agent(self, agent_id, now)

    def avoid(self, task_id: str, agent_id: str) -> None:
        self.avoid_hints.setdefault(task_id, set()).add(agent_id)


class RunController(AgentRoster):
    """The Controller of a run whose runners are this machine's processes."""

    def __init__(self, spec: RunSpec, paths: RunPaths, store):
        super().__init__(spec, paths, store)
        self._tokens: dict[str, str] | None = None  # agent-driven: each agent's coordination token

    # ------------------------------------------------------------------ config + spawn

    def runner_config(self, a: AgentSpec) -> RunnerConfig:
        """The agent's runner config (heartbeat, lease and poll at the runner's defaults)."""
        s = self.spec
        return RunnerConfig(
            store_url=s.store_url,
            run_id=s.run_id,
            agent_id=a.id,
            role=a.role,
            tags=a.tags,
            kind=self.kind_of(a.id),
            kind_options={**s.kind_options, **a.options},
            policy=s.policy,
            policy_options=s.policy_options,
            coordination=s.coordination,
            instruction=a.instruction,
            worktree=str(self.paths.worktree_of(a.id)) if a.works else None,
            repo=s.repo,
            events_dir=str(self.paths.events_of(a.id)),
            merged_ref=f"refs/heads/{s.merged_branch}",
            branch=s.agent_branch(a.id),
            merge_mode=s.merge_mode,
            seed=s.seed,
            time_scale=s.time_scale,
            lease_ms=self.supervision.lease_ms,
            **s.pacing(a, self.kind_of(a.id)),
        )

    def spawn(self, agent_id: str) -> None:
        a = self.agent(agent_id)
        cfg, config = self.paths.agent_config(a.id), self.runner_config(a)
        private_dir(cfg.parent)
        config.write(cfg)
        private_dir(self.paths.events_of(a.id))
        env = {
            **os.environ,
            **self.extra_env,
            "ORCH_RUN_ID": self.spec.run_id,
            "ORCH_AGENT_ID": a.id,
            "ORCH_STORE_URL": self.spec.store_url,
            "ORCH_WORKTREE": str(self.paths.worktree_of(a.id)) if a.works else "",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])),
        }
        if self.spec.coordination == "agents":  # its own token only: it acts as itself and no other
            env[MCP_TOKEN_ENV] = self.token_of(a.id)
        cwd = self.paths.worktree_of(a.id) if a.works else self.paths.root
        with deferred():  # a signal now would leave a runner nobody knows of: it waits until it is recorded
            proc = spawn([sys.executable, "-m", "agents.runner", "--config", str(cfg)], a.id, env, cwd, self.paths.logs)
            self.procs[a.id] = proc
            self.store.register_agent(
                self.spec.run_id,
                Agent(id=a.id, kind=self.kind_of(a.id), role=a.role, tags=a.tags or [], pid=proc.pid, create_time=proc.create_time),
                lease_ms=config.lease_ms,
            )

    def token_of(self, agent_id: str) -> str:
        """The agent's coordination token, from the run's token file (read once)."""
        if self._tokens is None:
            self._tokens = read_tokens(self.paths)
        return self._tokens[agent_id]

    def spawn_all(self) -> None:
        for a in self.spec.agents:
            self.spawn(a.id)

    def attach_all(self) -> list[str]:
        """After an orchestrator restart: re-attach to live runners; return the ids of the agents
        whose runner is gone. Every one of them is respawned, "stopped" ones too: a resumed run is
        not over, and an interrupted run's runners were stopped (or never spawned) by the signal."""
        records = {rec.id: rec for rec in self.store.list_agents(self.spec.run_id)}
        gone = []
        for a in self.spec.agents:
            rec = records.get(a.id)
            proc = AgentProcess.attach(rec.pid, rec.create_time, a.id) if rec else None  # None: gone
            if proc is not None:
                self.procs[a.id] = proc
            else:
                gone.append(a.id)
        return gone

    # ------------------------------------------------------------------ Controller protocol
    def kill(self, agent_id: str) -> None:
        proc = self.procs.get(agent_id)
        if proc is not None:
            proc.stop(grace_s=self.supervision.kill_grace_s)

    def respawn(self, agent_id: str, kind: str | None = None) -> None:
        if kind:
            self.kind_override[agent_id] = kind
        self.kill(agent_id)
        self.event_states.pop(agent_id, None)  # the new process starts with a clean record
        self.spawn(agent_id)

    def degrade(self, keep: str) -> None:
        """Fall back to one agent working sequentially: stop every other worker for good."""
        for a in self.spec.agents:
            if a.id != keep and a.works:
                self.disabled.add(a.id)
                self.kill(a.id)
                self.store.set_agent_status(self.spec.run_id, a.id, "stopped", reason=f"degraded to {keep} alone")

    def stop_all(self, grace_s: float = 3.0) -> None:
        for proc in self.procs.values():
            proc.stop(grace_s=grace_s)

    def all_exited(self) -> bool:
        return all(not p.alive() for p in self.procs.values())
