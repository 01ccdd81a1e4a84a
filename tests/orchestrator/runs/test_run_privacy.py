"""What a run keeps to its owner: every file of a run directory is 0600 and every directory 0700,
whatever the umask (the store, events, logs, exports hold prompts, outputs and history), and a
``script`` task's commands see no credential of the environment unless the experiment lists it.
Real runs through ``orchestrator.runs.launch`` (what `orch run` calls), real runners, real git."""

from __future__ import annotations

import gzip
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from coordstore.errors import AgentError
from gitfixtures import make_repo
from orchestrator.runs.launch import RunRequest, plan_runs, run_one

SECRET = "sk-ant-THIS-MUST-NOT-LEAK-4f1c"

pytestmark = pytest.mark.usefixtures("no_git_identity")


@pytest.fixture
def loose_umask():
    """The umask most machines have (022): orch must not depend on a stricter one."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def experiment(tmp_path: Path, tasks: list[dict], kind_options: dict | None = None, agents: int = 2) -> Path:
    tpl = tmp_path / "graph.json"
    tpl.write_text(json.dumps({"format": "orch-graph", "version": 1, "tasks": tasks, "dependencies": []}))
    exp = {"experiment": {"id": "priv"}, "template": str(tpl),
           "execution": {"runs": 1, "seed": 1, "time_scale": 0.01, "timeout_s": 90},
           "variants": [{"name": "v", "policy": "pull", "agents": agents, "kind": "script",
                         "kind_options": kind_options or {}}]}
    f = tmp_path / "exp.yaml"
    f.write_text(yaml.safe_dump(exp))
    return f


def run(tmp_path: Path, exp: Path, store: str = "sqlite"):
    repo = make_repo(tmp_path / "repo", {"README": "x\n"})
    [plan] = plan_runs(RunRequest(variant="v", experiment=exp, repo=repo, store=store, results=tmp_path / "results"))
    return run_one(*plan), repo


def in_git_checkout(rel: Path) -> bool:
    """A worktree (not the worktrees/ directory holding them): a git checkout for the user, with
    git's modes; the 0700 directories above it keep it the owner's."""
    return len(rel.parts) >= 2 and rel.parts[0] == "worktrees"


def script_task(tid: str, *commands: str, **meta) -> dict:
    return {"id": tid, "title": f"do {tid}", "time_estimate_ms": 1000, "meta": {"shell": True, "commands": list(commands), **meta}}


@pytest.mark.parametrize("store", ["sqlite", "file"])
def test_every_file_of_a_finished_run_is_the_owners_alone(tmp_path, loose_umask, store):
    exp = experiment(tmp_path, [script_task(f"t{i}", f"echo {i} > f{i}.txt") for i in range(3)])
    out, _ = run(tmp_path, exp, store)
    assert out.status == "finished"
    root = out.run_dir
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    seen, loose = set(), []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in dirnames + filenames:
            p = here / name
            rel = p.relative_to(root)
            if in_git_checkout(rel) or p.is_symlink():
                continue
            want = 0o700 if p.is_dir() else 0o600
            if stat.S_IMODE(p.lstat().st_mode) != want:
                loose.append(f"{rel} {oct(stat.S_IMODE(p.lstat().st_mode))}")
            seen.add(rel.parts[0])
    assert not loose, loose
    # the walk saw every kind of file a run writes
    assert {"run.json", "experiment.yaml", "events", "logs", "agents", "worktrees", "orchestrator.json",
            "snapshot.json.gz", "transitions.jsonl", "metrics.json", "summary.md"} <= seen, seen
    assert ("orch.db" if store == "sqlite" else "store") in seen


def test_model_server_records_are_private(serve, tmp_path, loose_umask):
    from modelserver_helpers import BASH, TWO_TURNS, after_tools, anth

    rec = tmp_path / "model-requests.jsonl"
    srv = serve(TWO_TURNS, record=rec)
    anth(srv).messages.create(model="m", max_tokens=10, messages=after_tools(0), tools=BASH)
    assert rec.read_text() and stat.S_IMODE(rec.stat().st_mode) == 0o600


def everything_in(root: Path, repo: Path) -> bytes:
    """Every byte a run left: its files (snapshots decompressed) and the history of every branch."""
    blobs = []
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            data = p.read_bytes()
            blobs.append(gzip.decompress(data) if p.suffix == ".gz" else data)
    blobs.append(subprocess.run(["git", "log", "--all", "-p", "--format=%B"], cwd=repo, capture_output=True, check=True).stdout)
    return b"\n".join(blobs)


def test_a_script_task_sees_no_credential_of_the_environment(tmp_path, monkeypatch):
    """The issue's reproduction: ``echo $ANTHROPIC_API_KEY`` in a template landed in events,
    orch.db and the snapshot. Its output, a dump of the environment, a failure reason, a verify
    command and a committed file all stay free of it; PATH and HOME still reach the commands."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    monkeypatch.setenv("GITHUB_TOKEN", SECRET + "-gh")
    monkeypatch.setenv("MY_DB_PASSWORD", SECRET + "-db")
    tasks = [script_task("echo", 'echo "key=$ANTHROPIC_API_KEY token=$GITHUB_TOKEN home=$HOME"', "env"),
             script_task("commit", "env > env.txt", 'test -n "$PATH" && test -n "$HOME" && echo ok > seen.txt'),
             script_task("verify", "true", verify='echo "v=$MY_DB_PASSWORD"; env'),
             script_task("fails", 'echo "key=$ANTHROPIC_API_KEY"; env; exit 3')]
    out, repo = run(tmp_path, experiment(tmp_path, tasks, agents=1))
    assert out.status == "failed"  # "fails" fails on purpose: its failure reason is checked too
    everything = everything_in(out.run_dir, repo)
    assert b"exit 3" in everything or b"exited 3" in everything or b"status 3" in everything
    assert SECRET.encode() not in everything
    assert b"home=" + os.environ["HOME"].encode() in everything  # the commands did run, with HOME
    assert subprocess.run(["git", "show", f"{out.spec.merged_branch}:seen.txt"], cwd=repo, capture_output=True,
                          text=True).stdout == "ok\n"


