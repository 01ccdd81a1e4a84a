"""What the real-CLI tests share: the CLI must be installed (they fail, never skip, naming the
install command), a repository of module files with one orch-slot line each, tasks that change
them, an experiment served by orch's own scripted model server, and the check that a run finished
with every task completed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from coordstore import open_store

INSTALL = {"claude": "npm install -g @anthropic-ai/claude-code", "codex": "npm install -g @openai/codex",
           "opencode": "npm install -g opencode-ai", "gemini": "npm install -g @google/gemini-cli",
           "aider": "pip install aider-chat"}
SUPERVISION = {"stall_after_ms": 8000, "busy_grace_ms": 0, "kill_grace_s": 1.0, "respawn_backoff_ms": 200,
               "respawn_backoff_max_ms": 1000, "max_retries": 3}
T0 = 1_700_000_000


def need(cli: str) -> str:
    path = shutil.which(cli)
    if path is None:
        pytest.fail(f"the real {cli!r} CLI is not installed (these tests run it for real): {INSTALL[cli]}")
    return path


def git(repo: Path, *args: str, n: int = 0) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Hist Orian", "GIT_AUTHOR_EMAIL": "h@example.org", "GIT_COMMITTER_NAME": "Hist Orian",
           "GIT_COMMITTER_EMAIL": "h@example.org", "GIT_AUTHOR_DATE": f"{T0 + 60 * n} +0000", "GIT_COMMITTER_DATE": f"{T0 + 60 * n} +0000"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout.strip()


def finished(out):
    """(the run's store dump, its events) once the run is known to have finished with every task
    completed; otherwise the assertion names the tasks that did not."""
    with open_store(out.spec.store_url) as s:
        dump = s.dump_run(out.spec.run_id)
        events = s.read_events(out.spec.run_id)
    unfinished = [(t.id, t.status, t.reason) for t in dump.tasks if t.status != "completed"]
    assert out.status == "finished" and not unfinished, (out.status, unfinished)
    return dump, events


def write_graph(tmp_path: Path, tasks: list[dict]) -> Path:
    tpl = tmp_path / "graph.json"
    tpl.write_text(json.dumps({"format": "orch-graph", "version": 1, "tasks": tasks, "dependencies": []}))
    return tpl


def slot_repo(tmp_path: Path, n: int) -> Path:
    """A repository with module files m0..m{n-1}, each holding its task's orch-slot line."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for i in range(n):
        (repo / f"m{i}.py").write_text(f"# module {i}\n# orch-slot: t{i}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    return repo


def module_tasks(n: int) -> list[dict]:
    return [{"id": f"t{i}", "title": f"change module {i}", "file_scope": [f"m{i}.py"], "time_estimate_ms": 60_000} for i in range(n)]


def served_experiment(tmp_path: Path, tpl: Path, variant: dict, **supervision) -> Path:
    """An experiment whose one variant runs with orch's own model server (``model_server`` key)."""
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({
        "experiment": {"id": "served"}, "template": str(tpl),
        "execution": {"runs": 1, "seed": 5, "time_scale": 0.001, "timeout_s": 300, "supervision": {**SUPERVISION, **supervision}},
        "variants": [{"policy": "pull", "model_server": "sim", **variant}]}))
    return exp
