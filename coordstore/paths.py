"""Paths taken from data (templates, experiments, agents, commits), confined to their root.

A path in a task's ``file_scope``, an agent's edit, a commit or a model-server request is relative
to a root (the repository, a worktree). It may not be absolute, climb out with ``..``, or reach
into ``.git`` (git's own data: any component ``.git``, in any case, as git itself refuses); on
disk it may not leave the root, or reach ``.git``, through a symbolic link either.

``path_problem``: the check without a filesystem (lint, plan time). ``confine``: the check on
disk, returning the path to use. ``path_component``: a name that becomes one directory name
(an experiment id, a variant name in the results directory). Refusals raise ``PathEscape``,
one line naming the entry.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from coordstore.errors import InputError


class PathEscape(InputError):
    """A path from data that would leave its root or reach into ``.git``; names the entry.
    ``problem``: what is wrong with it, e.g. "is absolute"."""

    def __init__(self, message: str, problem: str = "") -> None:
        super().__init__(message)
        self.problem = problem


def _is_git_dir(part: str) -> bool:
    return part.lower() == ".git"


def path_problem(rel: object) -> str | None:
    """Why ``rel`` cannot be a path inside a root, judged on the text alone; None if it can."""
    if not isinstance(rel, str) or not rel:
        return "is empty"
    if "\0" in rel:
        return "contains a NUL byte"
    if rel.startswith("/"):
        return "is absolute"
    depth = 0
    for part in PurePosixPath(rel).parts:
        if _is_git_dir(part):
            return "is inside .git"
        if part == "..":
            depth -= 1
            if depth < 0:
                return "leads out through '..'"
        elif part != ".":
            depth += 1
    return None


WORK_TREE = "the repository's work tree"


def refusal(what: str, rel: object, problem: str, inside: str = WORK_TREE) -> PathEscape:
    """The one-line error for ``rel`` (described by ``what``, e.g. "task 'a': file_scope entry")."""
    return PathEscape(f"{what} {rel!r} {problem}: it must be a path within {inside}", problem)


def check_relative(rel: object, what: str = "path", inside: str = WORK_TREE) -> str:
    """``rel`` itself if ``path_problem`` finds nothing, else ``PathEscape`` naming it."""
    problem = path_problem(rel)
    if problem:
        raise refusal(what, rel, problem, inside)
    return rel  # type: ignore[return-value]


def confine(root: str | os.PathLike, rel: str, what: str = "path", follow: bool = True, inside: str | None = None) -> Path:
    """``root/rel`` as an absolute path that stays inside ``root`` and out of its ``.git``.

    ``follow``: symbolic links are resolved all the way (the returned path is the real file,
    for reading or writing through). Without it the last component is taken as it is (the
    link itself, as git writes a link rather than through it); its directories are resolved.
    Raises ``PathEscape`` naming ``what`` and ``rel``; ``inside`` names the root in it (default:
    its path).
    """
    inside = str(root) if inside is None else inside
    check_relative(rel, what, inside)
    base = Path(root).resolve()
    norm = os.path.normpath(rel)
    if norm == ".":
        return base
    joined = base / norm
    target = joined.resolve() if follow else joined.parent.resolve() / joined.name
    if target != base and base not in target.parents:
        raise refusal(what, rel, "leads out through a symbolic link", inside)
    if any(_is_git_dir(p) for p in target.relative_to(base).parts):
        raise refusal(what, rel, "leads into .git through a symbolic link", inside)
    return target


def path_component(name: object, what: str) -> str:
    """``name`` if it can be one directory name (no ``/``, not ``.`` or ``..``), else ``PathEscape``."""
    if not isinstance(name, str) or not name:
        problem = "is empty"
    elif "/" in name or "\\" in name:
        problem = "contains a path separator"
    elif name in (".", ".."):
        problem = "is a relative directory name"
    elif "\0" in name:
        problem = "contains a NUL byte"
    else:
        return name
    raise PathEscape(f"{what} {name!r} {problem}: it names a directory, so it must be a single path component", problem)
