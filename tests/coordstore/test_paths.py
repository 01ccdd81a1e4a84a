"""The one path-confinement helper: text checks, and real symbolic links on disk; file names that
are not UTF-8 as text and back."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, strategies as st

from coordstore.errors import InputError
from coordstore.paths import PathEscape, check_relative, confine, os_path, path_component, path_problem, text_path


@pytest.mark.parametrize("rel,problem", [
    ("", "is empty"),
    ("/etc/passwd", "is absolute"),
    ("../x", "leads out through '..'"),
    ("a/../../x", "leads out through '..'"),
    (".git/config", "is inside .git"),
    ("src/.GIT/hooks/pre-commit", "is inside .git"),
    ("a\0b", "contains a NUL byte"),
])
def test_path_problem_names_each_way_out(rel, problem):
    assert path_problem(rel) == problem
    with pytest.raises(PathEscape) as e:
        check_relative(rel, "task 'a': file_scope entry")
    assert str(e.value).startswith(f"task 'a': file_scope entry {rel!r} {problem}") and e.value.problem == problem
    assert isinstance(e.value, InputError)


@pytest.mark.parametrize("rel", ["src/a.py", "a/../b.py", "./x", "src/", "lib/*.py", ".gitignore", "docs/.github/x"])
def test_paths_inside_pass(rel):
    assert path_problem(rel) is None


def test_confine_resolves_inside_and_refuses_symlinks_out(tmp_path):
    root, outside = tmp_path / "wt", tmp_path / "outside"
    (root / "src").mkdir(parents=True)
    outside.mkdir()
    (root / ".git").mkdir()
    (root / "src" / "a.py").write_text("a\n")
    os.symlink(outside / "canary.txt", root / "out-file")
    os.symlink(outside, root / "out-dir")
    os.symlink("src/a.py", root / "in-link")
    os.symlink(".git", root / "git-link")
    assert confine(root, "src/a.py") == (root / "src" / "a.py").resolve()
    assert confine(root, "in-link") == (root / "src" / "a.py").resolve()  # a link inside is followed
    assert confine(root, "a/../new.txt") == root.resolve() / "new.txt"
    for rel in ("out-file", "out-dir/x"):
        with pytest.raises(PathEscape, match=rf"path '{rel}' leads out through a symbolic link"):
            confine(root, rel)
    with pytest.raises(PathEscape, match="leads into .git through a symbolic link"):
        confine(root, "git-link/config")
    # without follow the link itself is the path (git writes the link, never through it) ...
    assert confine(root, "out-file", follow=False) == root.resolve() / "out-file"
    # ... but its directories must still stay inside
    with pytest.raises(PathEscape, match="symbolic link"):
        confine(root, "out-dir/x", follow=False)
    with pytest.raises(PathEscape, match="is absolute"):
        confine(root, str(outside / "canary.txt"))


@pytest.mark.parametrize("name,problem", [("../x", "contains a path separator"), ("a/b", "contains a path separator"),
                                          ("..", "is a relative directory name"), ("", "is empty")])
def test_path_component_refuses_what_would_make_or_leave_directories(name, problem):
    with pytest.raises(PathEscape, match=f"variant name {name!r} {problem}"):
        path_component(name, "variant name")
    assert path_component("pull-4", "variant name") == "pull-4"


@given(st.binary(min_size=1, max_size=40).filter(lambda b: b"\0" not in b))
def test_text_path_is_text_and_os_path_gives_the_bytes_back(raw):
    """Any file name git can hold becomes text a store or a UTF-8 file holds, and back."""
    text = text_path(raw)
    text.encode("utf-8")  # no surrogates: strict UTF-8 takes it
    assert os.fsencode(os_path(text)) == raw
    assert text_path(os.fsdecode(raw)) == text  # as git's output decoded with surrogateescape


def test_text_path_quotes_only_what_is_not_utf8_as_git_does():
    assert text_path("café/a b.txt".encode()) == "café/a b.txt"
    assert text_path(b"caf\xe9.txt") == '"caf\\351.txt"'  # `git ls-files` prints it so
    assert text_path(b'"q".txt') == '"\\"q\\".txt"'  # a leading quote is quoted: never ambiguous
    assert os_path("plain.txt") == "plain.txt"
