"""Per-agent git worktrees, and the cleanup that never deletes unmerged work.

``git worktree add/remove/prune`` rewrite shared files in the repository's common dir
(``config``, ``worktrees/``); run in parallel they fail on ``config.lock``. So every such
operation on one repository is serialized behind one ``filelock.FileLock`` in the common dir,
which holds across threads and processes (several orchestrators may share a repository).
The user's own work tree, HEAD and index are never touched: worktrees are created from a
commit with ``--no-track -b``, and nothing here checks anything out in the main work tree.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import filelock
from pydantic import BaseModel

from coordstore.errors import GitError, InputError
from coordstore.private import private_dir

from gitwork.repo import common_dir, dirty_paths, full_ref, ignored_paths, list_worktrees, ref_exists, resolve_commit
from gitwork.runner import git, git_out, last_line

# How long to wait for another process's worktree operation; a checkout of a large repository
# can take a while, a lock held longer than this is a stuck process worth reporting.
LOCK_TIMEOUT_S = 120.0
LOCK_NAME = "orch-worktrees.lock"

_AGENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # one safe path component


def repo_lock(repo: str | os.PathLike) -> filelock.FileLock:
    """The per-repository lock for worktree and run-branch operations."""
    return filelock.FileLock(str(common_dir(repo) / LOCK_NAME), timeout=LOCK_TIMEOUT_S)


class _Locked:
    """``with _Locked(lock, repo):`` acquire, turning a timeout into a one-line GitError."""

    def __init__(self, lock: filelock.FileLock, repo: Path) -> None:
        self.lock, self.repo = lock, repo

    def __enter__(self) -> None:
        try:
            self.lock.acquire()
        except filelock.Timeout as e:
            raise GitError(
                f"timed out after {LOCK_TIMEOUT_S:.0f}s waiting for the worktree lock {self.lock.lock_file} of {self.repo}"
            ) from e

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def _same_path(a: Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


class Worktrees:
    """The agents' worktrees of one repository, at ``<root>/<agent>``."""

    def __init__(self, repo: str | os.PathLike, root: str | os.PathLike) -> None:
        self.repo = Path(repo)
        self.root = Path(root)
        self._lock = repo_lock(self.repo)

    def path(self, agent: str) -> Path:
        if not _AGENT_NAME.match(agent or ""):
            raise InputError(f"agent id {agent!r} cannot name a worktree directory (letters, digits, . _ - only)")
        return self.root / agent

    def add(self, agent: str, branch: str, base_sha: str) -> Path:
        """Create ``<root>/<agent>`` on a new branch ``branch`` at ``base_sha``; return its path.

        ``GitError`` and nothing created when the path exists, the branch exists or is not a
        valid name, or the base is not a commit. The branch does not track anything.
        """
        path = self.path(agent)
        valid = git(self.repo, "check-ref-format", "--branch", branch, ok=(0, 1, 128)).returncode == 0
        if not valid or branch.startswith("-"):
            raise GitError(f"invalid branch name {branch!r} for agent {agent}")
        with _Locked(self._lock, self.repo):
            if path.exists() or path.is_symlink():
                raise GitError(f"worktree path {path} already exists")
            if ref_exists(self.repo, f"refs/heads/{branch}"):
                raise GitError(f"branch {branch} already exists in {self.repo}")
            sha = resolve_commit(self.repo, base_sha)
            made_root = not self.root.exists()
            private_dir(self.root)  # the worktrees' container; the checkouts inside keep git's modes
            try:
                git(self.repo, "worktree", "add", "--quiet", "--no-track", "-b", branch, str(path), sha,
                    what=f"git worktree add for agent {agent}")
            except GitError:
                if made_root and not any(self.root.iterdir()):
                    self.root.rmdir()
                raise
        return path

    def remove(self, agent: str, *, force: bool = False) -> None:
        """Remove the agent's worktree (its branch stays). Refused while it has uncommitted
        changes unless ``force`` (which discards them)."""
        path = self.path(agent)
        with _Locked(self._lock, self.repo):
            if not any(_same_path(w.path, path) for w in list_worktrees(self.repo)):
                raise GitError(f"{path} is not a worktree of {self.repo}")
            args = ["worktree", "remove", *(["--force"] if force else []), str(path)]
            git(self.repo, *args, what=f"git worktree remove for agent {agent}")

    def prune(self) -> None:
        """Forget worktrees whose directories were deleted by hand."""
        with _Locked(self._lock, self.repo):
            git(self.repo, "worktree", "prune", what="git worktree prune")


