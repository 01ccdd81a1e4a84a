"""Git in the agent's own worktree (through ``gitwork.runner``, cheap to import: the runner must
start fast).

Merges into the run's merged ref and catch-up use the shared ``gitwork.merging`` (imported
lazily, only once a merge is due); everything a runner does to its own worktree is here.
Failures raise the runner's ``GitError``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from coordstore.paths import text_path

from gitwork.runner import failure, git, identity_env
from gitwork.runner import is_ancestor  # noqa: F401 - the one is_ancestor, where the agent's runner looks


def identity(agent_id: str) -> dict[str, str]:
    """The agent's commit identity (author and committer), from the one shared definition."""
    return identity_env(agent_id)


def head(wt: str | os.PathLike) -> str:
    return git(wt, "rev-parse", "HEAD").stdout.strip()


def is_dirty(wt: str | os.PathLike) -> bool:
    return bool(git(wt, "status", "--porcelain", "--untracked-files=normal").stdout.strip())


def commit_all(wt: str | os.PathLike, message: str, ident: Mapping[str, str]) -> str | None:
    """Commit every change in the worktree (additions, edits, deletions) as ``ident``.

    Returns the new commit, or None when there was nothing to commit.
    """
    git(wt, "add", "-A")
    # commit first, ask why only when it refused: one git process less per task than asking first
    p = git(wt, "commit", "-q", "--no-gpg-sign", "-m", message, env=ident, ok=None)
    if p.returncode != 0:
        if git(wt, "diff", "--cached", "--quiet", ok=(0, 1)).returncode == 0:
            return None  # nothing to commit
        raise failure(p, what="git commit")
    return head(wt)


def changed_files(wt: str | os.PathLike, a: str, b: str) -> list[tuple[str, str]]:
    """(change, path) between two commits; change is added | modified | deleted."""
    if a == b:
        return []
    out = git(wt, "diff", "--name-status", "--no-renames", "-z", a, b).stdout.split("\0")
    kinds = {"A": "added", "D": "deleted"}
    return [(kinds.get(out[i][:1], "modified"), text_path(out[i + 1])) for i in range(0, len(out) - 1, 2) if out[i]]


def discard(wt: str | os.PathLike, to: str | None = None) -> None:
    """Drop uncommitted changes and untracked files, and move the branch back to ``to`` if given."""
    git(wt, "reset", "-q", "--hard", *([to] if to else []))
    git(wt, "clean", "-q", "-f", "-d")


def merge_into_worktree(wt: str | os.PathLike, commit: str, message: str, ident: Mapping[str, str]) -> list[str]:
    """Merge ``commit`` into the worktree's branch; on a conflict abort and return the paths."""
    p = git(wt, "merge", "-q", "--no-ff", "--no-edit", "--no-gpg-sign", "-m", message, commit, env=ident, ok=(0, 1, 128))
    if p.returncode == 0:
        return []
    conflicts = [text_path(f) for f in git(wt, "diff", "--name-only", "--diff-filter=U", "-z").stdout.split("\0") if f]
    git(wt, "merge", "--abort", ok=(0, 128))
    if not conflicts:  # a failure that is not a conflict (unknown commit, dirty tree, ...)
        raise failure(p, what=f"git merge {commit[:12]}")
    return conflicts

