"""Git for best-of-N attempts: where each attempt's commit is kept, how big its change is, and
how an agent's worktree goes back to a round's base without losing anything.

Every attempt's commit is kept on a branch of its own beside the run's merged branch,
``orch/<run>/bestof/<task>/<agent>`` (``.round<k>`` appended when the task's k-th attempt, k > 1,
was a round again), created before the attempt is reported: the winner is merged from it, the
losers stay there, named, and nothing an agent committed is ever left unreachable.
"""

from __future__ import annotations

import os
import posixpath
import re

from coordstore.errors import GitError

from gitwork.runner import git, git_out, is_ancestor

ZERO = "0" * 40
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def ref_part(name: str) -> str:
    """``name`` as one component of a branch name (git check-ref-format): anything but letters,
    digits, ``.``, ``_`` and ``-`` becomes ``_``; no leading dot, no ``..``, no ``.lock`` end."""
    s = _UNSAFE.sub("_", name).replace("..", "_.")
    if s.startswith("."):
        s = "_" + s[1:]
    if s.endswith(".lock") or s.endswith("."):
        s += "_"
    return s or "_"


def attempt_ref(merged_ref: str, task_id: str, agent_id: str, round_attempt: int = 1) -> str:
    """The full ref that keeps ``agent_id``'s attempt at ``task_id``: beside ``merged_ref``
    (``refs/heads/orch/<run>/merged``) under ``bestof/<task>/<agent>``."""
    leaf = ref_part(agent_id) + (f".round{round_attempt}" if round_attempt > 1 else "")
    return f"{posixpath.dirname(merged_ref)}/bestof/{ref_part(task_id)}/{leaf}"


def keep(cwd: str | os.PathLike, ref: str, commit: str) -> None:
    """Create ``ref`` at ``commit``, never moving an existing ref: the same ref at the same
    commit already is fine (a retried report), at another commit is a ``GitError``."""
    p = git(cwd, "update-ref", "-m", "orch: best-of attempt", ref, commit, ZERO, ok=None)
    if p.returncode == 0:
        return
    now = git(cwd, "rev-parse", "-q", "--verify", f"{ref}^{{commit}}", ok=(0, 1)).stdout.strip()
    if now != commit:
        raise GitError(f"git update-ref {ref}: already at {now[:12] or '?'}, cannot keep {commit[:12]} there")


def change_size(cwd: str | os.PathLike, base: str, commit: str) -> tuple[int, int]:
    """(lines added + deleted, files touched) from ``base`` to ``commit``; a binary file counts
    as one file and no lines."""
    if base == commit:
        return 0, 0
    lines = files = 0
    for row in git_out(cwd, "diff", "--numstat", "--no-renames", "-z", base, commit).split("\0"):
        parts = row.split("\t")
        if len(parts) < 3:
            continue
        files += 1
        lines += sum(int(x) for x in parts[:2] if x.isdigit())
    return lines, files


def keep_unsaved_head(cwd: str | os.PathLike, merged_ref: str, agent_id: str) -> str | None:
    """Before a worktree is moved to another base: a HEAD that neither the merged branch nor any
    kept attempt holds (a predecessor that died between its commit and keeping it) is kept under
    ``bestof/_left/<agent>/<sha12>``. Returns that ref, or None when nothing needed keeping."""
    head = git_out(cwd, "rev-parse", "HEAD")
    if is_ancestor(cwd, head, merged_ref):
        return None
    kept = posixpath.dirname(merged_ref) + "/bestof"
    if git_out(cwd, "for-each-ref", "--count=1", "--contains", head, "--format=%(refname)", kept):
        return None
    ref = f"{kept}/_left/{ref_part(agent_id)}/{head[:12]}"
    keep(cwd, ref, head)
    return ref