@contextmanager
def scratch_worktree(repo: str | os.PathLike, commit: str, root: str | os.PathLike) -> Iterator[Path]:
    """A detached checkout of ``commit`` in a new directory under ``root``, for running a command
    on a tree nobody works in (the merged branch's tip); removed on the way out with whatever the
    command wrote there. Nothing else moves: no branch is created, and the user's checkout and the
    agents' worktrees are not touched. ``GitError`` when ``commit`` is not one."""
    repo = Path(repo)
    sha = resolve_commit(repo, commit)
    lock = repo_lock(repo)
    path = Path(tempfile.mkdtemp(prefix=f"{sha[:12]}-", dir=private_dir(root)))  # git adds into an empty directory
    try:
        with _Locked(lock, repo):
            git(repo, "worktree", "add", "--quiet", "--detach", str(path), sha, what=f"git worktree add --detach {sha[:12]}")
        yield path
    finally:
        with _Locked(lock, repo):
            # twice --force: also when the command left it locked; a failure still ends in rmtree + prune
            git(repo, "worktree", "remove", "--force", "--force", str(path), ok=(0, 1, 128))
            shutil.rmtree(path, ignore_errors=True)
            git(repo, "worktree", "prune", ok=(0, 1, 128))


def clear_scratch(repo: str | os.PathLike, root: str | os.PathLike, apply: bool = True) -> list[Path]:
    """Remove what ``scratch_worktree`` left under ``root`` when its process was killed mid-use
    (registered worktrees and bare directories alike), whatever was written in them: they hold
    nothing of anyone's. The paths removed (``apply=False``: that would be)."""
    repo, root = Path(repo), Path(root)
    if not root.is_dir():
        return []
    left = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())
    if apply and left:
        with _Locked(repo_lock(repo), repo):
            for path in left:
                if any(_same_path(w.path, path) for w in list_worktrees(repo)):
                    git(repo, "worktree", "remove", "--force", "--force", str(path), ok=(0, 1, 128))
                shutil.rmtree(path, ignore_errors=True)
            git(repo, "worktree", "prune", ok=(0, 1, 128))
    return left


class CleanItem(BaseModel):
    kind: Literal["worktree", "branch"]
    name: str  # worktree path or full ref name
    reason: str


class CleanReport(BaseModel):
    """What ``clean`` removed and what it kept, each with the reason (``orch clean --json``)."""

    removed: list[CleanItem] = []
    kept: list[CleanItem] = []

    def kept_names(self) -> set[str]:
        return {i.name for i in self.kept}

    def removed_names(self) -> set[str]:
        return {i.name for i in self.removed}


def _not_merged_count(repo: Path, tip: str, elsewhere: list[str]) -> int:
    """Commits reachable from ``tip`` and from none of ``elsewhere``."""
    # refs go on stdin: a repository can have more refs than a command line holds
    args = ["rev-list", "--count", "--stdin"]
    stdin = "\n".join([tip, *(f"^{r}" for r in elsewhere)]) + "\n"
    return int(git_out(repo, *args, input=stdin).strip() or 0)


def _some(paths: list[str], n: int = 3) -> str:
    return ", ".join(paths[:n]) + (f", ... ({len(paths) - n} more)" if len(paths) > n else "")


