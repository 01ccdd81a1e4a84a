"""gitwork.merging on real repositories: merges without checkout, conflicts, compare-and-swap
under concurrent writers, and worktrees catching up with the merged ref."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from coordstore.errors import GitError
from gitfixtures import run_git as git
from gitwork.runner import identity_env
from gitwork.merging import Merger, catch_up
from gitwork.worktrees import Worktrees
from fixtures_path import REPO_ROOT

TESTER = identity_env("tester")
ORCH = identity_env("orchestrator")
MERGED = "refs/heads/orch/r1/merged"
ROOT = REPO_ROOT


pytestmark = pytest.mark.usefixtures("no_git_identity")


@pytest.fixture
def repo(tmp_path) -> Path:
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    (r / "shared.txt").write_text("".join(f"line {i}\n" for i in range(10)))
    git(r, "add", "-A")
    git(r, "commit", "-q", "-m", "init", env=TESTER)
    return r


def commit_on_branch(repo: Path, branch: str, files: dict[str, str], who: str, start: str = "main") -> str:
    """A commit on a new branch made with plumbing, so the main work tree is not touched."""
    env = {**identity_env(who), "GIT_INDEX_FILE": str(repo / ".git" / f"index-{who}")}
    git(repo, "read-tree", start, env=env)
    for name, text in files.items():
        blob = subprocess.run(["git", "-C", str(repo), "hash-object", "-w", "--stdin"], input=text,
                              capture_output=True, text=True, check=True).stdout.strip()
        git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{name}", env=env)
    tree = git(repo, "write-tree", env=env)
    sha = git(repo, "commit-tree", tree, "-p", start, "-m", f"{who} work", env=env)
    git(repo, "update-ref", f"refs/heads/{branch}", sha)
    return sha


def show(repo: Path, rev: str, path: str) -> str:
    return git(repo, "show", f"{rev}:{path}", check=False)


def main_state(repo: Path) -> tuple:
    return (git(repo, "symbolic-ref", "HEAD"), git(repo, "rev-parse", "HEAD"), git(repo, "ls-files", "-s"),
            git(repo, "status", "--porcelain", "--untracked-files=all"), (repo / "shared.txt").read_text())


def test_eight_branches_merge_in_order_without_touching_any_work_tree(repo):
    before = main_state(repo)
    tips = [commit_on_branch(repo, f"orch/r1/a{i}", {f"a{i}/out.txt": f"agent {i}\n"}, f"a{i}") for i in range(8)]
    merger = Merger(repo, MERGED)
    base = merger.create("main")
    assert base == git(repo, "rev-parse", "main")
    shas = []
    for i in range(8):
        res = merger.merge(f"orch/r1/a{i}", f"merge task t{i}", ORCH)
        assert res.ok and not res.already_merged and res.conflicts == []
        assert res.source == tips[i]
        assert git(repo, "rev-parse", MERGED) == res.sha
        shas.append(res.sha)
    for i in range(8):
        assert show(repo, MERGED, f"a{i}/out.txt") == f"agent {i}"
    # first-parent history is the merges in order, each with the agent's tip as second parent
    assert git(repo, "rev-list", "--first-parent", f"{base}..{MERGED}").split() == shas[::-1]
    for i, sha in enumerate(shas):
        assert git(repo, "rev-parse", f"{sha}^2") == tips[i]
        who_what = git(repo, "log", "-1", "--format=%an <%ae>|%s", sha)
        assert who_what == f"orchestrator <orchestrator@agents.orch>|merge task t{i}"
    assert main_state(repo) == before


def test_conflict_is_recorded_and_later_branches_still_merge(repo):
    before = main_state(repo)
    lines = (repo / "shared.txt").read_text().splitlines(keepends=True)
    first = commit_on_branch(repo, "orch/r1/a1", {"shared.txt": "".join(lines[:3] + ["A1 was here\n"] + lines[4:])}, "a1")
    second = commit_on_branch(repo, "orch/r1/a2", {"shared.txt": "".join(lines[:3] + ["A2 was here\n"] + lines[4:])}, "a2")
    third = commit_on_branch(repo, "orch/r1/a3", {"other.txt": "a3\n"}, "a3")
    merger = Merger(repo, MERGED)
    merger.create("main")
    r1 = merger.merge("orch/r1/a1", "merge a1", ORCH)
    assert r1.ok
    r2 = merger.merge("orch/r1/a2", "merge a2", ORCH)
    assert not r2.ok and r2.conflicts == ["shared.txt"] and r2.sha == r1.sha and not r2.already_merged
    assert git(repo, "rev-parse", MERGED) == r1.sha  # the ref did not move
    assert git(repo, "rev-parse", "orch/r1/a1") == first  # both branches intact
    assert git(repo, "rev-parse", "orch/r1/a2") == second
    r3 = merger.merge("orch/r1/a3", "merge a3", ORCH)
    assert r3.ok and git(repo, "rev-parse", f"{r3.sha}^2") == third
    assert "A1 was here" in show(repo, MERGED, "shared.txt") and "A2" not in show(repo, MERGED, "shared.txt")
    assert show(repo, MERGED, "other.txt") == "a3"
    # merging again what is already in: no new commit
    again = merger.merge(first, "again", ORCH)
    assert again.ok and again.already_merged and again.sha == r3.sha == git(repo, "rev-parse", MERGED)
    assert main_state(repo) == before


def test_a_stale_merger_retries_on_the_moved_ref(repo):
    for i in range(3):
        commit_on_branch(repo, f"orch/r1/b{i}", {f"b{i}.txt": f"{i}\n"}, f"b{i}")
    one, other = Merger(repo, MERGED), Merger(repo, MERGED)
    one.create("main")
    assert other.head() == one.head()  # `other` caches the tip as it is now
    one.merge("orch/r1/b0", "b0", ORCH)
    one.merge("orch/r1/b1", "b1", ORCH)
    res = other.merge("orch/r1/b2", "b2", ORCH)  # its cached tip is two merges old
    assert res.ok
    for i in range(3):
        assert show(repo, MERGED, f"b{i}.txt") == str(i)
    assert git(repo, "rev-list", "--count", "--first-parent", f"main..{MERGED}") == "3"


def test_a_stale_merger_never_answers_from_an_old_tip(repo):
    lines = (repo / "shared.txt").read_text().splitlines(keepends=True)
    commit_on_branch(repo, "orch/r1/a1", {"shared.txt": "".join(lines[:3] + ["A1\n"] + lines[4:])}, "a1")
    a2 = commit_on_branch(repo, "orch/r1/a2", {"shared.txt": "".join(lines[:3] + ["A2\n"] + lines[4:])}, "a2")
    merger = Merger(repo, MERGED)
    merger.create("main")
    t1 = merger.merge("orch/r1/a1", "a1", ORCH).sha
    assert merger.merge("orch/r1/a2", "a2", ORCH).conflicts == ["shared.txt"]
    # someone resolves the conflict by hand and moves the ref; this merger's cached tip is now old
    both = "".join(lines[:3] + ["A1+A2\n"] + lines[4:])
    resolved = commit_on_branch(repo, "resolution", {"shared.txt": both}, "human", start=t1)
    tree = git(repo, "rev-parse", f"{resolved}^{{tree}}")
    fix = git(repo, "commit-tree", tree, "-p", t1, "-p", a2, "-m", "resolve a2", env=TESTER)
    git(repo, "update-ref", MERGED, fix, t1)
    res = merger.merge("orch/r1/a2", "a2 again", ORCH)
    assert res.ok and res.already_merged and res.sha == fix


MERGE_CHILD = textwrap.dedent(
    """
    import sys, time, pathlib
    sys.path.insert(0, sys.argv[1])
    from gitwork.runner import identity_env
    from gitwork.merging import Merger
    repo, ref, go, *branches = sys.argv[2:]
    m = Merger(repo, ref)
    m.head()
    print("ready", flush=True)
    while not pathlib.Path(go).exists():
        time.sleep(0.005)
    for b in branches:
        r = m.merge(b, "merge " + b, identity_env("orchestrator"))
        assert r.ok and not r.already_merged, r
    """
)


def test_concurrent_processes_merging_into_one_ref_lose_nothing(repo, tmp_path):
    for i in range(8):
        commit_on_branch(repo, f"orch/r1/p{i}", {f"p{i}.txt": f"{i}\n"}, f"p{i}")
    Merger(repo, MERGED).create("main")
    go = tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", MERGE_CHILD, str(ROOT), str(repo), MERGED, str(go),
                          f"orch/r1/p{2 * k}", f"orch/r1/p{2 * k + 1}"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k in range(4)
    ]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    go.write_text("go")
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    for i in range(8):
        assert show(repo, MERGED, f"p{i}.txt") == str(i)
    assert git(repo, "rev-list", "--count", "--first-parent", f"main..{MERGED}") == "8"


def test_bad_merge_input_names_what_is_wrong(repo):
    merger = Merger(repo, MERGED)
    with pytest.raises(GitError, match="does not exist.*create it first"):
        merger.merge("main", "m", ORCH)
    merger.create("main")
    assert merger.create("main") == git(repo, "rev-parse", "main")  # idempotent on resume
    other = commit_on_branch(repo, "orch/r1/x", {"x.txt": "x\n"}, "x")
    with pytest.raises(GitError, match="already exists"):
        merger.create(other)
    with pytest.raises(GitError) as exc:
        merger.merge("orch/r1/nope", "m", ORCH)
    assert "'orch/r1/nope'" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(GitError, match="invalid merged ref"):
        Merger(repo, "refs/heads/bad..ref")


def agent_commit(wt: Path, name: str, text: str, who: str) -> str:
    (wt / name).parent.mkdir(parents=True, exist_ok=True)
    (wt / name).write_text(text)
    git(wt, "add", name)
    git(wt, "commit", "-q", "-m", f"{who} edits {name}", env=identity_env(who))
    return git(wt, "rev-parse", "HEAD")


def test_chain_of_three_agents_each_building_on_the_previous(repo, tmp_path):
    before = main_state(repo)
    wts = Worktrees(repo, tmp_path / "wts")
    merger = Merger(repo, MERGED)
    merger.create("main")
    w = {a: wts.add(a, f"orch/r1/{a}", "main") for a in ("a1", "a2", "a3")}

    agent_commit(w["a1"], "chain.txt", "step 1 by a1\n", "a1")
    assert merger.merge("orch/r1/a1", "task t1", ORCH).ok

    # a2 did unrelated work first, so catching up is a real merge (not a fast-forward)
    own = agent_commit(w["a2"], "a2-notes.txt", "notes\n", "a2")
    up = catch_up(w["a2"], MERGED, identity_env("a2"))
    assert up.ok and not up.already_merged
    assert git(w["a2"], "rev-parse", "HEAD^1") == own and git(w["a2"], "rev-parse", "HEAD^2") == up.source
    assert git(w["a2"], "log", "-1", "--format=%an") == "a2"
    assert git(w["a2"], "symbolic-ref", "HEAD") == "refs/heads/orch/r1/a2"
    assert git(w["a2"], "status", "--porcelain") == ""
    agent_commit(w["a2"], "chain.txt", (w["a2"] / "chain.txt").read_text() + "step 2 by a2\n", "a2")
    assert merger.merge("orch/r1/a2", "task t2", ORCH).ok

    # a3 has no commit of its own: catching up fast-forwards it
    up = catch_up(w["a3"], MERGED, identity_env("a3"))
    assert up.ok and up.sha == git(repo, "rev-parse", MERGED) == git(w["a3"], "rev-parse", "HEAD")
    agent_commit(w["a3"], "chain.txt", (w["a3"] / "chain.txt").read_text() + "step 3 by a3\n", "a3")
    assert merger.merge("orch/r1/a3", "task t3", ORCH).ok

    assert show(repo, MERGED, "chain.txt") == "step 1 by a1\nstep 2 by a2\nstep 3 by a3"
    assert show(repo, MERGED, "a2-notes.txt") == "notes"
    assert catch_up(w["a3"], MERGED, identity_env("a3")).already_merged is False  # a3 is behind by the merge commit
    assert catch_up(w["a3"], MERGED, identity_env("a3")).already_merged is True
    assert main_state(repo) == before


def a2_behind_a1_merged(repo: Path, tmp_path: Path) -> Path:
    """Agents a1 and a2 from main; a1's change to shared.txt merged: a2's worktree is behind."""
    wts = Worktrees(repo, tmp_path / "wts")
    merger = Merger(repo, MERGED)
    merger.create("main")
    w1, w2 = wts.add("a1", "orch/r1/a1", "main"), wts.add("a2", "orch/r1/a2", "main")
    agent_commit(w1, "shared.txt", "a1 version\n", "a1")
    merger.merge("orch/r1/a1", "t1", ORCH)
    return w2


def test_catch_up_conflict_leaves_the_worktree_as_it_was(repo, tmp_path):
    w2 = a2_behind_a1_merged(repo, tmp_path)
    mine = agent_commit(w2, "shared.txt", "a2 version\n", "a2")
    res = catch_up(w2, MERGED, identity_env("a2"))
    assert not res.ok and res.conflicts == ["shared.txt"] and res.sha == mine
    assert git(w2, "rev-parse", "HEAD") == mine
    assert git(w2, "status", "--porcelain", "--untracked-files=all") == ""
    assert (w2 / "shared.txt").read_text() == "a2 version\n"
    assert not (Path(git(w2, "rev-parse", "--absolute-git-dir")) / "MERGE_HEAD").exists()


def test_catch_up_never_overwrites_uncommitted_changes(repo, tmp_path):
    w2 = a2_behind_a1_merged(repo, tmp_path)
    (w2 / "shared.txt").write_text("unsaved edit\n")
    head = git(w2, "rev-parse", "HEAD")
    with pytest.raises(GitError) as exc:
        catch_up(w2, MERGED, identity_env("a2"))
    assert "catching up worktree" in str(exc.value) and "\n" not in str(exc.value)
    assert (w2 / "shared.txt").read_text() == "unsaved edit\n"
    assert git(w2, "rev-parse", "HEAD") == head


def test_mergers_taking_turns_hand_the_tip_on_so_each_merge_is_three_git_commands(repo, monkeypatch):
    """Two mergers (two runners' processes) merging in turn: each finds the tip the other wrote in
    the lock file, so no merge starts on a stale tip (merge-tree + commit-tree + a failed update-ref)."""
    import gitwork.merging as merging

    a, b = Merger(repo, MERGED), Merger(repo, MERGED)
    a.create(git(repo, "rev-parse", "main"))
    calls: list[str] = []
    real = merging.git
    monkeypatch.setattr(merging, "git", lambda cwd, *args, **kw: (calls.append(args[0]), real(cwd, *args, **kw))[1])
    real_out = merging.git_out
    monkeypatch.setattr(merging, "git_out", lambda cwd, *args, **kw: (calls.append(args[0]), real_out(cwd, *args, **kw))[1])
    for i in range(6):
        sha = commit_on_branch(repo, f"w{i}", {f"f{i}.txt": f"{i}\n"}, f"w{i}")
        calls.clear()
        assert (a if i % 2 == 0 else b).merge(sha, f"merge {i}", ORCH).ok
        if i > 0:  # the first merge of all reads the tip nobody left yet
            assert calls == ["merge-tree", "commit-tree", "update-ref"], (i, calls)
    assert [show(repo, MERGED, f"f{i}.txt") for i in range(6)] == [f"{i}" for i in range(6)]


def test_a_conflict_on_a_name_that_is_not_utf8_is_named_as_git_prints_it(repo):
    """The conflict's path is data (history, reports): text, C-quoted, never undecodable bytes."""
    latin = os.fsdecode(b"caf\xe9.txt")
    commit_on_branch(repo, "orch/r1/a1", {latin: "a1\n"}, "a1")
    commit_on_branch(repo, "orch/r1/a2", {latin: "a2\n"}, "a2")
    merger = Merger(repo, MERGED)
    merger.create("main")
    assert merger.merge("orch/r1/a1", "merge a1", ORCH).ok
    assert merger.merge("orch/r1/a2", "merge a2", ORCH).conflicts == ['"caf\\351.txt"']
