"""The target repository: check it is usable, resolve refs, list its worktrees (its git commands,
like all of orch's, run through ``gitwork.runner``)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from coordstore.errors import GitError
from coordstore.paths import text_path

from gitwork.runner import LOCATING_ENV, git, git_out

# `git merge-tree --write-tree` (merging without a work tree) appeared in git 2.38.
MIN_GIT_VERSION = (2, 38)

_FULL_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")  # sha1 or sha256 object names


def is_full_sha(text: str) -> bool:
    return bool(_FULL_SHA.match(text))


def full_ref(name: str) -> str:
    """``orch/r1/a1`` -> ``refs/heads/orch/r1/a1``; names already under ``refs/`` unchanged."""
    return name if name.startswith("refs/") else f"refs/heads/{name}"


@lru_cache(maxsize=1)
def git_version() -> tuple[int, ...]:
    out = git_out(os.path.abspath(os.sep), "--version", what="git --version")
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
    for var in LOCATING_ENV:
        if os.environ.get(var):
            raise GitError(f"{var} is set in the environment; unset it (orch addresses repositories by path)")
    require_git_version()
    p = Path(path).expanduser()
    if not p.exists():
        raise GitError(f"repository {p} does not exist")
    if not p.is_dir():
        raise GitError(f"repository {p} is not a directory")
    found = git(p, "rev-parse", "--show-toplevel", ok=(0, 128))
    if found.returncode != 0 or not found.stdout.strip():
        raise GitError(f"{p} is not a git work tree (not a repository, or a bare one)")
    top = Path(found.stdout.strip())
    if git(top, "rev-parse", "--verify", "--quiet", "HEAD^{commit}", ok=(0, 1, 128)).returncode != 0:
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
        paths.append(text_path(entry[3:]))
        if entry[0] in "RC":  # a rename/copy is followed by its source path
            i += 1
    return paths


def ignored_paths(worktree: str | os.PathLike) -> list[str]:
    """Git-ignored files in a work tree, an ignored directory as one ``dir/`` entry: what
    ``git worktree remove`` deletes without a word (build output, caches, local secrets)."""
    out = git_out(worktree, "ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory",
                  what="git ls-files --ignored")
    return [text_path(p) for p in out.split("\0") if p]


def resolve_commit(repo: str | os.PathLike, ref: str) -> str:
    """The full sha of the commit ``ref`` names in ``repo``; ``GitError`` naming the ref if none."""
    if not ref or ref.startswith("-"):
        raise GitError(f"invalid git ref {ref!r}")
    args = ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"]
    found = git(repo, *args, ok=(0, 1, 128))
    sha = found.stdout.strip()
    if found.returncode != 0 or not is_full_sha(sha):
        raise GitError(f"unknown git ref {ref!r} in {repo} (no such branch, tag or commit)")
    return sha


def ref_exists(repo: str | os.PathLike, full_ref: str) -> bool:
    return git(repo, "show-ref", "--verify", "--quiet", full_ref, ok=(0, 1, 128)).returncode == 0


def common_dir(repo: str | os.PathLike) -> Path:
    """The git common dir (shared by all worktrees): where orch keeps its per-repository lock."""
    out = git_out(repo, "rev-parse", "--path-format=absolute", "--git-common-dir", what="git rev-parse")
    return Path(out.strip())


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
