"""gitwork.repo against real git repositories under tmp_path, with no git identity configured."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from coordstore.errors import GitError, InputError, OrchError
from gitwork.repo import (
    check_repo,
    common_dir,
    dirty_paths,
    list_worktrees,
    resolve_commit,
)
from gitwork.runner import identity_env

TESTER = identity_env("tester")


pytestmark = pytest.mark.usefixtures("no_git_identity")


def git(cwd, *args, env=None, check=True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=check,
                          env={**os.environ, **(env or {})})


def make_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    (path / "README").write_text("hello\n")
    (path / ".gitignore").write_text("build/\n")
    (path / "src").mkdir()
    (path / "src" / "a.py").write_text("x = 1\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "init", env=TESTER)
    return path


def one_line(err: BaseException) -> str:
    text = str(err)
    assert text and "\n" not in text, f"error is not one line: {text!r}"
    return text


def test_check_repo_returns_top_level_from_a_subdirectory(tmp_path):
    repo = make_repo(tmp_path / "r")
    assert check_repo(repo / "src") == repo.resolve()
    assert check_repo(str(repo)) == repo.resolve()


def test_check_repo_ignored_files_do_not_count_as_dirty(tmp_path):
    repo = make_repo(tmp_path / "r")
    (repo / "build").mkdir()
    (repo / "build" / "out.o").write_text("binary")
    assert check_repo(repo) == repo.resolve()


@pytest.mark.parametrize(
    "setup, expect",
    [
        ("missing", "does not exist"),
        ("plain_dir", "not a git work tree"),
        ("bare", "not a git work tree"),
        ("no_commits", "has no commits"),
        ("modified", "uncommitted changes (README)"),
        ("staged", "uncommitted changes (new.txt)"),
        ("untracked", "uncommitted changes (notes.txt)"),
    ],
)
def test_check_repo_refuses_unusable_repositories(tmp_path, setup, expect):
    target = tmp_path / "r"
    if setup == "missing":
        pass
    elif setup == "plain_dir":
        target.mkdir()
    elif setup == "bare":
        git(tmp_path, "init", "-q", "--bare", str(target))
    elif setup == "no_commits":
        target.mkdir()
        git(target, "init", "-q")
    else:
        make_repo(target)
        if setup == "modified":
            (target / "README").write_text("changed\n")
        elif setup == "staged":
            (target / "new.txt").write_text("n\n")
            git(target, "add", "new.txt")
        else:
            (target / "notes.txt").write_text("n\n")
    with pytest.raises(GitError) as exc:
        check_repo(target)
    msg = one_line(exc.value)
    assert expect in msg
    assert str(target.name) in msg  # names the path


def test_check_repo_refuses_git_dir_in_environment(tmp_path, monkeypatch):
    repo = make_repo(tmp_path / "r")
    monkeypatch.setenv("GIT_DIR", str(repo / ".git"))
    with pytest.raises(GitError, match="GIT_DIR"):
        check_repo(repo)


def test_dirty_paths_lists_renames_once(tmp_path):
    repo = make_repo(tmp_path / "r")
    git(repo, "mv", "README", "README.md")
    (repo / "src" / "a.py").write_text("x = 2\n")
    assert sorted(dirty_paths(repo)) == ["README.md", "src/a.py"]


def test_resolve_commit_branches_tags_and_short_shas(tmp_path):
    repo = make_repo(tmp_path / "r")
    head = git(repo, "rev-parse", "HEAD").stdout.strip()
    git(repo, "tag", "-a", "v1", "-m", "annotated", env=TESTER)
    assert resolve_commit(repo, "main") == head
    assert resolve_commit(repo, "v1") == head  # the commit, not the tag object
    assert resolve_commit(repo, head[:8]) == head
    assert resolve_commit(repo, "refs/heads/main") == head


@pytest.mark.parametrize("ref", ["nope", "main~5", "-x", "HEAD^{tree}x"])
def test_resolve_commit_unknown_ref_names_it(tmp_path, ref):
    repo = make_repo(tmp_path / "r")
    with pytest.raises(GitError) as exc:
        resolve_commit(repo, ref)
    assert repr(ref) in one_line(exc.value)


def test_identity_env_makes_commits_possible_without_any_configured_user(tmp_path):
    repo = make_repo(tmp_path / "r")
    (repo / "f").write_text("f\n")
    git(repo, "add", "f")
    # the fixture really leaves git without an identity ...
    bare = git(repo, "commit", "-q", "-m", "no identity", check=False)
    assert bare.returncode != 0
    # ... and the agent's identity is enough on its own
    env = identity_env("agent 7/α", email_domain="example.test")
    git(repo, "commit", "-q", "-m", "by agent", env=env)
    log = git(repo, "log", "-1", "--format=%an|%ae|%cn|%ce").stdout.strip()
    assert log == "agent 7/α|agent-7@example.test|agent 7/α|agent-7@example.test"


def test_identity_env_default_domain_and_empty_id():
    env = identity_env("a1")
    assert env == {
        "GIT_AUTHOR_NAME": "a1", "GIT_AUTHOR_EMAIL": "a1@agents.orch",
        "GIT_COMMITTER_NAME": "a1", "GIT_COMMITTER_EMAIL": "a1@agents.orch",
    }
    with pytest.raises(InputError):
        identity_env("  ")
    assert issubclass(GitError, OrchError)


def test_common_dir_and_worktree_list_from_a_linked_worktree(tmp_path):
    repo = make_repo(tmp_path / "r")
    wt = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "--detach", str(wt), "HEAD")
    assert common_dir(wt) == (repo / ".git").resolve()
    entries = list_worktrees(repo)
    assert [e.path.resolve() for e in entries] == [repo.resolve(), wt.resolve()]
    assert entries[0].branch == "refs/heads/main" and entries[1].branch is None
    assert entries[1].head == git(repo, "rev-parse", "HEAD").stdout.strip()
