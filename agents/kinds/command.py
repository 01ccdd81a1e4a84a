"""The ``command`` kind and its presets (``claude``, ``codex``, ``aider``, ``gemini``, ``opencode``):
a real CLI coding agent run headless in the worktree, its output parsed into orch events.

For each task the kind builds a prompt from the task (``agents.clis.prompt``), runs the CLI in
the worktree with the prompt, reads its stdout line by line through the preset's parser
(``agents.clis.<preset>``) and writes the resulting ``step``/``tokens``/``log``/``error``/
``rate_limited`` events (the process and its output: ``agents.kinds.cliproc``, shared with the
long-lived CLI players of agent-driven variants). The runner then commits what the CLI changed,
exactly as for ``sim``.

- The CLI runs in the runner's process group, so stopping the runner stops it too; a timeout
  kills its whole process tree. Heartbeats go on while it thinks.
- A rate limit the CLI retried itself is only reported (back-pressure). One it gave up on is
  waited out and the CLI is run again, ``rate_limit_retries`` times.
- ``preflight(kind, options)`` checks, at plan time and before any worktree exists, that the
  options are valid, the executable is there and credentials are set (``AgentError`` if not).

Options: ``agents.clis.config``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.clis import parser_class
from agents.clis.base import Invocation
from agents.clis.config import CliConfig
from agents.clis.prompt import build_prompt
from agents.kinds import KindContext, Result, output_tail
from agents.kinds.cliproc import CliProcess, write_events

# the kinds built on this module: name -> preset (None: the generic command kind)
CLI_KINDS: dict[str, str | None] = {"command": None, "claude": "claude", "codex": "codex", "aider": "aider",
                                    "gemini": "gemini", "opencode": "opencode"}


@dataclass
class _Outcome:
    ok: bool
    reason: str | None = None
    retry_after: float | None = None  # the CLI gave up on a rate limit: wait this long, run again
    data: dict[str, Any] = field(default_factory=dict)


class CommandKind:
    name = "command"
    preset_name: str | None = None

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.cfg = CliConfig.build(self.name, options, self.preset_name)

    @classmethod
    def preflight(cls, options: dict[str, Any] | None) -> None:
        """Valid options, an executable, credentials: ``AgentError`` naming what is missing."""
        cfg = CliConfig.build(cls.name, options, cls.preset_name)
        cfg.resolve_binary()
        cfg.check_credentials()

    # ------------------------------------------------------------------ one task
    def run(self, task, ctx: KindContext) -> Result:
        cfg, tid = self.cfg, task.id
        binary = cfg.resolve_binary()
        role = getattr(ctx, "role", None) or "worker"
        prompt = build_prompt(task, ctx.agent_id, role, max(1, ctx.attempt), cfg.prompt_template)
        totals = {"in": 0, "out": 0, "cached": 0, "thinking": 0, "cost_usd": 0.0}
        wt = Path(ctx.worktree)
        scratch_paths = cfg.preset.scratch_paths if cfg.preset else ()
        existed = {p for p in scratch_paths if os.path.lexists(wt / p)}
        with tempfile.TemporaryDirectory(prefix="orch-cli-") as scratch:
            prompt_file = Path(scratch) / "prompt.md"
            prompt_file.write_text(prompt)
            inv = Invocation(prompt=prompt, prompt_file=str(prompt_file), worktree=str(wt), scratch=scratch,
                             file_scope=tuple(task.file_scope or ()), model=cfg.model, settings=dict(cfg.settings),
                             extra_args=tuple(cfg.extra_args))
            argv = [binary, *self._args(inv, tid)]
            extra_env = cfg.preset.env(inv) if cfg.preset and cfg.preset.env else {}
            stdin = prompt_file if (cfg.preset and cfg.preset.prompt_on_stdin) else None
            shown = shlex.join("<prompt>" if a == prompt else a for a in argv)
            ctx.events.log(f"{self.name}: {shown}", level="debug", task=tid)
            tries = 0
            try:
                while True:
                    outcome = self._run_once(argv, stdin, task, ctx, totals, extra_env)
                    if outcome.ok or outcome.retry_after is None or tries >= cfg.rate_limit_retries:
                        break
                    tries += 1
                    wait = min(outcome.retry_after, cfg.rate_limit_max_wait_s)
                    ctx.events.log(f"{self.name} gave up on a rate limit; running it again in {wait:g}s "
                                   f"(retry {tries} of {cfg.rate_limit_retries})", level="warning", task=tid)
                    ctx.rate_limited(wait, task=tid)  # waited as the run's back-pressure says (alone or shared)
            finally:
                for p in scratch_paths:  # the CLI's own caches must not end up in the task's commit
                    target = wt / p
                    if p in existed or not os.path.lexists(target):
                        continue
                    if target.is_dir() and not target.is_symlink():
                        shutil.rmtree(target)
                    else:
                        target.unlink()
        data = {"cli": cfg.preset.name if cfg.preset else cfg.binary, **outcome.data}
        if tries:
            data["rate_limit_reruns"] = tries
        return Result(ok=outcome.ok, reason=outcome.reason, data=data, tokens=totals)

    def _args(self, inv, task_id: str) -> list[str]:
        cfg = self.cfg
        if cfg.preset is not None:
            return cfg.preset.build(inv)
        values = {"{prompt}": inv.prompt, "{prompt_file}": inv.prompt_file, "{worktree}": inv.worktree,
                  "{scratch}": inv.scratch, "{task_id}": task_id, "{model}": cfg.model or ""}
        out = []
        for arg in cfg.argv[1:]:
            for key, value in values.items():
                arg = arg.replace(key, value)
            out.append(arg)
        return out + list(inv.extra_args)

    def _run_once(self, argv: list[str], stdin_file: Path | None, task, ctx: KindContext, totals: dict,
                  extra_env: dict[str, str]) -> _Outcome:
        cfg, tid = self.cfg, task.id
        # PWD too: some CLIs (opencode) take their project directory from it, not from the real cwd
        env = {**cfg.environment(), **extra_env, **ctx.identity, "PWD": str(ctx.worktree), "ORCH_RUN_ID": ctx.run_id, "ORCH_AGENT_ID": ctx.agent_id,
               "ORCH_TASK_ID": tid, "ORCH_ATTEMPT": str(ctx.attempt)}
        proc = CliProcess(argv, ctx.worktree, env, parser_class(cfg.parser)(), stdin_file, self.name)
        deadline = time.monotonic() + cfg.timeout_s
        timed_out = False
        try:
            while not proc.over:
                self._emit(proc.read(), tid, ctx, totals)
                ctx.pulse.renew()  # the lease only: the CLI's own output is its proof of life
                if not timed_out and time.monotonic() > deadline:
                    timed_out = True
                    ctx.events.error(f"{proc.name} did not finish within {cfg.timeout_s:g}s: killing it", task=tid)
                    proc.kill()
        finally:
            if proc.alive():  # interrupted (SIGTERM) or a bug: leave no CLI behind
                proc.kill()
        self._emit(proc.finish(), tid, ctx, totals)
        parser = proc.parser
        data = {"exit": proc.returncode, **{k: v for k, v in parser.info.items() if v is not None}}
        if timed_out:
            return _Outcome(False, f"{proc.name} timed out after {cfg.timeout_s:g}s", data=data)
        reason = proc.failure()
        if reason is None:
            return _Outcome(True, data=data)
        if proc.stderr.strip() and parser.failure is None:
            ctx.events.log(output_tail(proc.stderr, lines=10, chars=1000), level="warning", task=tid)
        return _Outcome(False, reason, retry_after=parser.gave_up_rate_limited, data=data)

    def _emit(self, events, tid: str, ctx: KindContext, totals: dict) -> None:
        write_events(events, ctx.events, tid, totals, self.cfg.cost_of)


class ClaudeKind(CommandKind):
    name, preset_name = "claude", "claude"


class CodexKind(CommandKind):
    name, preset_name = "codex", "codex"


class AiderKind(CommandKind):
    name, preset_name = "aider", "aider"


class GeminiKind(CommandKind):
    name, preset_name = "gemini", "gemini"


class OpencodeKind(CommandKind):
    name, preset_name = "opencode", "opencode"
