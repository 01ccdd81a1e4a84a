"""gitwork.forecast on real worktrees: a snapshot holds uncommitted work and leaves the worktree,
its index and its branch as they were; merge-tree of two snapshots names the conflicting paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitfixtures import git, make_repo
from gitwork import forecast
from gitwork.runner import identity_env

ORCH = identity_env("orchestrator")

pytestmark = pytest.mark.usefixtures("no_git_identity")


def worktree(repo: Path, name: str) -> Path:
    wt = repo.parent / name
    git(repo, "worktree", "add", "-q", "-b", name, str(wt), "main")
    return wt


def test_snapshots_of_two_worktrees_foresee_their_conflict_without_touching_them(tmp_path):
    repo = make_repo(tmp_path / "repo", {"shared.txt": "a\nb\n", "other.txt": "x\n"})
    w1, w2 = worktree(repo, "w1"), worktree(repo, "w2")
    base = git(repo, "rev-parse", "main")
    assert forecast.snapshot(w1, ORCH) == base  # nothing uncommitted: HEAD itself

    (w1 / "shared.txt").write_text("a\nb\nfrom w1\n")
    (w1 / "new.txt").write_text("untracked\n")
    git(w2, "add", "-A")
    (w2 / "shared.txt").write_text("a\nb\nfrom w2\n")  # w2: a staged-nothing edit, index untouched
    status = {w: git(w, "status", "--porcelain") for w in (w1, w2)}
    s1, s2 = forecast.snapshot(w1, ORCH), forecast.snapshot(w2, ORCH)

    assert git(repo, "rev-parse", f"{s1}^") == base and git(repo, "show", f"{s1}:new.txt") == "untracked"
    assert git(repo, "show", f"{s2}:shared.txt").endswith("from w2")
    for w in (w1, w2):  # the worktrees, their index and branches are as they were
        assert git(w, "status", "--porcelain") == status[w]
        assert git(w, "rev-parse", "HEAD") == base
    assert forecast.conflicts(repo, s1, s2) == ["shared.txt"]
    assert forecast.conflicts(repo, base, s1) == []

    m1, paths = forecast.merged(repo, base, s1, ORCH)
    assert paths == [] and forecast.conflicts(repo, m1, s2) == ["shared.txt"]
    assert forecast.merged(repo, s2, s1, ORCH) == (None, ["shared.txt"])
