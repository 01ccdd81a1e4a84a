"""The ``sim`` kind: a seeded simulated coding agent that makes real edits in its worktree.

It follows its plan (``simplan.make_plan``): ``step`` and ``tokens`` events spread over the
task's duration, one real edit per file of the task's scope, and the injected faults. Every
fault is announced by a ``log`` event with ``data.fault`` BEFORE it happens, so the history
shows what was injected even when the process then dies or goes silent.
"""

from __future__ import annotations

import mimetypes
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from coordstore.errors import InputError
from coordstore.paths import PathEscape, check_relative, confine, os_path

from agents.kinds import KindContext, Result
from agents.kinds.simplan import SimOptions, SimPlan, edit_text, make_plan, own_file

BINARY_PROBE = 8000  # a NUL byte in the first 8000 bytes makes a file binary, as git decides it
CRASH_EXIT = 3  # exit status of a simulated crash: non-zero, and not a signal's
LOOP_MIN_S = 0.05  # a looping agent repeats at least this far apart (bounds the event volume)
# a file this large is data (a dump, a generated asset), not something a coding agent rewrites;
# the sim reads and writes whole files, so the cap also bounds its memory
MAX_EDIT_BYTES = 16 * 1024 * 1024
LFS_POINTER = b"version https://git-lfs.github.com/spec/"  # how every Git LFS pointer file begins
# a file that does not exist yet is judged by its name: Python's built-in table only (not the
# machine's /etc/mime.types), so every machine judges alike
_TYPES = mimetypes.MimeTypes()
_BINARY_APPS = ("application/octet-stream", "application/zip", "application/pdf", "application/wasm",
                "application/x-tar", "application/java-archive", "application/x-msdos-program")


def binary_by_name(rel: str) -> bool:
    """Whether a file named ``rel`` holds binary content: an image, sound, video or font (SVG and
    other XML excepted), an archive, a compressed file, an executable, an office document."""
    kind, encoding = _TYPES.guess_type(rel, strict=False)
    if encoding is not None:
        return True
    if kind is None or kind.endswith("+xml"):
        return False
    return kind.split("/")[0] in ("image", "audio", "video", "font") or kind in _BINARY_APPS or kind.startswith("application/vnd.")


def editable(worktree, rel: str) -> tuple[Path, None] | tuple[None, str]:
    """(the file to write, None), or (None, why no text edit fits it): a binary file (a new one
    judged by its name), a symbolic link (written through, the edit would change another file than
    the task's), a Git LFS pointer (its text is a reference, not the content), a file over
    ``MAX_EDIT_BYTES``, something that is not a regular file (a submodule's directory). A path that is itself out of bounds (absolute,
    ``..`` out, ``.git``) raises ``PathEscape``: bad input, not file content. ``rel`` may be a
    C-quoted name (``coordstore.paths.text_path``): the file is the one with those bytes."""
    check_relative(rel, "path", "the worktree")
    name = os_path(rel)
    try:
        path = confine(worktree, name, inside="the worktree")
    except PathEscape as e:
        return None, f"it {e.problem}"
    if os.path.islink(os.path.join(worktree, name)):
        return None, "it is a symbolic link"
    if not path.exists():
        return (None, "it would be a binary file (by its name)") if binary_by_name(name) else (path, None)
    if not path.is_file():
        return None, "it is not a regular file"
    if path.stat().st_size > MAX_EDIT_BYTES:
        return None, f"it is larger than {MAX_EDIT_BYTES // (1024 * 1024)} MiB"
    with open(path, "rb") as f:
        head = f.read(BINARY_PROBE)
    if b"\0" in head:
        return None, "it is a binary file"
    if head.startswith(LFS_POINTER):
        return None, "it is a Git LFS pointer"
    return path, None


def _edit(path: Path, rel: str, task, digest: str) -> None:
    """The sim's text edit of one file. Bytes that are not UTF-8 and line endings pass through as
    they were (surrogateescape, no newline translation); in a CRLF file the added lines end in CRLF."""
    old = path.read_bytes().decode("utf-8", "surrogateescape") if path.exists() else None
    new, _ = edit_text(old, rel, task, digest)
    if old and "\r\n" in old and old.count("\r\n") == old.count("\n"):
        new = re.sub(r"(?<!\r)\n", "\r\n", new)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(new.encode("utf-8", "surrogateescape"))


