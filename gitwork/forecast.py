"""Foreseeing merge conflicts while agents work, without touching their worktrees.

``snapshot`` records a worktree as it is now -- its branch plus what the agent has not committed
yet -- as a commit nobody references: the worktree's index is copied to a temporary file and
``git add -A`` runs against the copy (``GIT_INDEX_FILE``), so the agent's own index, its lock and
its files are never written. ``conflicts`` is ``git merge-tree --write-tree`` of two commits (the
same computation the merged ref's merges make), ``merged`` the commit of a clean one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from gitwork.merging import _commit_tree, _merge_tree
from gitwork.runner import git, git_out

SNAPSHOT_MESSAGE = "orch: conflict forecast snapshot"


def snapshot(worktree: str | os.PathLike, identity: Mapping[str, str]) -> str:
    """A commit of ``worktree``'s files now (tracked and untracked, ``.gitignore`` respected) whose
    parent is its HEAD; HEAD itself when nothing is uncommitted."""
    wt = Path(worktree)
    head, index = git_out(wt, "rev-parse", "HEAD", "--git-path", "index").split("\n")
    index_path = Path(index) if os.path.isabs(index) else wt / index
    tmp = tempfile.mkdtemp(prefix="orch-forecast-")
    try:
        tmp_index = os.path.join(tmp, "index")
        try:
            shutil.copyfile(index_path, tmp_index)  # git replaces the index by a rename: a copy is whole
        except FileNotFoundError:
            pass  # no index yet: git builds one from the files
        env = {"GIT_INDEX_FILE": tmp_index}
        git(wt, "add", "-A", env=env, what="git add (forecast snapshot)")
        tree = git_out(wt, "write-tree", env=env, what="git write-tree (forecast snapshot)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if tree == git_out(wt, "rev-parse", f"{head}^{{tree}}"):
        return head
    return _commit_tree(wt, tree, [head], SNAPSHOT_MESSAGE, identity)


def conflicts(repo: str | os.PathLike, ours: str, theirs: str) -> list[str]:
    """The paths that would conflict merging commit ``theirs`` into ``ours`` (empty: clean)."""
    return _merge_tree(Path(repo), ours, theirs)[1]


def merged(repo: str | os.PathLike, ours: str, theirs: str, identity: Mapping[str, str]) -> tuple[str | None, list[str]]:
    """(an unreferenced merge commit of ``ours`` and ``theirs``, []) when they merge cleanly, else
    (None, the conflicting paths)."""
    tree, paths = _merge_tree(Path(repo), ours, theirs)
    if paths:
        return None, paths
    return _commit_tree(Path(repo), tree, [ours, theirs], SNAPSHOT_MESSAGE, identity), []
