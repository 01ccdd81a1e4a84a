"""gitwork.worktrees on real repositories: parallel adds (threads and processes), bad input,
removal, and a clean that keeps unmerged work."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from coordstore.errors import GitError, InputError
from gitfixtures import run_git as git
from gitwork.runner import identity_env
from gitwork.merging import Merger
from gitwork.worktrees import Worktrees, clean, repo_lock
from fixtures_path import REPO_ROOT

TESTER = identity_env("tester")
ROOT = REPO_ROOT


pytestmark = pytest.mark.usefixtures("no_git_identity")


@pytest.fixture
def repo(tmp_path) -> Path:
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    for i in range(5):
        (r / f"f{i}.txt").write_text(f"file {i}\n")
    git(r, "add", "-A")
    git(r, "commit", "-q", "-m", "init", env=TESTER)
    # a remote-tracking style upstream, so a tracking start point would be possible
    git(r, "config", "branch.main.remote", "origin")
    return r


def main_state(repo: Path) -> tuple:
    """Everything of the user's work tree that orch must never touch."""
    files = sorted(
        (str(p.relative_to(repo)), hashlib.sha1(p.read_bytes()).hexdigest())
        for p in repo.rglob("*") if p.is_file() and ".git" not in p.relative_to(repo).parts
    )
    return (git(repo, "symbolic-ref", "HEAD"), git(repo, "rev-parse", "HEAD"), git(repo, "ls-files", "-s"),
            git(repo, "status", "--porcelain"), tuple(files))


def commit_file(wt: Path, name: str, text: str, who: str) -> str:
    (wt / name).write_text(text)
    git(wt, "add", name)
    git(wt, "commit", "-q", "-m", f"{who}: {name}", env=identity_env(who))
    return git(wt, "rev-parse", "HEAD")


def test_add_creates_untracked_branch_at_base_and_leaves_main_alone(repo, tmp_path):
    before = main_state(repo)
    base = git(repo, "rev-parse", "HEAD")
    wts = Worktrees(repo, tmp_path / "wts")
    path = wts.add("a1", "orch/r1/a1", "main")
    assert path == tmp_path / "wts" / "a1"
    assert git(path, "rev-parse", "HEAD") == base
    assert git(path, "symbolic-ref", "HEAD") == "refs/heads/orch/r1/a1"
    assert (path / "f3.txt").read_text() == "file 3\n"
    assert git(repo, "config", "--get", "branch.orch/r1/a1.remote", check=False) == ""  # --no-track
    commit_file(path, "new.txt", "agent work\n", "a1")
    wts.remove("a1")
    wts.prune()
    assert not path.exists()
    assert git(repo, "rev-parse", "--verify", "orch/r1/a1") != base  # the branch and its commit stay
    assert main_state(repo) == before


def test_four_agents_in_parallel_threads(repo, tmp_path):
    before = main_state(repo)
    wts = Worktrees(repo, tmp_path / "wts")
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def add(i: int) -> None:
        try:
            barrier.wait()
            wts.add(f"a{i}", f"orch/r1/a{i}", "HEAD")
        except BaseException as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    listed = git(repo, "worktree", "list", "--porcelain")
    for i in range(4):
        assert f"branch refs/heads/orch/r1/a{i}" in listed
        assert (tmp_path / "wts" / f"a{i}" / "f0.txt").exists()
    assert main_state(repo) == before


CHILD = textwrap.dedent(
    """
    import sys, time, pathlib
    sys.path.insert(0, sys.argv[1])
    from gitwork.worktrees import Worktrees
    repo, root, agent, go = sys.argv[2:6]
    print("ready", flush=True)
    while not pathlib.Path(go).exists():
        time.sleep(0.005)
    Worktrees(repo, root).add(agent, "orch/r2/" + agent, "main")
    print("added", flush=True)
    """
)