class SimKind:
    name = "sim"
    time_scaled = True  # its durations are agent time x the run's time_scale (supervision scales with it)

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.raw = dict(options or {})
        self.options, self.unknown = SimOptions.build(self.raw)

    @classmethod
    def preflight(cls, options: dict[str, Any] | None) -> None:
        # at plan time: the options as the runner will read them (AgentError naming one)
        SimOptions.build(options or {})

    def run(self, task, ctx: KindContext) -> Result:
        opts, _ = SimOptions.build(self.raw, task.meta.get("sim") or {})
        plan = make_plan(task, ctx.seed, ctx.attempt, ctx.time_scale, opts)
        tid = task.id
        totals = {"in": 0, "out": 0, "cached": 0, "thinking": 0, "cost_usd": 0.0}
        edited: set[str] = set()
        not_edited: dict[str, str] = {}  # path of the scope -> why no text edit fits it
        provider = self._provider(opts, ctx)
        session = f"{ctx.agent_id}:{tid}:{ctx.attempt}"
        try:
            if provider is not None:
                self._admitted(provider, session, opts, ctx, tid)
            return self._work(task, plan, ctx, totals, edited, not_edited)
        finally:
            if provider is not None:
                provider.close(session)

    @staticmethod
    def _provider(opts: SimOptions, ctx: KindContext):
        if not opts.provider_capacity or ctx.shared_dir is None:
            return None
        from agents.kinds.simprovider import SimProvider  # lazy: only a sim with a provider capacity

        return SimProvider(ctx.shared_dir, opts.provider, int(opts.provider_capacity))

    @staticmethod
    def _admitted(provider, session: str, opts: SimOptions, ctx: KindContext, tid: str) -> None:
        """Open the task's session at the simulated provider, waiting out each 429 as the run's
        back-pressure says (``ctx.rate_limited``)."""
        retry_s = opts.retry_after_s * ctx.time_scale
        while True:
            ok, busy = provider.open(session)
            if ok:
                return
            ctx.events.emit("log", tid, msg=f"sim: provider {opts.provider} full ({busy} of {provider.capacity}): 429",
                            level="warning", provider=opts.provider, in_flight=busy, capacity=provider.capacity)
            ctx.rate_limited(retry_s, task=tid)

    def _work(self, task, plan: SimPlan, ctx: KindContext, totals: dict, edited: set, not_edited: dict) -> Result:
        ev, tid = ctx.events, task.id
        t0 = ctx.now_s()
        for i, step in enumerate(plan.steps):
            ctx.sleep(t0 + step.at_s - ctx.now_s())
            if i == plan.rate_limit_step:
                self._announce(ctx, tid, "rate_limited", i, retry_after=plan.retry_after_s)
                paused = ctx.now_s()
                ctx.rate_limited(plan.retry_after_s, task=tid)
                t0 += ctx.now_s() - paused  # the rest of the work shifts by the pause
            if i == plan.fault_step:
                failed = self._fault(plan, i, task, ctx)
                if failed is not None:
                    return failed
            ev.step(step.name, args=step.args, task=tid)
            tin, tout, cached, think = step.tokens
            ev.tokens(task=tid, tokens_in=tin, tokens_out=tout, cached=cached, thinking=think, cost_usd=step.cost_usd)
            for k, v in zip(("in", "out", "cached", "thinking", "cost_usd"), (tin, tout, cached, think, step.cost_usd)):
                totals[k] += v
            for rel in plan.edits.get(i, ()):
                try:
                    path, why = editable(ctx.worktree, rel)
                    if why is not None:  # the task's own file takes the edit, and the log says why
                        not_edited[rel] = why
                        ctx.events.log(f"sim: not editing {rel}: {why}; edited {own_file(tid)} instead",
                                       level="warning", task=tid)
                        rel = own_file(tid)
                        path, why = editable(ctx.worktree, rel)
                        if why is not None:
                            raise InputError(why)
                    if rel not in edited:
                        edited.add(rel)
                        _edit(path, rel, task, plan.digest)
                except (InputError, OSError) as e:
                    return Result(ok=False, reason=f"sim: cannot edit {rel}: {e}", tokens=totals)
        ctx.sleep(t0 + plan.duration_s - ctx.now_s())
        summary = plan.summary() | ({"not_edited": not_edited} if not_edited else {})
        return Result(ok=True, data={"sim": summary}, tokens=totals)

    @staticmethod
    def _announce(ctx: KindContext, tid: str, fault: str, step: int, **data: Any) -> None:
        ctx.events.emit("log", tid, msg=f"sim: injecting {fault} at step {step}", level="warning", fault=fault, step=step, **data)

    def _fault(self, plan: SimPlan, i: int, task, ctx: KindContext) -> Result | None:
        tid = task.id
        self._announce(ctx, tid, plan.fault, i)
        if plan.fault == "fail":
            return Result(ok=False, reason=f"sim: injected failure at step {i + 1} of {len(plan.steps)}",
                          data={"sim": plan.summary()})
        if plan.fault == "crash":
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(CRASH_EXIT)
        if plan.fault == "stall":
            ctx.pulse.go_silent()
            while True:  # alive, silent, no heartbeat: only a signal ends this
                time.sleep(3600)
        if plan.fault == "loop":
            step = plan.steps[i]
            every = max(LOOP_MIN_S, plan.duration_s / max(1, len(plan.steps)))
            while True:  # the same tool call with the same arguments, forever
                ctx.events.step(step.name, args=step.args, task=tid)
                ctx.sleep(every)
        return None
