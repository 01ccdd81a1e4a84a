"""Real git repositories for tests: a committed repository built from a dict of files."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

GIT_ID = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}


def run_git(cwd: Path, *args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    """``git ARGS`` in ``cwd`` with no identity of its own (tests that check orch brings one);
    its stdout, stripped."""
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=check,
                          env={**os.environ, **(env or {})}).stdout.strip()


def git(cwd: Path, *args: str) -> str:
    """``git ARGS`` in ``cwd`` with a test identity; its stdout, stripped."""
    return run_git(cwd, *args, env=GIT_ID)


def write(root: Path, files: dict[str, str | bytes | None]) -> None:
    """Write text or bytes under ``root`` (parents created); None deletes the file."""
    for rel, content in files.items():
        p = root / rel
        if content is None:
            p.unlink()
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content) if isinstance(content, bytes) else p.write_text(content)


def make_repo(path: Path, files: dict[str, str | bytes]) -> Path:
    """A repository on branch ``main`` with ``files`` in one commit, "base"."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    write(path, files)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "base")
    return path
