"""Paths taken from data (templates, experiments, agents, commits), confined to their root.

A path in a task's ``file_scope``, an agent's edit, a commit or a model-server request is relative
to a root (the repository, a worktree). It may not be absolute, climb out with ``..``, or reach
into ``.git`` (git's own data: any component ``.git``, in any case, as git itself refuses); on
disk it may not leave the root, or reach ``.git``, through a symbolic link either.

``path_problem``: the check without a filesystem (lint, plan time). ``confine``: the check on
disk, returning the path to use. ``path_component``: a name that becomes one directory name
(an experiment id, a variant name in the results directory). Refusals raise ``PathEscape``,
one line naming the entry.

A file name is bytes to git and to Linux, and need not be UTF-8. Every path orch reads out of git
goes through ``text_path`` before it becomes data (a template's ``file_scope``, a conflict, an
event): a UTF-8 name stays as it is; any other is written the way git prints it, C-quoted
(``"caf\\351.txt"``), so stores, JSON files and terminals hold it as plain text.
``os_path`` turns such an entry back into the name to hand the operating system.
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


_C_ESCAPES = {0x07: "a", 0x08: "b", 0x09: "t", 0x0A: "n", 0x0B: "v", 0x0C: "f", 0x0D: "r", 0x22: '"', 0x5C: "\\"}
_C_UNESCAPES = {v: k for k, v in _C_ESCAPES.items()}


def text_path(name: str | bytes) -> str:
    """A path from git (bytes, or text decoded with surrogateescape) as text any store or file
    holds: itself when it is UTF-8 and does not start with a double quote, else C-quoted as git
    quotes it (octal for every byte from 0x80, control characters, ``"`` and ``\\``)."""
    raw = name if isinstance(name, bytes) else os.fsencode(name)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and not text.startswith('"'):
        return text
    out = []
    for b in raw:
        if b in _C_ESCAPES:
            out.append("\\" + _C_ESCAPES[b])
        elif b < 0x20 or b >= 0x7F:
            out.append(f"\\{b:03o}")
        else:
            out.append(chr(b))
    return '"' + "".join(out) + '"'


def os_path(rel: str) -> str:
    """The name to hand the operating system for a path ``text_path`` wrote (a C-quoted one
    becomes its bytes, as ``os.fsdecode`` spells them); any other path is itself."""
    if len(rel) < 2 or not (rel.startswith('"') and rel.endswith('"')):
        return rel
    body, out, i = rel[1:-1], bytearray(), 0
    while i < len(body):
        c = body[i]
        if c != "\\" or i + 1 == len(body):
            out += c.encode("utf-8")
            i += 1
        elif body[i + 1] in "01234567" and len(body) >= i + 4:
            out.append(int(body[i + 1:i + 4], 8) & 0xFF)
            i += 4
        else:
            out.append(_C_UNESCAPES.get(body[i + 1], ord(body[i + 1]) if body[i + 1].isascii() else 0x5C))
            i += 2
    return os.fsdecode(bytes(out))


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
