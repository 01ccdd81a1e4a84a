"""The ``command`` kind and its presets (``claude``, ``codex``, ``aider``, ``gemini``, ``opencode``):
a real CLI coding agent run headless in the worktree, its output parsed into orch events.

For each task the kind builds a prompt from the task (``agents.clis.prompt``), runs the CLI in
the worktree with the prompt, reads its stdout line by line through the preset's parser
(``agents.clis.<preset>``) and writes the resulting ``step``/``tokens``/``log``/``error``/
``rate_limited`` events. The runner then commits what the CLI changed, exactly as for ``sim``.

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
import queue
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordstore.errors import AgentError

from agents.clis import parser_class
from agents.clis.base import Invocation
from agents.clis.config import CliConfig
from agents.clis.prompt import build_prompt
from agents.kinds import KindContext, Result, output_tail

POLL_S = 0.05  # how often the loop looks at the clock and the pulse while the CLI is quiet
EXIT_GRACE_S = 2.0  # after the CLI exits, how long to wait for its pipes to close (a child may hold them)
TAIL_LINES = 200  # lines of each output stream kept for a failure reason

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
                    ctx.events.rate_limited(wait, task=tid)
                    ctx.events.log(f"{self.name} gave up on a rate limit; running it again in {wait:g}s "
                                   f"(retry {tries} of {cfg.rate_limit_retries})", level="warning", task=tid)
                    ctx.sleep(wait)
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
        parser = parser_class(cfg.parser)()
        # PWD too: some CLIs (opencode) take their project directory from it, not from the real cwd
        env = {**cfg.environment(), **extra_env, **ctx.identity, "PWD": str(ctx.worktree), "ORCH_RUN_ID": ctx.run_id, "ORCH_AGENT_ID": ctx.agent_id,
               "ORCH_TASK_ID": tid, "ORCH_ATTEMPT": str(ctx.attempt)}
        name = Path(argv[0]).name
        tails: dict[bool, list[str]] = {False: [], True: []}  # stdout / stderr lines kept for a reason
        with open(stdin_file or os.devnull, "rb") as stdin:
            try:
                proc = subprocess.Popen(argv, cwd=ctx.worktree, env=env, stdin=stdin, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE)
            except OSError as e:
                raise AgentError(f"agent kind {self.name!r}: cannot run {argv[0]}: {e.strerror or e}") from e
        lines: queue.Queue = queue.Queue()
        for is_err, stream in ((False, proc.stdout), (True, proc.stderr)):
            threading.Thread(target=_pump, args=(stream, is_err, lines), daemon=True).start()
        deadline = time.monotonic() + cfg.timeout_s
        timed_out, exited_at, open_streams = False, None, 2
        try:
            while open_streams:
                try:
                    is_err, line = lines.get(timeout=POLL_S)
                except queue.Empty:
                    is_err, line = False, ""
                if line is None:
                    open_streams -= 1
                elif line:
                    tail = tails[is_err]
                    tail.append(line)
                    del tail[:-TAIL_LINES]
                    self._emit(parser.feed_stderr(line) if is_err else parser.feed(line), tid, ctx, totals)
                ctx.pulse.renew()  # the lease only: the CLI's own output is its proof of life
                now = time.monotonic()
                if not timed_out and now > deadline:
                    timed_out = True
                    ctx.events.error(f"{name} did not finish within {cfg.timeout_s:g}s: killing it", task=tid)
                    _kill_tree(proc)
                if proc.poll() is not None:
                    exited_at = exited_at or now
                    if now - exited_at > EXIT_GRACE_S:  # a leftover child holds a pipe: stop reading
                        break
            rc = proc.wait()
        finally:
            if proc.poll() is None:  # interrupted (SIGTERM) or a bug: leave no CLI behind
                _kill_tree(proc)
        self._emit(parser.finish(rc), tid, ctx, totals)
        stderr, stdout = "".join(tails[True]), "".join(tails[False])
        data = {"exit": rc, **{k: v for k, v in parser.info.items() if v is not None}}
        if timed_out:
            return _Outcome(False, f"{name} timed out after {cfg.timeout_s:g}s", data=data)
        if rc == 0 and parser.failure is None:
            return _Outcome(True, data=data)
        reason = parser.failure or f"{name} exited {rc}: {output_tail(stderr or stdout) or '(no output)'}"
        if stderr.strip() and parser.failure is None:
            ctx.events.log(output_tail(stderr, lines=10, chars=1000), level="warning", task=tid)
        return _Outcome(False, reason, retry_after=parser.gave_up_rate_limited, data=data)

    def _emit(self, events, tid: str, ctx: KindContext, totals: dict) -> None:
        ev = ctx.events
        for e in events:
            d = e.data
            if e.type == "step":
                ev.step(d["name"], args=d.get("args"), task=tid)
            elif e.type == "tokens":
                cost = d.get("cost_usd")
                if cost is None:
                    cost = self.cfg.cost_of(d) or 0.0
                ev.tokens(task=tid, tokens_in=d["in"], tokens_out=d["out"], cached=d["cached"], thinking=d["thinking"], cost_usd=cost)
                for k in ("in", "out", "cached", "thinking"):
                    totals[k] += d[k]
                totals["cost_usd"] += cost
            elif e.type == "rate_limited":
                ev.rate_limited(d["retry_after"], task=tid)
            elif e.type == "error":
                ev.error(d["msg"], task=tid)
            else:
                ev.log(d.get("msg", ""), level=d.get("level", "info"), task=tid)


def _pump(stream, is_err: bool, lines: queue.Queue) -> None:
    """Reader thread: one of the CLI's output streams, line by line, then None at its end.
    The thread owns the stream and closes it (a pipe a leftover child holds stays open)."""
    try:
        for raw in iter(stream.readline, b""):
            lines.put((is_err, raw.decode("utf-8", errors="replace")))
    except (OSError, ValueError):
        pass
    finally:
        stream.close()
    lines.put((is_err, None))


def _kill_tree(proc: subprocess.Popen) -> None:
    """Kill the CLI and every process it started (its tool calls), then reap it."""
    import psutil  # lazy: the runner's start-up; psutil only to kill a CLI's process tree

    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        children = []
    for p in [*children]:
        try:
            p.kill()
        except psutil.Error:
            pass
    proc.kill()
    proc.wait()


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