def clean(
    repo: str | os.PathLike,
    run_branches: Iterable[str],
    merged_ref: str | None,
    worktree_paths: Iterable[str | os.PathLike],
    delete_branches: bool,
    apply: bool = True,
    remove_ignored: bool = False,
) -> CleanReport:
    """Remove a run's worktrees and (if ``delete_branches``) its branches, keeping unmerged work.

    A worktree is kept when it has uncommitted changes, a detached HEAD with commits on no ref,
    or git-ignored files (named; ``remove_ignored`` deletes them with the worktree, as
    ``git worktree remove`` would silently); a path that is not a worktree of ``repo`` is never
    deleted. A branch is kept when it is checked out in a remaining worktree, or holds commits
    reachable neither from ``merged_ref`` nor from any ref outside ``run_branches`` ("N commits
    not merged anywhere").
    Branches are deleted with a compare-and-swap, so one that moves meanwhile is kept.
    ``apply=False`` is the dry run: the same decisions, nothing changed.
    """
    repo = Path(repo)
    report = CleanReport()
    run_refs = [full_ref(b) for b in run_branches]
    run_set = set(run_refs)
    with _Locked(repo_lock(repo), repo):
        all_refs = [r for r in git_out(repo, "for-each-ref", "--format=%(refname)").splitlines() if r]
        # a stash entry is not merged work, so it does not make a branch safe to delete
        outside = [r for r in all_refs if r not in run_set and r != "refs/stash"]
        registered = list_worktrees(repo)
        gone: list[Path] = []  # worktrees removed (or, in a dry run, that would be)

        for raw in worktree_paths:
            path = Path(raw)
            info = next((w for w in registered if _same_path(w.path, path)), None)
            if info is None:
                if path.exists():
                    report.kept.append(CleanItem(kind="worktree", name=str(path), reason=f"not a worktree of {repo}"))
                continue
            if not path.exists():
                if apply:
                    git(repo, "worktree", "prune", what="git worktree prune")
                report.removed.append(CleanItem(kind="worktree", name=str(path),
                                                reason="directory was gone; " + ("pruned" if apply else "prune")))
                gone.append(path)
                continue
            dirty = dirty_paths(path)
            if dirty:
                report.kept.append(CleanItem(kind="worktree", name=str(path), reason=f"{len(dirty)} uncommitted changes"))
                continue
            if info.branch is None and info.head:
                lost = _not_merged_count(repo, info.head, all_refs)
                if lost:
                    report.kept.append(
                        CleanItem(kind="worktree", name=str(path), reason=f"detached HEAD with {lost} commits on no branch")
                    )
                    continue
            ignored = ignored_paths(path)
            if ignored and not remove_ignored:
                report.kept.append(CleanItem(kind="worktree", name=str(path), reason=(
                    f"{len(ignored)} git-ignored files or directories ({_some(ignored)}); --ignored deletes them")))
                continue
            if apply:
                git(repo, "worktree", "remove", str(path), what=f"git worktree remove {path}")
            deleted = f"; {len(ignored)} git-ignored files or directories deleted ({_some(ignored)})" if ignored else ""
            report.removed.append(CleanItem(kind="worktree", name=str(path), reason="clean" + deleted))
            gone.append(path)

        if not delete_branches:
            return report
        checked_out = {w.branch: w.path for w in registered if w.branch and not any(_same_path(w.path, g) for g in gone)}
        merged_full = full_ref(merged_ref) if merged_ref else None
        for ref in run_refs:
            if not ref_exists(repo, ref):
                continue
            if ref in checked_out:
                report.kept.append(CleanItem(kind="branch", name=ref, reason=f"checked out in worktree {checked_out[ref]}"))
                continue
            elsewhere = [r for r in outside if r != ref]
            if merged_full and merged_full != ref and ref_exists(repo, merged_full):
                elsewhere.append(merged_full)
            sha = resolve_commit(repo, ref)
            n = _not_merged_count(repo, sha, elsewhere)
            if n:
                report.kept.append(CleanItem(kind="branch", name=ref, reason=f"{n} commits not merged anywhere"))
                continue
            if apply:
                p = git(repo, "update-ref", "-d", ref, sha, ok=(0, 1, 128))
                if p.returncode != 0:
                    report.kept.append(CleanItem(kind="branch", name=ref, reason=f"moved during clean: {last_line(p.stderr)}"))
                    continue
            in_merged = merged_full in elsewhere and _not_merged_count(repo, sha, [merged_full]) == 0
            where = f"merged into {merged_full}" if in_merged else "all its commits are on other refs"
            report.removed.append(CleanItem(kind="branch", name=ref, reason=where))
    return report
