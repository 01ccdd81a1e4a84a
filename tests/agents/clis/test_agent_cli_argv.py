"""How each real-CLI preset calls its CLI: argv snapshots per preset, settings that change them,
the model server's variables, and every flag orch passes checked against the INSTALLED CLI's own
``--help`` (a CLI that is not installed fails that test, it does not skip). The kind running the
CLIs: ``test_agent_cli_kinds.py``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from agents.clis import PRESETS, get_preset
from agents.clis.base import McpEndpoint
from fixtures_path import PROGS

from clikit import inv, isolated, make_repo  # noqa: F401 (isolated: an autouse fixture)

FAKECLI = PROGS / "fakecli"


# ---------------------------------------------------------------------------------------- argv
ARGV = {
    "claude": ["-p", "PROMPT", "--output-format", "stream-json", "--verbose", "--permission-mode", "acceptEdits",
               "--allowedTools", "Bash", "--bare", "--model", "m1"],
    "codex": ["exec", "--json", "--color", "never", "--sandbox", "workspace-write", "--skip-git-repo-check", "--cd", "wt",
              "--model", "m1", "PROMPT"],
    "gemini": ["--prompt", "PROMPT", "--output-format", "stream-json", "--approval-mode", "yolo", "--skip-trust", "--model", "m1"],
    "opencode": ["run", "--format", "json", "--dir", "wt", "--auto", "--model", "m1"],
    "aider": ["--message-file", "scratch/prompt.md", "--yes-always", "--no-pretty", "--no-stream", "--no-auto-commits",
              "--no-dirty-commits", "--no-gitignore", "--no-check-update", "--no-analytics", "--no-show-model-warnings",
              "--no-fancy-input", "--input-history-file", "scratch/input.history", "--chat-history-file",
              "scratch/chat.history.md", "--model", "m1", "--file", "src/a.py"],
}


@pytest.fixture
def wt_dir(tmp_path, monkeypatch):
    """Run in a directory holding ``wt/src``: the worktree ``inv`` names, with a directory in scope."""
    (tmp_path / "wt" / "src").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("wt_dir")
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_argv_snapshot(name):
    p = get_preset(name)
    assert p.build(inv(model="m1", settings=dict(p.settings))) == ARGV[name]
    # no model, extra args last (or just before codex's prompt)
    argv = p.build(inv(settings=dict(p.settings), extra_args=("--x", "1")))
    assert "m1" not in argv and "--model" not in argv
    if name == "codex":
        assert argv[-3:] == ["--x", "1", "PROMPT"]
    else:
        assert argv[-2:] == ["--x", "1"]


def test_preset_settings_change_the_argv():
    claude = get_preset("claude")
    argv = claude.build(inv(settings={"permission_mode": "bypassPermissions", "allowed_tools": ["Bash", "Edit"], "bare": False}))
    assert argv[argv.index("--permission-mode") + 1] == "bypassPermissions"
    assert argv[argv.index("--allowedTools") + 1] == "Bash,Edit" and "--bare" not in argv
    assert argv[:2] == ["-p", "PROMPT"]  # before the variadic --allowedTools, which would eat it
    assert "--auto" not in get_preset("opencode").build(inv(settings={"auto": False}))
    gem = get_preset("gemini").build(inv(settings={"approval_mode": "auto_edit", "skip_trust": False}))
    assert gem[gem.index("--approval-mode") + 1] == "auto_edit" and "--skip-trust" not in gem
    codex = get_preset("codex").build(inv(settings={"sandbox": "danger-full-access"}))
    assert codex[codex.index("--sandbox") + 1] == "danger-full-access"


def _flags(argv: list[str]) -> list[str]:
    return sorted({a for a in argv if a.startswith("-") and a not in ("--", "-")})


def test_aider_with_the_model_server(wt_dir, monkeypatch):
    """Served: aider is `openai/orch`, its base URL carries the worktree; a file in a directory
    that does not exist yet is not given to --file (aider would take that directory for its root)."""
    from agents.clis.base import MODEL_SERVER_ENV
    from agents.clis.serverurl import split_path

    aider = get_preset("aider")
    assert not any(k.startswith("OPENAI") for k in aider.env(inv()))
    monkeypatch.setenv(MODEL_SERVER_ENV, "http://127.0.0.1:9")
    argv = aider.build(inv(settings={"edit_format": "diff"}, file_scope=("src/a.py", "new/b.py")))
    assert argv[argv.index("--model") + 1] == "openai/orch" and argv[argv.index("--edit-format") + 1] == "diff"
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--file"] == ["src/a.py"]
    env = aider.env(inv())
    assert env["OPENAI_BASE_URL"] == env["OPENAI_API_BASE"] and env["OPENAI_BASE_URL"].startswith("http://127.0.0.1:9/ctx/")
    ctx, path = split_path(env["OPENAI_BASE_URL"][len("http://127.0.0.1:9"):] + "/chat/completions")
    assert ctx.worktree == "wt" and ctx.session == "default" and path == "/v1/chat/completions"


@pytest.mark.usefixtures("no_git_identity")
def test_aider_gets_a_git_identity_only_when_git_has_none(tmp_path, monkeypatch):
    """Without one, aider would write "Your Name" into the repository's shared config."""
    from agents.clis.aider import git_identity_env

    repo = make_repo(tmp_path / "r")
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")  # one the environment gives already is kept
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "core.autocrlf")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "false")
    env = git_identity_env(str(repo))
    assert env == {"GIT_CONFIG_COUNT": "3", "GIT_CONFIG_KEY_1": "user.name", "GIT_CONFIG_VALUE_1": "orch agent",
                   "GIT_CONFIG_KEY_2": "user.email", "GIT_CONFIG_VALUE_2": "agent@orch.invalid"}
    got = subprocess.run(["git", "config", "--get", "user.name"], cwd=repo, env={**os.environ, **env}, capture_output=True, text=True)
    assert got.stdout.strip() == "orch agent"
    subprocess.run(["git", "config", "user.name", "Real Person"], cwd=repo, check=True)
    subprocess.run(["git", "config", "user.email", "real@x"], cwd=repo, check=True)
    assert git_identity_env(str(repo)) == {}


