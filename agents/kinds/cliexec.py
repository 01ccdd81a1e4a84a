"""aider in agent-driven variants: a CLI without tool calls cannot coordinate, so it only executes.

The runner itself plays the push worker at the coordination tools -- it looks for the tasks
assigned to its agent (``list_tasks owner=me status=assigned``), claims the first, runs the aider
kind on it in the worktree exactly as in orch-driven variants (one aider process per task,
``agents.kinds.command``), then ``update(status=completed)`` (the server commits, verifies and
merges) or ``failed`` with the reason, and reports the task's tokens (``log_metrics``). It is the
sim's push worker (``agents.kinds.simworkers.PushWorker``) on a seat whose executor is aider and
whose turns cost nothing: no model decides, the runner does.

Anything else -- a coordinator, a lead, a pulling or hybrid worker -- needs a CLI that calls tools
and is refused at plan time. Options: aider's own (``agents.clis.config``) plus ``poll_s`` /
``poll_max_s`` (seconds between looks for assigned work, doubling; wall clock).
"""

from __future__ import annotations

from typing import Any

from coordstore.errors import AgentError

from agents.kinds import resolve_kind
from agents.kinds.clirole import DEFAULT_POLL_MAX_S, DEFAULT_POLL_S, check_rhythm, split_options
from agents.kinds.simplay import SimPlayer
from agents.kinds.simroles import Seat
from agents.kinds.simworkers import PushWorker

EXEC_KEYS = ("poll_s", "poll_max_s")
EXECUTES = ("push", "worker")  # the one (policy, role) a CLI without tool calls can play


class ExecSeat(Seat):
    """A seat whose calls are the runner's own (no model turn, no tokens) and whose work is a CLI
    kind's run."""

    def __init__(self, cfg, client, events, pulse, rhythm: dict[str, Any], executor):
        super().__init__(cfg, client, events, pulse, rhythm)
        self.executor = executor

    def turn(self, name: str, about: str | None, poll: dict[str, bool]) -> None:
        return None  # the runner decides: no model turn to wait for or pay

    wait_scale = 1.0  # poll_s and poll_max_s are wall seconds: a real CLI's run is not scaled


class ExecutorPlayer(SimPlayer):
    kind = ""  # the CLI kind (each subclass)

    def __init__(self, cfg, client, events, pulse):
        self.preflight(cfg.policy, cfg.role, cfg.kind_options)
        rhythm, cli = split_options(self.kind, dict(cfg.kind_options), EXEC_KEYS)
        rhythm = {"poll_s": DEFAULT_POLL_S, "poll_max_s": DEFAULT_POLL_MAX_S, **rhythm}
        self.seat = ExecSeat(cfg, client, events, pulse, rhythm, resolve_kind(self.kind)(cli))
        self.role = PushWorker(self.seat)
        self.unknown = []

    @classmethod
    def preflight(cls, policy: str, role: str, options: dict[str, Any] | None) -> None:
        """At plan time: only a push worker, with the CLI's options and the rhythm's."""
        if (policy, role) != EXECUTES:
            raise AgentError(f"kind {cls.kind} cannot play {role} under policy {policy} in agent-driven variants: it "
                             f"makes no tool calls, so it only executes tasks assigned to it ({EXECUTES[1]} under "
                             f"policy {EXECUTES[0]}); use claude, codex, gemini or opencode for this role")
        rhythm, cli = split_options(cls.kind, dict(options or {}), EXEC_KEYS)
        check_rhythm(cls.kind, rhythm)
        resolve_kind(cls.kind).preflight(cli)


class AiderPlayer(ExecutorPlayer):
    kind = "aider"
