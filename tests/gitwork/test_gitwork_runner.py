"""gitwork.runner, the one way orch runs git: one GitError (command, exit code, git's line) for a
failed command, one environment, one ``is_ancestor``; and no module outside it runs git itself
(a source scan, like test_architecture's layers). Real repositories under tmp_path."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coordstore.errors import GitError, OrchError, ReplayError
from gitfixtures import git as fixture_git
from gitfixtures import make_repo
from gitwork.runner import git, git_out, is_ancestor
from fixtures_path import REPO_ROOT

ROOT = REPO_ROOT
PACKAGES = ("coordstore", "gitwork", "agents", "orchestrator")
RUNNER = Path("gitwork") / "runner.py"


def test_a_failing_command_raises_one_git_error_with_the_command_its_exit_code_and_gits_line(tmp_path):
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    real = os.path.realpath(repo)
    with pytest.raises(GitError) as got:
        git(repo, "rev-parse", "--verify", "no-such-ref")
    e = got.value
    assert e.command == ("git", "-C", real, "rev-parse", "--verify", "no-such-ref")
    assert e.code == 128 and e.last_line == "Needed a single revision"
    assert str(e) == f"git rev-parse --verify failed (exit 128) in {real}: Needed a single revision"
    assert isinstance(e, OrchError)


def test_the_line_is_the_one_git_failed_with_not_a_usage_hint(tmp_path):
    """``rev-parse nope`` ends with two lines of advice; the fatal line is the one that says why."""
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    with pytest.raises(GitError) as got:
        git(repo, "rev-parse", "nope", what="resolving nope")
    assert got.value.last_line.startswith("ambiguous argument 'nope': unknown revision")
    assert str(got.value).startswith(f"resolving nope failed (exit 128) in {os.path.realpath(repo)}: ambiguous")
    # no fatal:/error: prefix at all (merge-tree's own message): its last line
    with pytest.raises(GitError) as got:
        git(repo, "merge-tree", "--write-tree", "nope", "HEAD")
    assert got.value.code == 1 and got.value.last_line == "merge-tree: nope - not something we can merge"


def test_ok_statuses_any_status_and_a_missing_directory(tmp_path):
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    assert git(repo, "diff", "--quiet", "HEAD", ok=(0, 1)).returncode == 0
    (repo / "a.txt").write_text("b\n")
    assert git(repo, "diff", "--quiet", "HEAD", ok=(0, 1)).returncode == 1
    assert git(repo, "rev-parse", "--verify", "--quiet", "nope", ok=None).returncode == 1
    with pytest.raises(GitError, match="directory .*gone does not exist") as got:
        git(tmp_path / "gone", "status")
    assert got.value.code is None and got.value.command is None


def test_bytes_in_and_out_are_kept_byte_for_byte(tmp_path):
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    blob = b"\xff\xfenot utf-8\n\0and a NUL\n"
    sha = git(repo, "hash-object", "-w", "--stdin", input=blob, binary=True).stdout.decode().strip()
    assert git(repo, "cat-file", "blob", sha, binary=True).stdout == blob
    # text: UTF-8 with surrogateescape, so a path that is not UTF-8 still round-trips
    assert git_out(repo, "cat-file", "blob", sha).encode("utf-8", "surrogateescape") == blob.removesuffix(b"\n")


def test_the_environment_cannot_point_git_at_another_repository(tmp_path, monkeypatch):
    """orch names repositories by path: a GIT_DIR left in the environment (a hook, a shell) does not win."""
    here = make_repo(tmp_path / "here", {"a.txt": "a\n"})
    other = make_repo(tmp_path / "other", {"b.txt": "b\n"})
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    assert git_out(here, "ls-files") == "a.txt"


def test_is_ancestor(tmp_path):
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    base = fixture_git(repo, "rev-parse", "HEAD")
    (repo / "a.txt").write_text("b\n")
    fixture_git(repo, "commit", "-q", "-am", "second")
    tip = fixture_git(repo, "rev-parse", "HEAD")
    assert is_ancestor(repo, base, tip) and is_ancestor(repo, tip, tip) and not is_ancestor(repo, tip, base)
    with pytest.raises(GitError) as got:
        is_ancestor(repo, "f" * 40, tip)
    assert got.value.code == 128


def test_the_replay_errors_are_git_errors_of_the_one_tree(tmp_path):
    from agents.kinds import replay
    from orchestrator.modelserver.changes import replay_git

    assert replay.ReplayError is ReplayError and issubclass(ReplayError, GitError)
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    with pytest.raises(ReplayError) as got:
        replay_git(str(repo), "cat-file", "commit", "f" * 40)
    assert got.value.code == 128 and got.value.command[3:5] == ("cat-file", "commit")
    assert str(got.value).startswith("script replay: git cat-file commit failed (exit 128) in ")


# ------------------------------------------------------------------ nobody else runs git
def _modules():
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            yield p.relative_to(ROOT), ast.parse(p.read_text(), str(p))


def _git_argv(node: ast.AST) -> bool:
    """A list or tuple literal whose first item is "git": the argv of a git command."""
    return (isinstance(node, (ast.List, ast.Tuple)) and bool(node.elts) and isinstance(node.elts[0], ast.Constant)
            and node.elts[0].value == "git")


def test_no_module_but_the_runner_runs_git():
    found = []
    for rel, tree in _modules():
        if rel == RUNNER:
            continue
        for node in ast.walk(tree):
            if _git_argv(node):
                found.append(f"{rel}:{node.lineno}: a git argv")
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if "git" in names:
                    found.append(f"{rel}:{node.lineno}: imports GitPython (its commands bypass the runner)")
                if "subprocess" in names and rel.parts[0] == "gitwork":
                    found.append(f"{rel}:{node.lineno}: gitwork module with its own subprocess")
    assert found == []


def test_one_is_ancestor():
    found = []
    for rel, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and "is_ancestor" in node.name and rel != RUNNER:
                found.append(f"{rel}:{node.lineno}: def {node.name}")
            if isinstance(node, ast.Constant) and node.value == "--is-ancestor" and rel != RUNNER:
                found.append(f"{rel}:{node.lineno}: --is-ancestor")
    assert found == []


def test_the_scan_finds_a_git_argv():
    tree = ast.parse("import subprocess\nsubprocess.run(['git', '-C', d, 'status'])\n")
    assert [n.lineno for n in ast.walk(tree) if _git_argv(n)] == [2]


def test_an_agents_git_work_loads_no_gitpython(tmp_path):
    """The runner process imports gitwork at start-up and merges later: neither loads GitPython."""
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    code = ("import sys, agents.runner\n"
            "from gitwork import agentgit\n"
            "from gitwork.merging import Merger\n"
            f"repo = {str(repo)!r}\n"
            "Merger(repo, 'refs/heads/orch/r1/merged').create(agentgit.head(repo))\n"
            "print('git' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
