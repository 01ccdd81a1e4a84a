"""The merged branch verified: a variant's ``verify:`` command run on the merged tree.

``verify: python -m pytest -q`` (a shell string), ``verify: [python, -m, pytest, -q]`` (an argv
list, no shell), or ``verify: {command: ..., after_each_merge: true, timeout_s: 600, pass_env:
[NAME, PREFIX*]}``. The command runs the way a task's ``verify`` gate runs (the script kind's
``run_command``: the same filtered environment, ``ORCH_AGENT_ID=orch``, ``ORCH_TASK_ID=merged``),
in a scratch worktree of the run's repository detached at the commit verified
(``<run dir>/verify/``, removed after), in a process group of its own that a timeout kills whole.

At the end of the run, after the final merge, the merged branch's tip is verified; with
``after_each_merge``, every commit of its first-parent line from the base on (the base, then each
merge, in order) is verified while the run goes on, one at a time on a thread of the orchestrator,
so supervision never waits for a test suite. Each result is a run note in the history (action
``verify``: scope, sha, ok, exit, ms, the output's tail, the command; the reason when it failed),
from which ``orchestrator.views.verified`` derives the metrics. A command that cannot start
(exit 127) or times out (124) is a failed verification with its reason, never a crash. The
verification is a measurement: it does not change the run's status.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from coordstore.errors import GitError, OrchError

from gitwork.repo import resolve_commit
from gitwork.runner import git_out, identity_env
from gitwork.worktrees import clear_scratch, scratch_worktree

from agents.kinds import KindContext, output_tail
from agents.kinds.script import pass_env_list, run_command

from orchestrator.rundir import RunPaths, RunSpec
from orchestrator.views.verified import FINAL, MERGE, SCRATCH_DIR, VERIFY_ACTION, verifications

DEFAULT_TIMEOUT_S = 600.0
EXIT_CANNOT_START, EXIT_TIMED_OUT = 127, 124  # run_command's (the shell's) conventions
CHECK_TIP_MS = 250  # how often the run loop looks for new merges (a git call each time)


class VerifySpec(BaseModel):
    """A variant's ``verify:``; the short forms (a string, a list) are its ``command``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    command: str | list[str]
    after_each_merge: bool = False
    timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, gt=0)
    pass_env: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, v: Any) -> Any:
        return {"command": v} if isinstance(v, (str, list)) else v

    @field_validator("command")
    @classmethod
    def _a_command(cls, v: str | list[str]) -> str | list[str]:
        if (isinstance(v, str) and not v.strip()) or (isinstance(v, list) and (not v or not all(a.strip() for a in v))):
            raise ValueError("a shell command string or a non-empty argv list of non-empty strings")
        return v

    @field_validator("pass_env")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        return pass_env_list(v, "pass_env")

    def shown(self) -> str:
        return self.command if isinstance(self.command, str) else " ".join(self.command)


class _Stopped(Exception):
    """The run is being interrupted: the command under way is killed, nothing is recorded."""


class _Pace:
    """``run_command``'s waits: plain sleeps that end the command when ``stop`` is set."""

    def __init__(self, stop: threading.Event | None):
        self.stop = stop

    def sleep(self, seconds: float) -> None:
        if self.stop is None:
            time.sleep(seconds)
        elif self.stop.wait(seconds):
            raise _Stopped

    def clock(self) -> float:
        return time.monotonic() * 1000.0


def verify_commit(spec: RunSpec, paths: RunPaths, verify: VerifySpec, sha: str,
                  stop: threading.Event | None = None) -> dict[str, Any]:
    """Run the command on ``sha`` in a scratch worktree; the note's data (and ``reason``)."""
    t0 = time.monotonic()
    try:
        with scratch_worktree(spec.repo, sha, paths.root / SCRATCH_DIR) as tree:
            ctx = KindContext(spec.run_id, "orch", tree, spec.seed, 1.0, 0, None, _Pace(stop), identity_env("orch"))
            passed = pass_env_list(spec.kind_options.get("pass_env"), "kind_options.pass_env") + verify.pass_env
            rc, out = run_command(verify.command, ctx, "merged", shell=isinstance(verify.command, str),
                                  timeout_s=verify.timeout_s, pass_env=passed, own_group=True)
    except (GitError, ValueError) as e:
        rc, out = None, str(e)
        reason = f"could not check out {sha[:12]} to verify it: {e}"
    else:
        tail = output_tail(out, lines=3, chars=300)
        reason = (None if rc == 0 else
                  f"cannot start {verify.shown()!r} (exit {rc}): {tail}" if rc == EXIT_CANNOT_START else
                  f"timed out after {verify.timeout_s:g}s" if rc == EXIT_TIMED_OUT else f"exited {rc}: {tail}")
    return {"sha": sha, "ok": rc == 0, "exit": rc, "ms": round((time.monotonic() - t0) * 1000),
            "output": output_tail(out), "command": verify.command, "reason": reason}


