"""Which files the model server may read: those inside the worktrees it was given, nothing else.

A request names directories (a session's ``worktree``, the working directory a client states in
its prompt), files relative to them (a task's ``file_scope``) and a session's own script file.
Each is resolved -- symlinks followed, ``..`` collapsed -- and must land inside one of the
server's worktrees (a run's: its ``worktrees/`` directory; ``orch model-server``: ``--worktree``,
by default the directory it was started in); anything else is refused with 403, whatever the
file's permissions. The key (``handler``) says who may ask; this says what they may read.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from coordstore.errors import InputError
from coordstore.paths import PathEscape, confine


class PathRefused(InputError):
    """A request named a path outside the server's worktrees (served as HTTP 403)."""


def within(path: Path, root: Path) -> bool:
    """Whether the resolved ``path`` is ``root`` or lies below it (both resolved)."""
    return path == root or root in path.parents


def confine_to(root: str | Path, rel: str, what: str) -> Path:
    """``root/rel`` resolved, when it stays inside ``root`` by orch's one rule for paths from data
    (``coordstore.paths.confine``: no absolute path, no ``..`` or symlink leading out, nothing in
    ``.git``); ``PathRefused`` naming ``rel`` otherwise."""
    try:
        return confine(root, rel, what, inside=f"the worktree {Path(root).resolve()}")
    except PathEscape as e:
        raise PathRefused(str(e)) from e


class Worktrees:
    """The directories a server may read below. No roots: nothing may be read."""

    def __init__(self, roots: Iterable[str | Path] = ()):
        self.roots = tuple(Path(r).resolve() for r in roots)

    def confine(self, path: str | Path, what: str) -> Path:
        """``path`` resolved, when it lies inside one of the roots; ``PathRefused`` naming it otherwise."""
        p = Path(path)
        if p.is_absolute():
            real = p.resolve()
            if any(within(real, r) for r in self.roots):
                return real
        shown = ", ".join(map(str, self.roots)) or "none given"
        raise PathRefused(f"{what} {path}: not inside the model server's worktrees ({shown})")
