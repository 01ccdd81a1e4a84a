"""Real CLI agents (claude, codex, gemini, opencode) in agent-driven variants: ONE long-lived CLI
process is the agent for the whole run, playing its role through orch's coordination tools.

``begin()`` starts the CLI once with its role prompt (``agents.clis.roleprompt``) and orch's MCP
server configured (``Invocation.mcp``: the run's server, the agent's own token; each preset
configures it its own way). Its working directory is the agent's worktree, or a private scratch
directory for a coordinator or a lead. With the run's model server (``ORCH_MODEL_SERVER_URL``) the
CLI talks to a ROLE SESSION of it: the session's context names the role script, the agent, the
run and the role options (``agents.kinds.clirole``), and every base-URL variable of the CLI points
there (``agent_env``).

``step()`` reads what the CLI printed, through its preset's parser, as the agent's events: an orch
tool call is a ``step`` named by the tool's bare name with ``tool`` set (about the task it names),
a read-only look (``list_tasks``, ``get``, ...) or a shell command that only sleeps is marked
``poll`` (waiting for work is no loop), tokens, errors and rate limits as for any CLI. The CLI's
own output is its proof of life: the driven loop renews the lease but writes no heartbeats
(``heartbeats = False``), so a CLI that hangs goes silent and the supervisor judges it stalled.

When the CLI exits, the runner asks whether the run is over (``agents.driven``); if not, the next
``step()`` starts a new session (a ``log`` event says why), after giving back (``update
status=pending``) a task the agent still has ``working`` and dropping the half-done work in its
worktree -- ``max_respawns`` times, then ``AgentError``. ``end()`` stops the CLI (SIGTERM to its
process tree, SIGKILL after a grace) and disconnects; ``close()``, run whatever happened (SIGTERM to
the runner included), leaves no process behind.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from coordstore.errors import AgentError
from gitwork import agentgit

from agents.clis import parser_class
from agents.clis.base import MODEL_SERVER_ENV, CliEvent, Invocation, McpEndpoint, mcp_tool_name, sleeps_only
from agents.clis.config import CliConfig
from agents.clis.roleprompt import role_prompt
from agents.clis.serverurl import agent_env, session_url
from agents.config import MCP_TOKEN_ENV, MCP_URL_ENV
from agents.kinds import resolve_kind
from agents.kinds.clirole import CliRole
from agents.kinds.cliproc import CliProcess, write_events
from agents.kinds.simroles import READS
from agents.toolclient import ToolRefused

STEP_S = 0.2  # how long one step waits for the CLI's output: the runner's look at the run's end
# once the run is over: the CLI's own last look ends it (its role script says so); then SIGTERM,
# SIGKILL -- all within the orchestrator's drain (runs.loop.DRAIN_S) before it stops runners
END_GRACE_S, END_STOP_GRACE_S = 3.0, 1.0
SERVER_KEY_ENV = "ANTHROPIC_API_KEY"  # the run's model server key, set with its URL by the orchestrator
GIVEN_BACK = ("completed", "failed", "pending", "cancelled")  # an update that ends the agent's hold on a task


class CliPlayer:
    kind = ""  # the CLI kind, its preset's name (each subclass)
    heartbeats = False  # the CLI's own output proves life: the driven loop renews the lease only

    def __init__(self, cfg, client, events, pulse):
        self.cfg, self.client, self.events, self.pulse = cfg, client, events, pulse
        self.role = CliRole.build(self.kind, cfg.policy, cfg.role, cfg.kind_options, cfg.tags)
        self.cli = CliConfig.build(self.kind, self.role.cli_options, self.kind)
        self.binary = self.cli.resolve_binary()
        self.home = Path(tempfile.mkdtemp(prefix=f"orch-{self.kind}-"))  # prompts, the CLI's scratch, a desk
        self.proc: CliProcess | None = None
        self.spawns = 0
        self.ended: str | None = None  # why the last session ended (while waiting for the next)
        self.retry_after: float | None = None  # it gave up on a rate limit: wait before the next
        self.known: frozenset[str] = frozenset()  # the server's tool names (CLIs that call them bare)
        self.current: str | None = None  # the task the CLI holds, as its calls say
        self.totals: dict[str, Any] = {}

    @classmethod
    def preflight(cls, policy: str, role: str, options: dict[str, Any] | None) -> None:
        """At plan time: a role script plays the role, the options split and read, the CLI is
        there with credentials (``AgentError`` naming what is wrong)."""
        r = CliRole.build(cls.kind, policy, role, options)
        resolve_kind(cls.kind).preflight(r.cli_options)

    # ------------------------------------------------------------------ the driven loop's calls
    def begin(self) -> None:
        self.known = self.client.tool_names()
        self._spawn()

    def step(self) -> bool:
        """Whether the CLI said anything; once it exited (the run not over, or the runner would
        not ask): the next session."""
        if self.proc is None:
            self._respawn()
            return True
        said = self.proc.read(STEP_S)
        self._write(said)
        if not self.proc.over:
            return bool(said)
        proc, self.proc = self.proc, None
        self._write(proc.stop())
        self.ended = proc.failure() or f"{proc.name} exited 0"
        self.retry_after = proc.parser.gave_up_rate_limited
        self.events.log(f"{self.kind} session {self.spawns} ended: {self.ended}", task=self.current)
        return True

    def wait_s(self) -> float:
        return 0.0  # step() waits for the CLI itself

    def end(self) -> None:
        """The run is over: let the CLI see it and finish (its last words carry a session's token
        totals), stop it if it does not, say goodbye."""
        if self.proc is not None:
            proc, self.proc = self.proc, None
            deadline = time.monotonic() + END_GRACE_S
            while not proc.over and time.monotonic() < deadline:
                self._write(proc.read(STEP_S))
                self.pulse.renew()
            stopped = proc.alive()
            self._write(proc.stop(grace_s=END_STOP_GRACE_S))
            self.events.log(f"{self.kind} session {self.spawns} " + ("stopped: the run is over" if stopped else "ended with the run"))
        try:
            self.client.call("disconnect")
        except (ToolRefused, AgentError) as e:
            self.events.log(f"disconnect failed: {getattr(e, 'text', e)}", level="warning")
        self.close()

    def close(self) -> None:
        """Kill the CLI's process tree if it runs, remove the scratch files. Idempotent."""
        if self.proc is not None:
            proc, self.proc = self.proc, None
            proc.kill()
        shutil.rmtree(self.home, ignore_errors=True)

    # ------------------------------------------------------------------ sessions
    def _spawn(self) -> None:
        c, n = self.cfg, self.spawns + 1
        preset = self.cli.preset
        cwd = Path(c.worktree) if c.works else self.home / "desk"
        scratch = self.home / f"session-{n}"
        for d in (cwd, scratch):
            d.mkdir(parents=True, exist_ok=True)
        prompt = role_prompt(agent=c.agent_id, run=c.run_id, role=c.role, policy=c.policy, instruction=c.instruction,
                             script=self.role.script, tags=c.tags, works=c.works)
        prompt_file = scratch / "prompt.md"
        prompt_file.write_text(prompt)
        inv = Invocation(prompt=prompt, prompt_file=str(prompt_file), worktree=str(cwd), scratch=str(scratch),
                         model=self.cli.model, settings=dict(self.cli.settings), extra_args=tuple(self.cli.extra_args),
                         mcp=McpEndpoint(self.client.url, self.client.token))
        served = self._served(n)
        with _environ(served):  # presets that declare the model server read its URL while they build
            argv = [self.binary, *preset.build(inv)]
            own = preset.env(inv) if preset.env else {}
        env = {**os.environ, **served, **self.cli.env, **own, **agentgit.identity(c.agent_id), "PWD": str(cwd),
               "ORCH_RUN_ID": c.run_id, "ORCH_AGENT_ID": c.agent_id, "ORCH_ROLE": c.role,
               MCP_URL_ENV: inv.mcp.url, MCP_TOKEN_ENV: inv.mcp.token}
        stdin = prompt_file if preset.prompt_on_stdin else None
        self.proc = CliProcess(argv, cwd, env, parser_class(self.cli.parser)(), stdin, self.kind)
        self.spawns = n
        shown = shlex.join("<prompt>" if a == prompt else a for a in argv)
        self.events.log(f"{self.kind}: {shown}", level="debug")
        self.events.log(f"{self.kind} session {n} started (pid {self.proc.pid}): {c.role} under {c.policy}, "
                        f"role script {self.role.script}" + ("" if served else " (no model server: the CLI's own)"))

    def _served(self, n: int) -> dict[str, str]:
        """The CLI's model-server variables for session ``n``: every base URL at a role session."""
        base = os.environ.get(MODEL_SERVER_ENV)
        if not base:
            return {}
        c = self.cfg
        # the runner's pid too: a runner the supervisor respawned starts its own sessions
        url = session_url(base, session=f"{c.agent_id}.{n}.{os.getpid()}", script=self.role.script,
                          worktree=c.worktree if c.works else None, seed=c.seed, time_scale=c.time_scale,
                          agent=c.agent_id, run=c.run_id, options=self.role.options)
        return {**agent_env(url, os.environ.get(SERVER_KEY_ENV, "")), MODEL_SERVER_ENV: url}

    def _respawn(self) -> None:
        why, done = self.ended, self.spawns - 1
        if done >= self.role.max_respawns:
            raise AgentError(f"agent {self.cfg.agent_id}: its {self.kind} CLI ended {self.spawns} times before the run "
                             f"was over (max_respawns {self.role.max_respawns}); the last time: {why}")
        self.events.log(f"{self.kind} ended before the run was over ({why}): starting session {self.spawns + 1} "
                        f"(respawn {done + 1} of {self.role.max_respawns})", level="warning")
        self._give_back(why or "ended")
        wt = self.cfg.worktree
        if self.cfg.works and agentgit.is_dirty(wt):  # the half-done work of the task given back
            agentgit.discard(wt)
            self.events.log("discarded uncommitted changes the ended session left in the worktree", level="warning")
        if self.retry_after:
            wait = min(self.retry_after, self.cli.rate_limit_max_wait_s)
            self.events.rate_limited(wait)
            self.pulse.sleep(wait)
            self.retry_after = None
        self._spawn()

    def _give_back(self, why: str) -> None:
        """Requeue the task(s) the agent still has working: its next session starts afresh."""
        me = self.cfg.agent_id
        try:
            held = self.client.call("list_tasks", owner=me, status="working")
        except ToolRefused as e:
            self.events.log(f"could not list the tasks left working: {e.text}", level="warning")
            return
        for t in held if isinstance(held, list) else []:
            tid = t.get("id") if isinstance(t, dict) else None
            if not tid:
                continue
            try:
                self.client.call("update", task=tid, status="pending", reason=f"{self.kind} session ended: {why}"[:500])
                self.events.log(f"task {tid} given back: the {self.kind} session working on it ended", level="warning", task=tid)
            except ToolRefused as e:
                self.events.log(f"task {tid} could not be given back: {e.text}", level="warning", task=tid)
        self._hold(None)

    # ------------------------------------------------------------------ events
    def _write(self, events: list[CliEvent]) -> None:
        for e in events:
            task = self.current
            if e.type == "step":
                e = self._marked(e)
                args = e.data.get("args")
                if e.data.get("tool") and isinstance(args, dict) and isinstance(args.get("task"), str):
                    task = args["task"]
                    self._follow(e.data["name"], args)
            write_events([e], self.events, task, self.totals, self.cli.cost_of)

    def _marked(self, e: CliEvent) -> CliEvent:
        """A step as orch names it: an orch tool by its bare name (``tool``), reads and sleeps ``poll``."""
        name, args = str(e.data.get("name")), e.data.get("args")
        bare = mcp_tool_name(name, known=self.known)
        if bare is not None:
            if isinstance(args, str):  # arguments as a JSON text
                try:
                    args = json.loads(args)
                except ValueError:
                    pass
            return CliEvent("step", {"name": bare, "args": args, "tool": True, **({"poll": True} if bare in READS else {})})
        if sleeps_only(args):
            return CliEvent("step", {**e.data, "poll": True})
        return e

    def _follow(self, tool: str, args: dict) -> None:
        """The task the agent holds, from its calls (its events are about it)."""
        if tool == "claim":
            self._hold(args["task"])
        elif tool == "update" and (args.get("status") or args.get("state")) in GIVEN_BACK and args["task"] == self.current:
            self._hold(None)

    def _hold(self, task: str | None) -> None:
        self.current = self.pulse.current_task = task


@contextmanager
def _environ(values: dict[str, str]):
    """``os.environ`` with ``values`` laid over it, restored after."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class ClaudePlayer(CliPlayer):
    kind = "claude"


class CodexPlayer(CliPlayer):
    kind = "codex"


class GeminiPlayer(CliPlayer):
    kind = "gemini"


class OpencodePlayer(CliPlayer):
    kind = "opencode"