def record(store, spec: RunSpec, scope: str, result: dict[str, Any]) -> None:
    data = {k: v for k, v in result.items() if k != "reason"}
    store.note(spec.run_id, "run", spec.run_id, VERIFY_ACTION, reason=result["reason"],
               data={"scope": scope, **data}, key=f"verify:{scope}:{result['sha']}")


def clear_leftovers(spec: RunSpec, paths: RunPaths) -> None:
    """The scratch worktrees an orchestrator killed mid-verification left (before a resume)."""
    clear_scratch(spec.repo, paths.root / SCRATCH_DIR)


def merged_tip(spec: RunSpec) -> str:
    return resolve_commit(spec.repo, f"refs/heads/{spec.merged_branch}")


def verify_final(spec: RunSpec, paths: RunPaths, store) -> dict[str, Any] | None:
    """Verify the merged branch's tip (once per tip: a resumed run that verified it keeps that
    result) and record it; None when the variant has no ``verify:``."""
    if spec.verify is None:
        return None
    verify = VerifySpec.model_validate(spec.verify)
    try:
        tip = merged_tip(spec)
    except GitError as e:
        result = {"sha": "", "ok": False, "exit": None, "ms": 0, "output": "", "command": verify.command,
                  "reason": f"no merged branch to verify: {e}"}
    else:
        done = [v for v in verifications(store.history(spec.run_id, entity="run"), FINAL) if v.get("sha") == tip]
        if done:
            return done[-1]
        result = verify_commit(spec, paths, verify, tip)
    record(store, spec, FINAL, result)
    return result


class MergeVerifier:
    """``after_each_merge``: the merged branch's first-parent commits, verified one after the
    other on a thread while the run loop goes on. ``poll`` (run loop, each turn) finds new merges,
    records finished results and starts the next; ``finish`` verifies what is left (or, when the
    run did not finish, kills the command under way and leaves the rest unverified)."""

    def __init__(self, spec: RunSpec, paths: RunPaths, store):
        self.spec, self.paths, self.store = spec, paths, store
        self.verify = VerifySpec.model_validate(spec.verify)
        self.base = resolve_commit(spec.repo, spec.base)
        # a resumed run: what an earlier orchestrator verified is not verified again
        self.done = {v.get("sha") for v in verifications(store.history(spec.run_id, entity="run"), MERGE)}
        self.queue: deque[str] = deque()
        self.tip: str | None = None
        self.stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._running: str | None = None  # the sha under verification
        self._result: dict[str, Any] | None = None
        self._last_check_ms: int | None = None

    def poll(self, now_ms: int | None = None) -> None:
        """Record a finished verification, look for new merges (at most every ``CHECK_TIP_MS`` of
        ``now_ms``; always without it), start the next verification."""
        if self._thread is not None and not self._thread.is_alive():
            self._thread.join()
            self._thread, self._running = None, None
            if self._result is not None:
                record(self.store, self.spec, MERGE, self._result)
                self.done.add(self._result["sha"])
        if now_ms is None or self._last_check_ms is None or now_ms - self._last_check_ms >= CHECK_TIP_MS:
            self._last_check_ms = now_ms
            self._enqueue_new()
        if self._thread is None and self.queue:
            sha = self._running = self.queue.popleft()
            self._result = None
            self._thread = threading.Thread(target=self._work, args=(sha,), name=f"verify-{sha[:12]}", daemon=True)
            self._thread.start()

    def _enqueue_new(self) -> None:
        try:
            tip = merged_tip(self.spec)
        except GitError:
            return  # no merged branch (yet): nothing to verify
        if tip == self.tip:
            return
        line = [self.base] + git_out(self.spec.repo, "rev-list", "--first-parent", "--reverse",
                                     f"{self.base}..{tip}").split()
        skip = self.done | set(self.queue) | {self._running}
        self.queue.extend(s for s in line if s not in skip)
        self.tip = tip

    def _work(self, sha: str) -> None:
        try:
            self._result = verify_commit(self.spec, self.paths, self.verify, sha, self.stop)
        except _Stopped:
            self._result = None
        except OrchError as e:  # recorded as a failure rather than lost with the thread
            self._result = {"sha": sha, "ok": False, "exit": None, "ms": 0, "output": "", "command": self.verify.command,
                            "reason": f"could not verify {sha[:12]}: {e}"}

    def finish(self, complete: bool) -> None:
        """``complete``: verify every merge not verified yet, then return; else stop now."""
        if not complete:
            self.stop.set()
            if self._thread is not None:
                self._thread.join()
                self._thread, self._running = None, None
            return
        self.poll()
        while self._thread is not None or self.queue:
            if self._thread is not None:
                self._thread.join()
            self.poll()
