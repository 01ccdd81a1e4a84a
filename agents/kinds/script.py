"""The ``script`` kind: run the task's commands in the worktree, one after the other -- the
template's commands, as they are written, with the user's rights: a template is a program.

``task.meta["commands"]``: a list of argv lists, run without a shell. With ``meta["shell"]:
true`` each command is a string run through ``/bin/sh -c``. ``meta["timeout_s"]`` bounds each
command. The first non-zero exit fails the task with the command and the tail of its output
(which lands in the events, the store and the snapshot).

Commands do not get the runner's whole environment, which holds the keys real agent CLIs need:
only ``BASE_ENV`` (what a shell and the usual tools need, no credentials -- tox's ``pass_env``
rule), the variables a variant lists in ``kind_options.pass_env`` or a task in
``meta.pass_env`` (names; a trailing ``*`` matches a prefix), ``ORCH_RUN_ID``,
``ORCH_AGENT_ID``, ``ORCH_TASK_ID``, ``ORCH_ATTEMPT`` and the agent's git identity, so a command
that commits does so as the agent. The task's ``verify`` command runs the same way.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import Any

from coordstore.errors import AgentError

from agents.kinds import KindContext, Result, output_tail

# how often a running command is checked on, so heartbeats keep flowing during long commands
POLL_S = 0.05
# what every command sees of the runner's environment: locale, paths, terminal, git's config
# files; never a key or token (those reach commands only when listed in ``pass_env``)
BASE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "LC_*", "TZ", "TERM", "TMPDIR",
            "VIRTUAL_ENV", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM", "GIT_CONFIG_NOSYSTEM")
_PASS_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\*?$")


def pass_env_list(value: Any, where: str) -> list[str]:
    """A ``pass_env`` value checked: a list of variable names (``NAME`` or ``PREFIX*``);
    ``ValueError`` naming ``where`` otherwise."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and _PASS_NAME.match(v) for v in value):
        raise ValueError(f"{where}: must be a list of environment variable names (NAME or PREFIX*), got {value!r}")
    return value


def command_env(pass_env: Iterable[str] = ()) -> dict[str, str]:
    """The runner's environment filtered to ``BASE_ENV`` and ``pass_env``."""
    allowed = (*BASE_ENV, *pass_env)
    return {k: v for k, v in os.environ.items() if any(fnmatchcase(k, p) for p in allowed)}


def run_command(cmd: list[str] | str, ctx: KindContext, task_id: str, shell: bool = False,
                timeout_s: float | None = None, pass_env: Iterable[str] = (), own_group: bool = False) -> tuple[int, str]:
    """Run one command in the worktree, beating while it runs, with ``command_env(pass_env)``.
    Returns (exit status, output); 127 for a program that does not exist, 124 for a timeout
    (the shell's conventions). ``own_group``: the command leads a process group of its own and a
    timeout, an interruption or its end kills the whole group (a test runner's workers, a shell's
    children), not only the command; off for an agent's task commands, which stay in the runner's
    group so that stopping the runner stops them too."""
    env = {**command_env(pass_env), **ctx.identity, "ORCH_RUN_ID": ctx.run_id, "ORCH_AGENT_ID": ctx.agent_id,
           "ORCH_TASK_ID": task_id, "ORCH_ATTEMPT": str(ctx.attempt)}
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(cmd, cwd=ctx.worktree, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, shell=shell, start_new_session=own_group)
        except (FileNotFoundError, PermissionError) as e:
            return 127, f"cannot run {cmd[0] if isinstance(cmd, list) else cmd!r}: {e.strerror or e}"

        killed = []

        def kill() -> None:
            if killed:
                return
            killed.append(True)
            if own_group:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):  # the group is gone already
                    pass
            elif proc.poll() is None:
                proc.kill()
            proc.wait()

        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            while proc.poll() is None:
                if deadline is not None and time.monotonic() > deadline:
                    kill()
                    out.seek(0)
                    return 124, out.read().decode(errors="replace") + f"\n(timed out after {timeout_s}s)"
                ctx.pulse.sleep(POLL_S)
        finally:
            if proc.poll() is None or own_group:  # interrupted (SIGTERM), or the group outlived its leader: no orphans
                kill()
        out.seek(0)
        return proc.returncode, out.read().decode(errors="replace")


def _commands(meta: dict[str, Any], task_id: str) -> tuple[list, bool]:
    """The task's commands, checked; ValueError naming the key otherwise."""
    cmds = meta.get("commands")
    shell = bool(meta.get("shell", False))
    if not isinstance(cmds, list) or not cmds:
        raise ValueError(f"task {task_id}: meta.commands must be a non-empty list")
    for i, c in enumerate(cmds):
        if shell and not isinstance(c, str):
            raise ValueError(f"task {task_id}: meta.commands[{i}] must be a string when meta.shell is true")
        if not shell and not (isinstance(c, list) and c and all(isinstance(a, str) for a in c)):
            raise ValueError(f"task {task_id}: meta.commands[{i}] must be a non-empty argv list of strings")
    return cmds, shell


class ScriptKind:
    name = "script"

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = dict(options or {})
        self.preflight(self.options)

    @classmethod
    def preflight(cls, options: dict[str, Any] | None) -> None:
        """Bad options fail at plan time (``AgentError`` naming the option)."""
        try:
            pass_env_list((options or {}).get("pass_env"), "kind_options.pass_env")
        except ValueError as e:
            raise AgentError(f"agent kind script: {e}") from e

    def run(self, task, ctx: KindContext) -> Result:
        try:
            cmds, shell = _commands(task.meta, task.id)
            passed = pass_env_list(self.options.get("pass_env"), "kind_options.pass_env") + \
                pass_env_list(task.meta.get("pass_env"), f"task {task.id}: meta.pass_env")
        except ValueError as e:
            return Result(ok=False, reason=str(e))
        timeout = task.meta.get("timeout_s", self.options.get("timeout_s"))
        for i, cmd in enumerate(cmds):
            ctx.events.step("shell" if shell else "exec", args=cmd, task=task.id, index=i)
            rc, output = run_command(cmd, ctx, task.id, shell=shell, timeout_s=timeout, pass_env=passed)
            if output.strip():
                ctx.events.log(output_tail(output, lines=5, chars=500), level="debug", task=task.id)
            if rc != 0:
                shown = cmd if isinstance(cmd, str) else " ".join(cmd)
                return Result(ok=False, reason=f"command {i + 1} ({shown}) exited {rc}: {output_tail(output)}")
        return Result(ok=True, data={"commands": len(cmds)})
