"""The one way orch runs git: :func:`git`, with plain ``subprocess`` (standard library only, so an
agent's runner process can import it at start-up for nothing).

Every git command of orch goes through here, so they all get:

* the directory pinned: ``git -C <dir>`` with ``dir`` resolved and checked to exist (git would
  otherwise fail with a message about ``-C``, or a caller fall back to its own cwd);
* one environment (:func:`git_env`): the process's own, minus the variables that would make git
  work on another repository than the one named (orch addresses repositories by path), with git's
  messages in English (``LC_ALL=C``: they are parsed and shown) and nothing that can wait for a
  human (no terminal prompt, no editor), plus what the caller adds (an identity, ...);
* one failure: a status outside ``ok`` raises ``GitError`` (or the subclass the caller names)
  with the command, the exit code and the line git failed with, as one line
  ``<what> failed (exit N) in <dir>: <line>``.

Output is decoded as UTF-8 with ``surrogateescape`` (paths and names are bytes to git), or kept
as bytes with ``binary=True`` (commit objects and patches, byte for byte).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Collection, Mapping

from coordstore.errors import GitError, InputError

# Variables that make git ignore the directory it runs in; orch addresses repositories by path.
LOCATING_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY")
# Messages orch parses and shows in English; nothing waits for a human (no prompt, no editor).
BASE_ENV = {"LANGUAGE": "C", "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0", "GIT_EDITOR": "true", "GIT_MERGE_AUTOEDIT": "no"}
# For repositories orch creates itself (the demo): the machine's system config plays no part.
NO_SYSTEM_CONFIG = {"GIT_CONFIG_NOSYSTEM": "1"}

_PREFIXES = ("fatal: ", "error: ")
_UNSAFE_IN_EMAIL = re.compile(r"[^A-Za-z0-9._+-]+")


def identity(name: str, email: str) -> dict[str, str]:
    """Author and committer variables for commits made as ``name <email>``."""
    return {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}


def identity_env(agent_id: str, email_domain: str = "agents.orch") -> dict[str, str]:
    """The identity of commits made on behalf of ``agent_id`` (``<agent>@<email_domain>``).

    Passed as the environment of every committing git command, so agent commits never depend
    on (or fail for lack of) the user's or the machine's git identity.
    """
    if not agent_id or not agent_id.strip():
        raise InputError("agent id for the git identity is empty")
    local = _UNSAFE_IN_EMAIL.sub("-", agent_id.strip()).strip("-.") or "agent"
    return identity(agent_id, f"{local}@{email_domain}")


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every git command: see the module docstring."""
    env = {k: v for k, v in os.environ.items() if k not in LOCATING_ENV}
    env.update(BASE_ENV)
    env.update(extra or {})
    return env


def last_line(stderr: str, stdout: str = "") -> str:
    """The line git failed with: its last ``fatal:``/``error:`` line (prefix dropped), else the
    last line of stderr that is not a hint, else stdout's last line (``git merge`` reports there)."""
    lines = [ln.strip() for ln in (stderr or "").splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith(_PREFIXES):
            return ln.removeprefix("fatal: ").removeprefix("error: ")
    lines = [ln for ln in lines if not ln.startswith("hint:")] or [ln.strip() for ln in (stdout or "").splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"


def failure(proc: subprocess.CompletedProcess, what: str | None = None, error: type[GitError] = GitError) -> GitError:
    """The ``GitError`` for a finished command of :func:`git`: for callers that take any status
    (``ok=None``) and decide themselves that this one is a failure."""
    argv = list(proc.args)  # ["git", "-C", dir, *args], as git() runs it
    err, out = (s.decode("utf-8", "surrogateescape") if isinstance(s, bytes) else s for s in (proc.stderr, proc.stdout))
    line = last_line(err, out)
    what = what or " ".join(["git", *argv[3:5]])
    return error(f"{what} failed (exit {proc.returncode}) in {argv[2]}: {line}", command=argv, code=proc.returncode,
                 last_line=line)


def git(
    cwd: str | os.PathLike,
    *args: str,
    env: Mapping[str, str] | None = None,
    input: str | bytes | None = None,
    ok: Collection[int] | None = (0,),
    binary: bool = False,
    what: str | None = None,
    error: type[GitError] = GitError,
) -> subprocess.CompletedProcess:
    """Run ``git -C <cwd> <args>``; the finished process (``returncode``, ``stdout``, ``stderr``).

    ``env``: added to :func:`git_env`; ``input``: stdin (none at all without it); ``ok``: the
    statuses that are not a failure (None: any); ``what``: names the step in the message (default
    ``git <first two args>``); ``error``: the ``GitError`` class to raise. stdout and stderr are
    text (UTF-8, surrogateescape); stdout stays bytes with ``binary``.
    """
    path = os.path.realpath(cwd)
    if not os.path.isdir(path):
        raise error(f"{what or ' '.join(['git', *args[:2]])}: directory {path} does not exist")
    data = input.encode("utf-8", "surrogateescape") if isinstance(input, str) else input
    try:
        proc = subprocess.run(["git", "-C", path, *args], input=data, stdin=subprocess.DEVNULL if data is None else None,
                              capture_output=True, env=git_env(env))
    except FileNotFoundError as e:
        raise error("git is not installed or not on PATH") from e
    proc.stderr = proc.stderr.decode("utf-8", "surrogateescape")
    if not binary:
        proc.stdout = proc.stdout.decode("utf-8", "surrogateescape")
    if ok is not None and proc.returncode not in ok:
        raise failure(proc, what, error)
    return proc


def git_out(cwd: str | os.PathLike, *args: str, env: Mapping[str, str] | None = None, input: str | None = None,
            what: str | None = None) -> str:
    """stdout of a git command that must succeed, without its final newline (a one-line answer
    is the value; ``orch diff`` prints the rest with its own)."""
    return git(cwd, *args, env=env, input=input, what=what).stdout.removesuffix("\n")


def is_ancestor(cwd: str | os.PathLike, a: str, b: str) -> bool:
    """Whether commit ``a`` is ``b`` or an ancestor of it (all of ``a``'s work is in ``b``);
    ``GitError`` when either is not a commit of the repository."""
    return git(cwd, "merge-base", "--is-ancestor", a, b, ok=(0, 1)).returncode == 0
