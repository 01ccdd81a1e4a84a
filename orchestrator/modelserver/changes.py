"""What a task does to the files of a worktree, as whole contents: for clients that cannot run tool
calls and edit by text instead (aider), a script states its changes rather than its commands.

``sim_changes``: the sim kind's edits, each applied to the file as the worktree has it (a file
edited twice in a plan gets both). ``replay_changes``: a recorded commit, file by file; where the
worktree's file is not the commit's parent version, the three-way merge ``git apply --3way``
would have made (``git merge-file``), and a conflict is a ``ReplayError`` naming the file.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from coordstore.errors import ReplayError

from agents.kinds.simplan import edit_text

from gitwork.runner import git
from orchestrator.modelserver.confine import confine_to


@dataclass
class FileChange:
    path: str  # relative to the worktree
    old: str | None  # the worktree's content now; None: no such file
    new: str | None  # None: the file is deleted
    binary: bool = False  # content that is not UTF-8 text (a text edit cannot carry it)


def _read(root: Path, rel: str) -> str | None:
    p = confine_to(root, rel, "file")
    return p.read_text(encoding="utf-8", errors="surrogateescape") if p.is_file() else None


def sim_changes(worktree: str, task, plan) -> list[FileChange]:
    root, now, first = Path(worktree), {}, {}
    for index in sorted(plan.edits):
        for rel in plan.edits[index]:
            if rel not in now:
                now[rel] = first[rel] = _read(root, rel)
            now[rel], _ = edit_text(now[rel], rel, task, plan.digest)
    return [FileChange(rel, first[rel], now[rel]) for rel in now]


def replay_git(repo: str, *args: str) -> bytes:
    """``git ARGS`` in ``repo``, its stdout; a ``ReplayError`` naming the command and git's message."""
    return git(repo, *args, binary=True, error=ReplayError, what=f"script replay: git {' '.join(args[:2])}").stdout


def _blob(repo: str, rev: str, rel: str) -> bytes:
    return replay_git(repo, "cat-file", "blob", f"{rev}:{rel}")


def _text(data: bytes) -> str | None:
    """The bytes as text, None when they are not UTF-8 text."""
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def replay_changes(worktree: str, sha: str, parent: str) -> list[FileChange]:
    """The commit ``parent..sha`` as whole-file changes against the worktree as it is now."""
    root = Path(worktree)
    listing = replay_git(worktree, "diff", "--name-status", "-z", "--no-renames", parent, sha).split(b"\0")
    out: list[FileChange] = []
    for status, raw in zip(listing[0::2], listing[1::2]):
        rel = raw.decode("utf-8", "surrogateescape")
        current = _read(root, rel)
        if status == b"D":
            out.append(FileChange(rel, current, None))
            continue
        theirs = _blob(worktree, sha, rel)
        text = _text(theirs)
        if text is None:
            out.append(FileChange(rel, current, None, binary=True))
            continue
        base = _text(_blob(worktree, parent, rel)) if status != b"A" else None
        if current is None or current == base or (status == b"A" and current == text):
            out.append(FileChange(rel, current, text))
            continue
        out.append(FileChange(rel, current, _merge(worktree, rel, current, base or "", text)))
    return out


def _merge(repo: str, rel: str, current: str, base: str, theirs: str) -> str:
    with tempfile.TemporaryDirectory(prefix="orch-merge-") as d:
        files = []
        for name, text in (("current", current), ("base", base), ("theirs", theirs)):
            f = Path(d) / name
            f.write_text(text, encoding="utf-8", errors="surrogateescape")
            files.append(str(f))
        # outside any repository: merge-file reads and writes only the files it is given
        p = git(d, "merge-file", "-p", *files, ok=None)
    if p.returncode != 0:
        raise ReplayError(f"script replay: {rel}: the commit's change conflicts with the worktree's version")
    return p.stdout
