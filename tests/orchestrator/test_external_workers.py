"""External workers for real: a coordinator (`orch run --workers external`) and three `orch worker`
processes, each in its own directory and given only the store URL, one SIGKILLed (its process
group) mid-run; the run finishes, every task completed exactly once, the killed worker's pushed
commits are kept, and the merged tree equals a one-machine run's with the same seed.

Plain processes on this machine sharing a sqlite store (ORCH_SAME_MACHINE=1), the bare remote a
local path: no network namespaces. Sim content carries a stamp of its attempt (``[sim <digest>]``);
the task the kill requeued runs again as attempt 2, so trees are compared with stamps masked.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coordstore import open_store

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = """\
experiment: {id: ext, name: external workers}
template: browser-parallel
execution: {runs: 1, seed: 7, time_scale: 0.0004, timeout_s: 150, store: sqlite, merge_mode: immediate,
            supervision: {lease_ms: 3000}}
variants:
  - {name: pull-4, policy: pull, agents: 4, policy_options: {order: critical-path}}
"""


def _env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "ORCH_SAME_MACHINE": "1", **extra}


def _orch(*args) -> list[str]:
    return [sys.executable, "-m", "orchestrator", *args]


def _wait(what, cond, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _git(repo, *args) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def _tree(repo: Path, ref: str) -> dict[str, str]:
    """path -> content of ``ref``'s tree, each sim stamp masked."""
    out = {}
    for path in _git(repo, "ls-tree", "-r", "--name-only", ref).splitlines():
        out[path] = re.sub(r"\[sim [0-9a-f]+\]", "[sim *]", _git(repo, "show", f"{ref}:{path}"))
    return out


def _held(url: str, run_id: str, pid: int) -> list[str]:
    with open_store(url, readonly=True) as s:
        return [a.id for a in s.list_agents(run_id) if a.meta.get("pid") == pid and a.status not in ("stopped", "dead", "killed")]


def test_three_workers_one_killed_same_tree_as_one_machine(tmp_path):
    exp = tmp_path / "ext.yaml"
    exp.write_text(EXPERIMENT)
    db = tmp_path / "shared" / "orch.db"
    db.parent.mkdir()
    url = f"sqlite://{db}"
    remote = tmp_path / "shared" / "remote.git"  # created by the coordinator
    coord = subprocess.Popen(_orch("run", "-e", str(exp), "-v", "pull-4", "--store", url, "--workers", "external",
                                   "--remote", str(remote), "--results", str(tmp_path / "coord"), "--json"),
                             env=_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers = {}

    def start_worker(name):
        d = tmp_path / name
        d.mkdir()
        workers[name] = subprocess.Popen(_orch("worker", "--store", url, "--slots", "2", "--dir", str(d), "--once"),
                                         env=_env(), cwd=d, stdout=subprocess.DEVNULL, stderr=open(d / "worker.log", "w"),
                                         start_new_session=True)  # its own process group, killed whole below
    try:
        def run_id():
            if not db.exists():
                return None
            with open_store(url, readonly=True) as s:
                return next((r.id for r in s.list_runs()), None)

        rid = _wait("the run", run_id)
        start_worker("a")
        _wait("worker a's agents", lambda: len(_held(url, rid, workers["a"].pid)) == 2)
        start_worker("b")
        _wait("worker b's agents", lambda: len(_held(url, rid, workers["b"].pid)) == 2)
        start_worker("c")  # nothing to take until b dies

        def b_done_one():
            with open_store(url, readonly=True) as s:
                mine = {a.id for a in s.list_agents(rid) if a.meta.get("pid") == workers["b"].pid}
                done = [t for t in s.list_tasks(rid) if t.status == "completed" and t.completed_by in mine]
                working = [t for t in s.list_tasks(rid, status=["working"]) if t.owner in mine]
                return done and working
        _wait("worker b to complete a task and work on another", b_done_one)
        os.killpg(workers["b"].pid, signal.SIGKILL)
        workers["b"].wait()
        out, err = coord.communicate(timeout=150)
        assert coord.returncode == 0, err
    finally:
        for p in [coord, *workers.values()]:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL) if p is not coord else p.kill()
    result = json.loads(out)["runs"][0]
    assert result["status"] == "finished"
    for name in ("a", "c"):
        assert workers[name].wait(timeout=30) == 0

    with open_store(url, readonly=True) as s:
        tasks = s.list_tasks(rid)
        rows = s.history(rid, entity="task")
        agent_rows = s.history(rid, entity="agent")
    completed = [r for r in rows if r.to_state == "completed" and not r.is_note]
    assert sorted(r.entity_id for r in completed) == sorted(t.id for t in tasks)  # each exactly once
    assert any(r.reason and r.reason.startswith("lease expired") for r in rows if r.to_state == "pending")
    taken_by_c = [r for r in agent_rows if r.data.get("action") == "slot-taken" and r.data.get("pid") == workers["c"].pid]
    assert taken_by_c and all(r.data["gen"] == 2 for r in taken_by_c)  # c ran the reopened slots

    repo, merged = Path(result["repo"]), result["merged_branch"]
    killed = {r.entity_id for r in agent_rows if r.data.get("action") == "slot-taken" and r.data.get("pid") == workers["b"].pid}
    b_commits = [r.data["commit"] for r in completed if r.agent in killed and r.ts_ms < max(
        x.ts_ms for x in agent_rows if x.data.get("action") == "slot-taken" and x.data.get("gen") == 2)]
    assert b_commits
    for sha in b_commits:  # kept on the remote and in the merged branch
        assert _git(remote, "for-each-ref", f"refs/orch/{rid}/c/{sha}").strip()
        _git(repo, "merge-base", "--is-ancestor", sha, merged)

    local = subprocess.run(_orch("run", "-e", str(exp), "-v", "pull-4", "--results", str(tmp_path / "local"), "--json"),
                           env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=150)
    assert local.returncode == 0, local.stderr
    one = json.loads(local.stdout)["runs"][0]
    assert one["seed"] == result["seed"]
    assert _tree(Path(one["repo"]), one["merged_branch"]) == _tree(repo, merged)


@pytest.mark.parametrize("args, env, says", [
    (["--workers", "external"], {}, "--workers external needs --remote URL"),
    (["--remote", "R"], {}, "--remote is for --workers external"),
    (["--workers", "external", "--remote", "R"], {"ORCH_SAME_MACHINE": ""}, "a sqlite:// store cannot be reached from another host"),
    (["--workers", "external", "--remote", "R", "--store", "sqlite"], {}, "would live in the run directory"),
    (["--workers", "external", "--remote", "/no/such/dir/r.git"], {}, "directory /no/such/dir does not exist"),
    (["--workers", "elsewhere"], {}, "--workers elsewhere: one of local, external"),
])
def test_bad_external_arguments_are_one_line_exit_2(tmp_path, args, env, says):
    exp = tmp_path / "ext.yaml"
    exp.write_text(EXPERIMENT)
    store = [] if "--store" in args else ["--store", f"sqlite://{tmp_path}/orch.db"]
    p = subprocess.run(_orch("run", "-e", str(exp), "-v", "pull-4", *store, "--results", str(tmp_path / "r"), *args),
                       env=_env(**env), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    assert says in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists() and not (tmp_path / "orch.db").exists()