def test_gemini_with_the_model_server(tmp_path, monkeypatch):
    from agents.clis.base import MODEL_SERVER_ENV

    gem = get_preset("gemini")
    assert gem.env(inv(scratch=str(tmp_path))) == {}
    monkeypatch.setenv(MODEL_SERVER_ENV, "http://127.0.0.1:9")
    env = gem.env(inv(scratch=str(tmp_path)))
    settings = json.loads((Path(env["GEMINI_CLI_HOME"]) / ".gemini" / "settings.json").read_text())
    assert settings["security"]["auth"]["selectedType"] == "gemini-api-key" and env["GEMINI_CLI_HOME"].startswith(str(tmp_path))
    argv = gem.build(inv(settings=dict(gem.settings)))
    assert argv[argv.index("--model") + 1] == "gemini-2.5-pro"


@pytest.mark.usefixtures("wt_dir")
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_flag_is_in_the_installed_clis_help(name, monkeypatch):
    """The argv orch builds -- plain, and with a model server, every setting given and orch's
    coordination server -- is checked against the real CLI's --help (FAILS when not installed: CI
    must install every CLI, see the preset's ``install``). The config keys those flags carry are
    checked by each CLI's own config reader: ``test_cli_mcp_config.py``."""
    from agents.clis.base import MODEL_SERVER_ENV

    p = get_preset(name)
    exe = shutil.which(p.binary)
    if exe is None or Path(exe).parent == FAKECLI:
        pytest.fail(f"the {name} CLI is not installed ({p.binary!r} not on PATH): install it with: {p.install}", pytrace=False)
    r = subprocess.run([exe, *p.help_argv], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    text = r.stdout + r.stderr
    assert r.returncode == 0, f"{name} {' '.join(p.help_argv)} exited {r.returncode}: {text[-500:]}"
    argv = p.build(inv(model="m1", settings=dict(p.settings)))
    monkeypatch.setenv(MODEL_SERVER_ENV, "http://127.0.0.1:9")
    given = {k: ("diff" if k == "edit_format" else v) for k, v in p.settings.items()}
    argv += p.build(inv(settings=given))
    if p.takes_mcp:
        argv += p.build(inv(settings=given, mcp=McpEndpoint("http://127.0.0.1:9/mcp", "orch.r.token")))
    missing = [f for f in _flags(argv) if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text)]
    assert not missing, f"{name} --help does not list {missing}"
