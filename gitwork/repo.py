"""The target repository: check it is usable, resolve refs, and run git commands safely.

Every git command orch runs goes through :func:`run_git`, so failures become one-line
``GitError``s and no command ever runs in the wrong directory. Commands use GitPython's command
wrapper (``git.Git``): cheap to create, no persistent ``cat-file`` helpers (a ``Repo`` object
keeps those alive, which is why orch never holds one per agent).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


from coordstore.errors import GitError, InputError

# `git merge-tree --write-tree` (merging without a work tree) appeared in git 2.38.
MIN_GIT_VERSION = (2, 38)

# Variables that make git ignore the directory it runs in; orch addresses repositories by path.
_LOCATING_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY")

_FULL_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")  # sha1 or sha256 object names
_SAFE_LOCAL = re.compile(r"[^A-Za-z0-9._+-]+")


def is_full_sha(text: str) -> bool:
    return bool(_FULL_SHA.match(text))


def full_ref(name: str) -> str:
    """``orch/r1/a1`` -> ``refs/heads/orch/r1/a1``; names already under ``refs/`` unchanged."""
    return name if name.startswith("refs/") else f"refs/heads/{name}"


def first_line(text: str) -> str:
    """git's first non-empty message line, without its ``fatal:``/``error:`` prefix."""
    for line in (text or "").splitlines():
        line = line.strip()
        if line:
            return line.removeprefix("fatal: ").removeprefix("error: ")
    return "no message"


def run_git(
    cwd: str | os.PathLike,
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    ok: Sequence[int] = (0,),
    what: str | None = None,
) -> tuple[int, str, str]:
    """Run ``git <args>`` in ``cwd``; return (status, stdout, stderr).

    A status outside ``ok`` raises ``GitError`` with one line: ``what`` (or the command), the
    directory, and git's first stderr line. GitPython silently falls back to the process's own
    cwd when ``cwd`` is missing, so a missing directory is refused here, and ``-C`` pins it too.
    """
    import git  # lazily: runners use this module and must start without GitPython's import cost

    path = Path(cwd).resolve()  # GitPython applies cwd and -C both: a relative path would count twice
    if not path.is_dir():
        raise GitError(f"{what or 'git ' + ' '.join(args[:2])}: directory {path} does not exist")
    try:
        status, out, err = git.Git(str(path)).execute(
            ["git", "-C", str(path), *args],
            with_extended_output=True,
            with_exceptions=False,
            env=dict(env) if env else None,
        )
    except git.GitCommandNotFound as e:
        raise GitError(f"git is not installed or not on PATH ({e})") from e
    if status not in ok:
        raise GitError(f"{what or 'git ' + ' '.join(args[:2])} failed in {path}: {first_line(err)}")
    return status, out, err


def git_out(cwd: str | os.PathLike, *args: str, env: Mapping[str, str] | None = None, what: str | None = None) -> str:
    """stdout of a git command that must succeed."""
    return run_git(cwd, args, env=env, what=what)[1]


@lru_cache(maxsize=1)
def git_version() -> tuple[int, ...]:
    out = run_git(Path(os.path.abspath(os.sep)), ["--version"], what="git --version")[1]
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", out)
    if not m:
        raise GitError(f"cannot parse the git version from {out!r}")
    return tuple(int(x) for x in m.groups() if x is not None)


def require_git_version() -> None:
    have = git_version()
    if have[:2] < MIN_GIT_VERSION:
        need = ".".join(map(str, MIN_GIT_VERSION))
        raise GitError(f"git {'.'.join(map(str, have))} is too old: orch needs git >= {need} (merge-tree --write-tree)")


