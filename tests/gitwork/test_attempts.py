"""Best-of attempts in git (``gitwork.attempts``), on real repositories."""

from __future__ import annotations

import subprocess

import pytest

from coordstore.errors import GitError
from gitfixtures import git, make_repo, write
from gitwork.attempts import attempt_ref, change_size, keep, keep_unsaved_head, ref_part

MERGED = "refs/heads/orch/r1/merged"


def commit(repo, files, msg="c") -> str:
    write(repo, files)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", msg)
    return git(repo, "rev-parse", "HEAD")


@pytest.mark.parametrize("task_id", ["t1", "a b/c", "..x", ".hidden", "x.lock", "a~b^c:d?e*f[g\\h", "@{u}", "ü"])
def test_every_task_and_agent_id_gives_a_valid_branch_name(tmp_path, task_id):
    ref = attempt_ref(MERGED, task_id, task_id, 2)
    assert ref.startswith("refs/heads/orch/r1/bestof/") and ref.endswith(".round2")
    assert subprocess.run(["git", "check-ref-format", ref]).returncode == 0, ref
    assert "/" not in ref_part(task_id)


def test_keep_creates_once_and_never_moves_a_kept_attempt(tmp_path):
    repo = make_repo(tmp_path / "r", {"a": "1\n"})
    first = git(repo, "rev-parse", "HEAD")
    second = commit(repo, {"a": "2\n"})
    ref = attempt_ref(MERGED, "t1", "w1")
    keep(repo, ref, first)
    keep(repo, ref, first)  # the same again: a retried report
    with pytest.raises(GitError, match="already at"):
        keep(repo, ref, second)
    assert git(repo, "rev-parse", ref) == first


def test_change_size_counts_lines_and_files_a_binary_file_as_no_lines(tmp_path):
    repo = make_repo(tmp_path / "r", {"a": "1\n2\n3\n", "b": "x\n"})
    base = git(repo, "rev-parse", "HEAD")
    head = commit(repo, {"a": "1\nTWO\n3\n4\n", "bin": b"\0\1\2", "b": None})
    assert change_size(repo, base, head) == (2 + 1 + 1, 3)  # a: -1 +2; b: -1; bin: a file, no lines
    assert change_size(repo, head, head) == (0, 0)


def test_a_head_nobody_holds_is_kept_before_the_worktree_moves(tmp_path):
    repo = make_repo(tmp_path / "r", {"a": "1\n"})
    git(repo, "update-ref", MERGED, "HEAD")
    assert keep_unsaved_head(repo, MERGED, "w1") is None  # HEAD is in the merged branch
    lone = commit(repo, {"a": "2\n"})
    ref = keep_unsaved_head(repo, MERGED, "w1")
    assert ref == f"refs/heads/orch/r1/bestof/_left/w1/{lone[:12]}" and git(repo, "rev-parse", ref) == lone
    kept = commit(repo, {"a": "3\n"})
    keep(repo, attempt_ref(MERGED, "t2", "w1"), kept)
    assert keep_unsaved_head(repo, MERGED, "w1") is None  # a kept attempt holds it
