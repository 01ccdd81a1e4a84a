"""Merging agents' work: into the run's merged ref without any checkout, and back into a worktree.

``Merger`` lands each completed task's branch on ``refs/heads/orch/<run>/merged`` with plumbing
only: ``git merge-tree --write-tree`` computes the result (or the conflicting paths),
``git commit-tree`` records a two-parent merge commit, and ``git update-ref <ref> <new> <old>``
moves the ref only if nobody else moved it meanwhile (compare-and-swap; on a lost race the merge
is recomputed on the new tip). No work tree or index is touched, so merges can run while agents
keep working. ``catch_up`` brings an agent's worktree up to date with the merged ref before a
dependent task starts, so the task runs on its blockers' work rather than on a stale base.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel

from coordstore.errors import GitError
from coordstore.paths import text_path

from gitwork.repo import full_ref, is_full_sha, require_git_version, resolve_commit
from gitwork.runner import failure, git, git_out, is_ancestor

# Attempts to land one merge while other writers keep moving the merged ref; each lost race
# means someone else made progress, so a handful is plenty and a bound stops a livelock.
MAX_CAS_RETRIES = 8
LOCK_NAME = "orch-merge.lock"  # in the repository's git directory: one merge at a time across processes


class MergeResult(BaseModel):
    """Outcome of one merge.

    ``ok``: the source's work is in the target (merged now, or ``already_merged``).
    ``sha``: the target's commit after the call (unchanged on a conflict or when already merged).
    ``conflicts``: the conflicting paths when not ``ok``; the target is then left untouched.
    ``source``: the source commit's sha as resolved at merge time.
    """

    ok: bool
    sha: str
    conflicts: list[str] = []
    already_merged: bool = False
    source: str = ""


def _merge_tree(cwd: Path, ours: str, theirs: str) -> tuple[str, list[str]]:
    """(tree, conflicting paths) of merging ``theirs`` into ``ours``; no work tree involved."""
    p = git(cwd, "merge-tree", "--write-tree", "-z", "--name-only", "--no-messages", ours, theirs, ok=(0, 1, 128))
    fields = p.stdout.split("\0")
    tree = fields[0].strip()
    # status 1 is both "conflicts" and some errors (unknown revision): a tree id tells them apart
    if p.returncode not in (0, 1) or not is_full_sha(tree):
        raise failure(p, what=f"git merge-tree {ours[:12]} {theirs[:12]}")
    conflicts = list(dict.fromkeys(text_path(f) for f in fields[1:] if f)) if p.returncode == 1 else []
    return tree, conflicts


def _commit_tree(cwd: Path, tree: str, parents: list[str], message: str, identity: Mapping[str, str]) -> str:
    args = ["commit-tree", "--no-gpg-sign", tree]  # never wait on a signing prompt mid-run
    for p in parents:
        args += ["-p", p]
    sha = git_out(cwd, *args, "-m", message, env=identity, what="git commit-tree").strip()
    if not is_full_sha(sha):
        raise GitError(f"git commit-tree in {cwd} printed {sha!r} instead of a commit id")
    return sha


class Merger:
    """Merges sources into one ref of ``repo`` (e.g. ``refs/heads/orch/<run>/merged``).

    Safe to share between threads (merges are serialized in-process) and between processes
    (the ref only moves by compare-and-swap). Processes also take turns on an ``flock`` in the
    repository's git directory: with 64 runners merging at once, compare-and-swap alone made
    each merge lose ~6 races, every one a full merge-tree + commit-tree recomputed. The tip the
    last merger wrote is left in the lock file for the next holder (and cached in this object),
    so a merge costs the same three git commands as doing it by hand; a stale tip (the ref moved
    by someone else) only costs a retry, because the compare-and-swap refuses it.
    """

    def __init__(self, repo: str | os.PathLike, merged_ref: str) -> None:
        require_git_version()
        self.repo = Path(repo)
        self.ref = full_ref(merged_ref)
        if git(self.repo, "check-ref-format", self.ref, ok=(0, 1, 128)).returncode != 0:
            raise GitError(f"invalid merged ref name {merged_ref!r}")
        self._mutex = threading.Lock()
        self._tip: str | None = None  # commit and tree of the ref as last seen or written
        self._tree: str | None = None
        self._lock_file: Path | None | bool = False  # found on the first merge (None: no lock)

    @contextmanager
    def _turn(self) -> Iterator[int | None]:
        """This process's turn at the ref among every process merging into this repository;
        the in-process mutex must be held. No lock without a git directory of our own (a
        linked worktree as ``repo``): compare-and-swap still keeps the ref right."""
        if self._lock_file is False:
            gitdir = self.repo / ".git"
            bare = (self.repo / "HEAD").is_file() and (self.repo / "objects").is_dir()
            self._lock_file = gitdir / LOCK_NAME if gitdir.is_dir() else (self.repo / LOCK_NAME if bare else None)
        try:
            fd = os.open(self._lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600) if self._lock_file else None
        except OSError:
            fd = None
        if fd is None:
            yield None
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._take_tip(fd)
            yield fd
        finally:
            os.close(fd)  # closing releases the lock

    def _take_tip(self, fd: int) -> None:
        """The tip the previous holder of the lock left in it (``_leave_tip``), if it is of our ref:
        with many runners merging in turn, a tip cached in this process is almost always stale, and
        a stale one costs a merge-tree + commit-tree + failed update-ref before the re-read. A tip
        moved by anyone else (no note) still fails the compare-and-swap: then it is read again."""
        try:
            note = os.pread(fd, 512, 0).decode().split()
        except (OSError, UnicodeDecodeError):
            return
        if len(note) == 3 and note[0] == self.ref and is_full_sha(note[1]) and is_full_sha(note[2]):
            self._tip, self._tree = note[1], note[2]

    def _leave_tip(self, fd: int | None) -> None:
        if fd is None:
            return
        try:
            data = f"{self.ref} {self._tip} {self._tree}\n".encode()
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        except OSError:
            pass  # only a hint: the next merger reads the ref itself

    def create(self, base_sha: str) -> str:
        """Create the ref at ``base_sha``. Idempotent when it already points there (resume);
        ``GitError`` if it exists elsewhere or the base is unknown."""
        sha = resolve_commit(self.repo, base_sha)
        with self._mutex:
            create = ["update-ref", "-m", "orch: create merged ref", self.ref, sha, ""]  # "": must not exist
            if git(self.repo, *create, ok=(0, 1, 128)).returncode != 0:
                self._tip = None
                current = self._read()[0]
                if current != sha:
                    raise GitError(f"merged ref {self.ref} already exists at {current[:12]}, not at base {sha[:12]}")
            self._read()
        return sha

    def head(self) -> str:
        """The ref's current commit."""
        with self._mutex:
            return self._read()[0]

    def _read(self) -> tuple[str, str]:
        args = ["rev-parse", f"{self.ref}^{{commit}}", f"{self.ref}^{{tree}}"]
        p = git(self.repo, *args, ok=(0, 128))
        lines = p.stdout.split()
        if p.returncode != 0 or len(lines) != 2:
            raise GitError(f"merged ref {self.ref} does not exist in {self.repo}; create it first")
        self._tip, self._tree = lines
        return self._tip, self._tree

    def merge(self, source: str, message: str, identity: Mapping[str, str]) -> MergeResult:
        """Merge ``source`` (branch, ref or sha) into the ref with ``message``, committed as
        ``identity`` (see ``identity_env``).

        A conflict returns ``ok=False`` with the paths and leaves the ref where it was; the
        source branch is never modified. Already merged: ``ok``, ``already_merged``, no commit.
        """
        # Pin the source to a sha first: an agent may commit on its branch between computing
        # the tree and recording the parents, and the merge commit must claim exactly what it holds.
        src = source if is_full_sha(source) else resolve_commit(self.repo, source)
        with self._mutex, self._turn() as turn:
            for _ in range(MAX_CAS_RETRIES):
                cached = self._tip is not None
                tip, tip_tree = (self._tip, self._tree) if cached else self._read()
                tree, conflicts = _merge_tree(self.repo, tip, src)
                landed = not conflicts and tree == tip_tree and is_ancestor(self.repo, src, tip)
                if conflicts or landed:
                    # an answer that moves nothing gets no compare-and-swap check: confirm the tip
                    if cached and self._read()[0] != tip:
                        continue
                    if conflicts:
                        return MergeResult(ok=False, sha=tip, conflicts=conflicts, source=src)
                    return MergeResult(ok=True, sha=tip, already_merged=True, source=src)
                new = _commit_tree(self.repo, tree, [tip, src], message, identity)
                reflog = "orch: " + (message.splitlines() or ["merge"])[0]
                p = git(self.repo, "update-ref", "-m", reflog, self.ref, new, tip, ok=(0, 1, 128))
                if p.returncode == 0:
                    self._tip, self._tree = new, tree
                    self._leave_tip(turn)
                    return MergeResult(ok=True, sha=new, source=src)
                if self._read()[0] == tip:  # the ref did not move: the failure is not a lost race
                    raise failure(p, what=f"git update-ref {self.ref}")
            raise GitError(
                f"gave up merging {source} into {self.ref}: the ref moved {MAX_CAS_RETRIES} times during the merge"
            )