def spawn_adder(repo: Path, root: Path, agent: str, go: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(ROOT), str(repo), str(root), agent, str(go)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_four_agents_in_parallel_processes(repo, tmp_path):
    before = main_state(repo)
    go = tmp_path / "go"
    procs = [spawn_adder(repo, tmp_path / "wts", f"p{i}", go) for i in range(4)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    go.write_text("go")  # all four start their add at once
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert "added" in out
    listed = git(repo, "worktree", "list", "--porcelain")
    assert sum(f"branch refs/heads/orch/r2/p{i}" in listed for i in range(4)) == 4
    assert main_state(repo) == before


def test_add_waits_for_the_repository_lock_held_by_another_process(repo, tmp_path):
    go = tmp_path / "go"
    lock = repo_lock(repo)
    lock.acquire()
    try:
        proc = spawn_adder(repo, tmp_path / "wts", "late", go)
        assert proc.stdout.readline().strip() == "ready"
        go.write_text("go")
        time.sleep(1.0)  # ample time for an unlocked add; with the lock held it must still wait
        assert proc.poll() is None
        assert not (tmp_path / "wts" / "late").exists()
    finally:
        lock.release()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert (tmp_path / "wts" / "late" / "f0.txt").exists()


def _refs(repo: Path) -> str:
    return git(repo, "for-each-ref", "--format=%(refname) %(objectname)")


def test_bad_input_is_one_line_and_creates_nothing(repo, tmp_path):
    root = tmp_path / "wts"
    wts = Worktrees(repo, root)
    refs_before = _refs(repo)

    with pytest.raises(GitError) as exc:
        wts.add("a1", "orch/r1/a1", "no-such-ref")
    assert "'no-such-ref'" in str(exc.value) and "\n" not in str(exc.value)
    assert not root.exists() and _refs(repo) == refs_before

    wts.add("a1", "orch/r1/a1", "main")
    refs_after_one = _refs(repo)
    with pytest.raises(GitError, match=r"worktree path .*a1 already exists"):
        wts.add("a1", "orch/r1/other", "main")
    with pytest.raises(GitError, match="branch orch/r1/a1 already exists"):
        wts.add("a2", "orch/r1/a1", "main")
    assert not (root / "a2").exists()
    with pytest.raises(GitError, match="invalid branch name"):
        wts.add("a3", "bad..name", "main")
    with pytest.raises(InputError, match="cannot name a worktree directory"):
        wts.add("../escape", "orch/r1/esc", "main")
    assert _refs(repo) == refs_after_one
    assert sorted(p.name for p in root.iterdir()) == ["a1"]

    not_repo = tmp_path / "plain"
    not_repo.mkdir()
    with pytest.raises(GitError) as exc:
        Worktrees(not_repo, tmp_path / "w2")
    assert "plain" in str(exc.value) and "\n" not in str(exc.value)
    assert not (tmp_path / "w2").exists()


def test_remove_refuses_uncommitted_changes_unless_forced(repo, tmp_path):
    wts = Worktrees(repo, tmp_path / "wts")
    path = wts.add("a1", "orch/r1/a1", "main")
    (path / "f0.txt").write_text("unsaved\n")
    with pytest.raises(GitError, match="worktree remove"):
        wts.remove("a1")
    assert (path / "f0.txt").read_text() == "unsaved\n"
    wts.remove("a1", force=True)
    assert not path.exists()
    with pytest.raises(GitError, match="is not a worktree"):
        wts.remove("a1")


def test_clean_keeps_unmerged_and_dirty_work_and_removes_merged(repo, tmp_path):
    before = main_state(repo)
    base = git(repo, "rev-parse", "HEAD")
    wts = Worktrees(repo, tmp_path / "wts")
    paths = {a: wts.add(a, f"orch/r1/{a}", base) for a in ("done", "unmerged", "dirty", "idle", "detached")}
    done_tip = commit_file(paths["done"], "m.txt", "m\n", "done")
    commit_file(paths["unmerged"], "u.txt", "u\n", "unmerged")
    unmerged_tip = commit_file(paths["unmerged"], "u2.txt", "u2\n", "unmerged")
    (paths["dirty"] / "f1.txt").write_text("not committed\n")
    git(paths["detached"], "checkout", "-q", "--detach")
    detached_tip = commit_file(paths["detached"], "d.txt", "d\n", "detached")
    stranger = tmp_path / "not-a-worktree"
    stranger.mkdir()
    merger = Merger(repo, "orch/r1/merged")
    merger.create(base)
    assert merger.merge("orch/r1/done", "merge done", TESTER).ok

    branches = [f"orch/r1/{a}" for a in paths]
    report = clean(repo, branches, "orch/r1/merged", [*paths.values(), stranger], delete_branches=True)

    kept = {i.name: i.reason for i in report.kept}
    removed = {i.name: i.reason for i in report.removed}
    assert kept == {
        str(paths["dirty"]): "1 uncommitted changes",
        str(paths["detached"]): "detached HEAD with 1 commits on no branch",
        str(stranger): f"not a worktree of {repo}",
        "refs/heads/orch/r1/unmerged": "2 commits not merged anywhere",
        "refs/heads/orch/r1/dirty": f"checked out in worktree {paths['dirty']}",
    }
    assert removed == {
        str(paths["done"]): "clean",
        str(paths["unmerged"]): "clean",
        str(paths["idle"]): "clean",
        "refs/heads/orch/r1/done": "merged into refs/heads/orch/r1/merged",
        "refs/heads/orch/r1/idle": "merged into refs/heads/orch/r1/merged",
        # its HEAD commit is kept by the kept worktree; the branch itself points at the base
        "refs/heads/orch/r1/detached": "merged into refs/heads/orch/r1/merged",
    }
    for a in ("done", "unmerged", "idle"):
        assert not paths[a].exists()
    assert git(repo, "rev-parse", "--verify", "-q", "refs/heads/orch/r1/unmerged") == unmerged_tip
    assert git(repo, "rev-parse", "--verify", "-q", "refs/heads/orch/r1/dirty") == base
    assert git(repo, "rev-parse", "--verify", "-q", "refs/heads/orch/r1/done", check=False) == ""
    assert git(repo, "merge-base", "--is-ancestor", done_tip, "orch/r1/merged", check=False) == ""
    assert git(repo, "cat-file", "-t", detached_tip) == "commit" and paths["detached"].exists()
    assert (paths["dirty"] / "f1.txt").read_text() == "not committed\n"
    assert stranger.is_dir()
    assert main_state(repo) == before

    # a second pass with nothing to add, keeping branches: the same things stay, nothing breaks
    again = clean(repo, branches, "orch/r1/merged", [*paths.values()], delete_branches=False)
    assert again.removed == []
    assert {i.name for i in again.kept} == {str(paths["dirty"]), str(paths["detached"])}


def test_clean_keeps_the_merged_ref_itself_when_listed(repo, tmp_path):
    wts = Worktrees(repo, tmp_path / "wts")
    a1 = wts.add("a1", "orch/r1/a1", "main")
    commit_file(a1, "a.txt", "a\n", "a1")
    merger = Merger(repo, "orch/r1/merged")
    merger.create("main")
    merger.merge("orch/r1/a1", "merge a1", TESTER)
    report = clean(repo, ["orch/r1/a1", "orch/r1/merged"], "orch/r1/merged", [a1], delete_branches=True)
    assert {i.name: i.reason for i in report.kept} == {"refs/heads/orch/r1/merged": "2 commits not merged anywhere"}
    assert "refs/heads/orch/r1/a1" in report.removed_names()


def test_clean_counts_any_ref_outside_the_run_as_a_safe_home(repo, tmp_path):
    wts = Worktrees(repo, tmp_path / "wts")
    a1, a2 = wts.add("a1", "orch/r1/a1", "main"), wts.add("a2", "orch/r1/a2", "main")
    tip1 = commit_file(a1, "a.txt", "a\n", "a1")
    git(repo, "tag", "keep-a1", tip1)  # a1's work lives on a tag the user made
    commit_file(a2, "b.txt", "b\n", "a2")
    report = clean(repo, ["orch/r1/a1", "orch/r1/a2"], None, [a1, a2], delete_branches=True)
    removed = {i.name: i.reason for i in report.removed}
    assert removed["refs/heads/orch/r1/a1"] == "all its commits are on other refs"
    assert {i.name: i.reason for i in report.kept} == {"refs/heads/orch/r1/a2": "1 commits not merged anywhere"}
    assert git(repo, "rev-parse", "keep-a1") == tip1


def test_clean_names_git_ignored_files_and_keeps_them_unless_asked(repo, tmp_path):
    (repo / ".git" / "info" / "exclude").write_text("build/\n*.log\n")  # shared by every worktree
    wts = Worktrees(repo, tmp_path / "wts")
    a1, a2 = wts.add("a1", "orch/r1/a1", "main"), wts.add("a2", "orch/r1/a2", "main")
    (a1 / "build" / "sub").mkdir(parents=True)
    (a1 / "build" / "sub" / "out.o").write_text("built\n")
    (a1 / "run.log").write_text("log\n")
    plan = clean(repo, ["orch/r1/a1", "orch/r1/a2"], None, [a1, a2], delete_branches=True, apply=False)
    reason = "2 git-ignored files or directories (build/, run.log); --ignored deletes them"
    assert {i.name: i.reason for i in plan.kept} == {str(a1): reason,
                                                    "refs/heads/orch/r1/a1": f"checked out in worktree {a1}"}
    assert plan.removed_names() == {str(a2), "refs/heads/orch/r1/a2"}
    done = clean(repo, ["orch/r1/a1", "orch/r1/a2"], None, [a1, a2], delete_branches=True)
    assert done == plan  # the dry run said exactly what happened
    assert (a1 / "build" / "sub" / "out.o").read_text() == "built\n" and (a1 / "run.log").is_file()
    assert not a2.exists()
    # asked for: the ignored files go with the worktree, and the report says so
    done = clean(repo, ["orch/r1/a1"], None, [a1], delete_branches=True, remove_ignored=True)
    assert {i.name: i.reason for i in done.removed} == {
        str(a1): "clean; 2 git-ignored files or directories deleted (build/, run.log)",
        "refs/heads/orch/r1/a1": "all its commits are on other refs"}
    assert not a1.exists() and done.kept == []