def check_repo(path: str | os.PathLike) -> Path:
    """The top level of the git work tree at or above ``path``, checked usable for a run.

    ``GitError`` (one line naming the path) when: the path is missing, is not inside a git work
    tree (a bare repository has none), the repository has no commit yet, or the work tree is
    dirty. Dirty means tracked changes (staged or not) OR untracked files that are not ignored:
    the agents' worktrees start from a commit, so anything not committed would silently be
    missing from their base; ignored files (build output, venvs) do not count.
    """
    for var in _LOCATING_ENV:
        if os.environ.get(var):
            raise GitError(f"{var} is set in the environment; unset it (orch addresses repositories by path)")
    require_git_version()
    p = Path(path).expanduser()
    if not p.exists():
        raise GitError(f"repository {p} does not exist")
    if not p.is_dir():
        raise GitError(f"repository {p} is not a directory")
    status, out, _ = run_git(p, ["rev-parse", "--show-toplevel"], ok=(0, 128))
    if status != 0 or not out.strip():
        raise GitError(f"{p} is not a git work tree (not a repository, or a bare one)")
    top = Path(out.strip())
    status, _, _ = run_git(top, ["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], ok=(0, 1, 128))
    if status != 0:
        raise GitError(f"repository {top} has no commits yet; commit something first")
    dirty = dirty_paths(top)
    if dirty:
        more = f" and {len(dirty) - 1} more" if len(dirty) > 1 else ""
        raise GitError(
            f"repository {top} has uncommitted changes ({dirty[0]}{more}); commit or stash them first"
        )
    return top


def dirty_paths(worktree: str | os.PathLike) -> list[str]:
    """Paths with tracked changes or untracked, non-ignored files in a work tree (empty: clean)."""
    out = git_out(worktree, "status", "--porcelain=v1", "-z", "--untracked-files=normal", what="git status")
    paths: list[str] = []
    fields = out.split("\0")
    i = 0
    while i < len(fields):
        entry = fields[i]
        i += 1
        if len(entry) < 4:
            continue
        paths.append(entry[3:])
        if entry[0] in "RC":  # a rename/copy is followed by its source path
            i += 1
    return paths


def ignored_paths(worktree: str | os.PathLike) -> list[str]:
    """Git-ignored files in a work tree, an ignored directory as one ``dir/`` entry: what
    ``git worktree remove`` deletes without a word (build output, caches, local secrets)."""
    out = git_out(worktree, "ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory",
                  what="git ls-files --ignored")
    return [p for p in out.split("\0") if p]


def resolve_commit(repo: str | os.PathLike, ref: str) -> str:
    """The full sha of the commit ``ref`` names in ``repo``; ``GitError`` naming the ref if none."""
    if not ref or ref.startswith("-"):
        raise GitError(f"invalid git ref {ref!r}")
    args = ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"]
    status, out, _ = run_git(repo, args, ok=(0, 1, 128))
    sha = out.strip()
    if status != 0 or not is_full_sha(sha):
        raise GitError(f"unknown git ref {ref!r} in {repo} (no such branch, tag or commit)")
    return sha


def ref_exists(repo: str | os.PathLike, full_ref: str) -> bool:
    status, _, _ = run_git(repo, ["show-ref", "--verify", "--quiet", full_ref], ok=(0, 1, 128))
    return status == 0


def common_dir(repo: str | os.PathLike) -> Path:
    """The git common dir (shared by all worktrees): where orch keeps its per-repository lock."""
    out = git_out(repo, "rev-parse", "--path-format=absolute", "--git-common-dir", what="git rev-parse")
    return Path(out.strip())


def identity_env(agent_id: str, email_domain: str = "agents.orch") -> dict[str, str]:
    """Author and committer variables for commits made on behalf of ``agent_id``.

    Passed as the environment of every committing git command, so agent commits never depend
    on (or fail for lack of) the user's or the machine's git identity.
    """
    if not agent_id or not agent_id.strip():
        raise InputError("agent id for the git identity is empty")
    local = _SAFE_LOCAL.sub("-", agent_id.strip()).strip("-.") or "agent"
    email = f"{local}@{email_domain}"
    return {
        "GIT_AUTHOR_NAME": agent_id,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": agent_id,
        "GIT_COMMITTER_EMAIL": email,
    }


@dataclass(frozen=True)
class WorktreeInfo:
    """One entry of ``git worktree list``."""

    path: Path
    head: str | None  # None for a worktree whose HEAD is unborn
    branch: str | None  # full ref (refs/heads/...), None when detached
    prunable: bool  # registered but its directory is gone


def list_worktrees(repo: str | os.PathLike) -> list[WorktreeInfo]:
    """Every worktree registered in ``repo`` (the main work tree first)."""
    out = git_out(repo, "worktree", "list", "--porcelain", "-z", what="git worktree list")
    result: list[WorktreeInfo] = []
    cur: dict[str, str] = {}
    for field in out.split("\0") + [""]:
        if field == "":  # an empty field ends a record
            if "worktree" in cur:
                result.append(
                    WorktreeInfo(Path(cur["worktree"]), cur.get("HEAD"), cur.get("branch"), "prunable" in cur)
                )
            cur = {}
            continue
        key, _, value = field.partition(" ")
        cur[key] = value
    return result