def catch_up(worktree: str | os.PathLike, merged_ref: str, identity: Mapping[str, str]) -> MergeResult:
    """Bring ``worktree``'s checked-out branch up to date with ``merged_ref``.

    Already contained: nothing happens. Behind: fast-forward. Diverged: a merge commit (as
    ``identity``) of the branch and the merged ref. The result is computed with merge-tree and
    applied with ``git reset --keep``, so on a conflict the worktree is not touched at all (the
    paths are returned), and uncommitted changes are never overwritten (``GitError`` instead).
    """
    wt = Path(worktree)
    ref = full_ref(merged_ref)
    head = resolve_commit(wt, "HEAD")
    target = resolve_commit(wt, ref)
    p = git(wt, "merge-base", head, target, ok=(0, 1))
    if p.returncode != 0:
        raise GitError(f"worktree {wt} and {ref} share no history; cannot catch up")
    base = p.stdout.strip()
    if base == target:
        return MergeResult(ok=True, sha=head, already_merged=True, source=target)
    if base == head:
        new = target  # fast-forward: the agent made no commit the merged ref lacks
    else:
        tree, conflicts = _merge_tree(wt, head, target)
        if conflicts:
            return MergeResult(ok=False, sha=head, conflicts=conflicts, source=target)
        branch = git_out(wt, "rev-parse", "--abbrev-ref", "HEAD").strip()
        new = _commit_tree(wt, tree, [head, target], f"orch: merge {ref} into {branch}", identity)
    git(wt, "reset", "--quiet", "--keep", new, what=f"catching up worktree {wt} with {ref}")
    return MergeResult(ok=True, sha=new, source=target)