def test_pass_env_lets_listed_variables_through(tmp_path, monkeypatch):
    """A variant's ``kind_options.pass_env`` (every task) and a task's ``meta.pass_env`` (that
    task) name what a command may see beyond the base set; ``*`` ends a prefix."""
    monkeypatch.setenv("TOOL_TOKEN", "tool-value")
    monkeypatch.setenv("NPM_CONFIG_A", "npm-a")
    monkeypatch.setenv("ONLY_FOR_T2", "t2-value")
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    cmd = 'echo "$TOOL_TOKEN,$NPM_CONFIG_A,$ONLY_FOR_T2,$ANTHROPIC_API_KEY" > {}.txt'
    tasks = [script_task("t1", cmd.format("t1")), script_task("t2", cmd.format("t2"), pass_env=["ONLY_FOR_T2"])]
    out, repo = run(tmp_path, experiment(tmp_path, tasks, {"pass_env": ["TOOL_TOKEN", "NPM_CONFIG_*"]}, agents=1))
    assert out.status == "finished"

    def shown(name: str) -> str:
        return subprocess.run(["git", "show", f"{out.spec.merged_branch}:{name}"], cwd=repo, capture_output=True, text=True).stdout

    assert shown("t1.txt") == "tool-value,npm-a,,\n"
    assert shown("t2.txt") == "tool-value,npm-a,t2-value,\n"


@pytest.mark.parametrize("value", ["ANTHROPIC_API_KEY", ["BAD NAME"], [3]])
def test_a_bad_pass_env_fails_before_the_run(tmp_path, value):
    exp = experiment(tmp_path, [script_task("t1", "true")], {"pass_env": value})
    with pytest.raises(AgentError, match="pass_env"):
        plan_runs(RunRequest(variant="v", experiment=exp, repo=make_repo(tmp_path / "repo", {"README": "x\n"}),
                             results=tmp_path / "results"))
    assert not (tmp_path / "results").exists()
