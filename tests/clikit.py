"""What the CLI-kind tests share: no credential of the machine in the environment (an autouse
fixture a test module imports), a small git repository, and a preset's ``Invocation``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from agents.clis.base import Invocation

KEYS = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "CODEX_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENROUTER_API_KEY",
        "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GENAI_USE_GCA", "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX",
        "CLAUDE_CODE_USE_FOUNDRY", "GOOGLE_GENERATIVE_AI_API_KEY", "GROQ_API_KEY", "XAI_API_KEY", "DEEPSEEK_API_KEY",
        "OPENCODE_API_KEY", "AIDER_OPENAI_API_KEY", "AIDER_ANTHROPIC_API_KEY", "CODEX_HOME", "XDG_DATA_HOME")


@pytest.fixture(autouse=True)
def isolated(no_git_identity, monkeypatch):
    """No credentials or login files of the machine, no git identity: each test sets what it needs."""
    for k in KEYS:
        monkeypatch.delenv(k, raising=False)


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout


def make_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "README").write_text("x\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "base")
    return path


def inv(**kw) -> Invocation:
    base = dict(prompt="PROMPT", prompt_file="scratch/prompt.md", worktree="wt", scratch="scratch",
                file_scope=("src/a.py", "docs/", "lib/*.py"), model=None, settings={}, extra_args=())
    return Invocation(**{**base, **kw})
