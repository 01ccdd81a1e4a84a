"""The orchestrator end to end: real git, real worktrees, real runner processes, a real store.

Each test writes a small graph and an experiment file, runs it through ``orchestrator.runs.launch``
(what `orch run` calls) against a repository built here, and checks the outcome from git and
from the recorded history.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from coordstore import open_store
from coordstore.errors import GitError, InputError
from gitfixtures import make_repo
from orchestrator.runs.launch import RunRequest, plan_runs, run_one
from orchestrator.views import overhead
from runfixtures import task, write_experiment
from fixtures_path import PROGS

@pytest.fixture(autouse=True)
def runner_kinds_on_path(no_git_identity, monkeypatch):
    """No git identity (conftest), and tests/progs importable by runners (faulty_kinds)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(PROGS), os.environ.get("PYTHONPATH", "")]))


def git(repo: Path, *args: str, env: dict | None = None) -> str:
    e = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x", **(env or {})}
    return subprocess.run(["git", *args], cwd=repo, env=e, check=True, capture_output=True, text=True).stdout


def run(tmp_path, exp: Path, repo: Path | None):
    [plan] = plan_runs(RunRequest(variant="v", experiment=exp, repo=repo, results=tmp_path / "results"))
    outcome = run_one(*plan)
    with open_store(outcome.spec.store_url) as s:
        dump = s.dump_run(outcome.spec.run_id)
    return outcome, dump


def transitions(dump, entity="task"):
    return [t for t in dump.history if t.entity == entity]


def test_four_agents_finish_a_graph_one_commit_per_task(tmp_path):
    repo = make_repo(tmp_path / "repo", {"README": "x\n"})
    tasks = [task(f"t{i}", [f"src/f{i}.txt"]) for i in range(8)]
    exp = write_experiment(tmp_path, tasks, [("t0", "t4", "blocks"), ("t1", "t5", "blocks")],
                           {"policy": "pull", "agents": 4, "kind": "faulty_kinds:Faulty"})
    out, dump = run(tmp_path, exp, repo)
    assert out.status == "finished"
    assert all(t.status == "completed" for t in dump.tasks)
    spec = out.spec
    merged = spec.merged_branch
    for t in dump.tasks:
        # each task is one commit on its agent's branch, and the merged branch holds them all
        # (the branch also holds others' work it caught up with: count the agent's own commits)
        lines = git(repo, "log", "--no-merges", "--format=%an|%s", f"{spec.base}..{spec.agent_branch(t.completed_by)}").splitlines()
        assert sum(1 for ln in lines if ln.startswith(f"{t.completed_by}|task {t.id}: ")) == 1, lines
        assert f"{t.id} by {t.completed_by}" in git(repo, "show", f"{merged}:src/f{t.id[1:]}.txt")
    # every task went pending -> assigned -> working -> completed, in that order
    for t in dump.tasks:
        path = [(r.from_state, r.to_state) for r in transitions(dump) if r.entity_id == t.id]
        assert path == [(None, "pending"), ("pending", "assigned"), ("assigned", "working"), ("working", "completed")]
    # the user's checkout was never touched
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
    assert git(repo, "status", "--porcelain") == ""
    assert [r.seq for r in dump.history] == list(range(1, len(dump.history) + 1))


def test_deferred_merge_mode_merges_every_branch_at_the_end(tmp_path):
    repo = make_repo(tmp_path / "repo", {"README": "x\n"})
    tasks = [task(f"d{i}", [f"d{i}.txt"]) for i in range(4)]
    exp = write_experiment(tmp_path, tasks, [("d0", "d1", "blocks")], {"policy": "pull", "agents": 2, "kind": "faulty_kinds:Faulty"},
                           merge_mode="deferred")
    out, dump = run(tmp_path, exp, repo)
    assert out.status == "finished"
    merges = [r for r in dump.history if r.entity == "merge"]
    final = [r for r in merges if (r.key or "").startswith("final-merge:")]
    owners = {t.completed_by for t in dump.tasks}
    assert {r.agent for r in final} == owners and all(r.to_state == "merged" for r in final)
    # nothing merged into the merged branch before the end: every final merge comes after the last completion
    last_done = max(r.seq for r in transitions(dump) if r.to_state == "completed")
    assert all(r.seq > last_done for r in final)
    for t in dump.tasks:
        assert f"{t.id} by {t.completed_by}" in git(repo, "show", f"{out.spec.merged_branch}:{t.id}.txt")


def test_chain_of_three_agents_each_sees_its_predecessor(tmp_path):
    repo = make_repo(tmp_path / "repo", {"chain.txt": "start\n"})
    tasks = [task("a", ["chain.txt"], needed_tags=["x"]), task("b", ["chain.txt"], needed_tags=["y"]),
             task("c", ["chain.txt"], needed_tags=["z"])]
    agents = [{"tags": ["x"]}, {"tags": ["y"]}, {"tags": ["z"]}]
    exp = write_experiment(tmp_path, tasks, [("a", "b", "blocks"), ("b", "c", "blocks")],
                           {"policy": "pull", "agents": agents, "kind": "faulty_kinds:Faulty"})
    out, dump = run(tmp_path, exp, repo)
    assert out.status == "finished"
    owners = {t.id: t.completed_by for t in dump.tasks}
    assert len(set(owners.values())) == 3
    text = git(repo, "show", f"{out.spec.merged_branch}:chain.txt")
    assert text == f"start\na by {owners['a']}\nb by {owners['b']}\nc by {owners['c']}\n"
    # c's own branch was built on a and b's work
    c_branch = git(repo, "show", f"{out.spec.agent_branch(owners['c'])}:chain.txt")
    assert c_branch == text
    assert not [r for r in dump.history if r.entity == "merge" and r.to_state == "conflict"]


def test_same_lines_conflict_is_recorded_and_the_rest_merges(tmp_path):
    repo = make_repo(tmp_path / "repo", {"shared.txt": "one\n"})
    tasks = [task("p", ["shared.txt"], est_ms=4000), task("q", ["shared.txt"], est_ms=4000), task("r", ["own.txt"], est_ms=8000)]
    exp = write_experiment(tmp_path, tasks, [], {"policy": "pull", "agents": 3, "kind": "faulty_kinds:Faulty"})
    out, dump = run(tmp_path, exp, repo)
    assert out.status == "finished"
    conflicts = [r for r in dump.history if r.entity == "merge" and r.to_state == "conflict"]
    assert len(conflicts) == 1 and conflicts[0].data["conflicts"] == ["shared.txt"]
    merged = out.spec.merged_branch
    assert "r by" in git(repo, "show", f"{merged}:own.txt")  # the others still merged
    # both conflicting branches are intact: each holds its own edit of shared.txt
    for tid in ("p", "q"):
        owner = next(t.completed_by for t in dump.tasks if t.id == tid)
        assert f"{tid} by {owner}" in git(repo, "show", f"{out.spec.agent_branch(owner)}:shared.txt")


@pytest.mark.parametrize("fault,verdict", [("crash", "dead"), ("silent", "stalled"), ("loop", "looping")])
def test_misbehaving_agent_is_recovered_by_the_ladder(tmp_path, fault, verdict):
    repo = make_repo(tmp_path / "repo", {"README": "x\n"})
    tasks = [task("bad", ["bad.txt"], meta={"fault": fault}), task("ok1", ["o1.txt"]), task("ok2", ["o2.txt"])]
    exp = write_experiment(tmp_path, tasks, [], {"policy": "pull", "agents": 2, "kind": "faulty_kinds:Faulty"})
    out, dump = run(tmp_path, exp, repo)
    assert out.status == "finished"
    assert all(t.status == "completed" for t in dump.tasks)
    bad = next(t for t in dump.tasks if t.id == "bad")
    assert bad.attempt >= 2  # requeued and taken again
    agent_rows = transitions(dump, "agent")
    assert any(r.to_state == verdict for r in agent_rows), [(r.entity_id, r.to_state) for r in agent_rows]
    assert any(r.to_state == "pending" and r.from_state in ("assigned", "working") for r in transitions(dump) if r.entity_id == "bad")


def test_sigkill_orchestrator_then_resume_loses_nothing(tmp_path):
    repo = make_repo(tmp_path / "repo", {"README": "x\n"})
    tasks = [task(f"t{i}", [f"f{i}.txt"], est_ms=6000) for i in range(10)]
    exp = write_experiment(tmp_path, tasks, [(f"t{i}", f"t{i + 1}", "blocks") for i in range(0, 8, 2)],
                           {"policy": "pull", "agents": 3, "kind": "sim"}, time_scale=0.1)
    results = tmp_path / "results"
    orch = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", "--variant", "v", "--experiment", str(exp),
                             "--repo", str(repo), "--results", str(results), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 60
    run_dir = None
    while time.time() < deadline:
        found = list(results.glob("t/v/*/run.json"))
        if found:
            run_dir = found[0].parent
            spec = json.loads(found[0].read_text())
            try:
                with open_store(spec["store_url"]) as s:
                    done = sum(t.status == "completed" for t in s.list_tasks(spec["run_id"]))
            except Exception:
                done = 0
            if done >= 3:
                break
        time.sleep(0.1)
    assert run_dir is not None, orch.stderr.read() if orch.poll() is not None else "no run dir"
    os.kill(orch.pid, signal.SIGKILL)  # the orchestrator only: runners live in their own groups
    orch.wait()
    r = subprocess.run([sys.executable, "-m", "orchestrator", "resume", str(run_dir), "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["status"] == "finished"
    with open_store(spec["store_url"]) as s:
        dump = s.dump_run(spec["run_id"])
        agents = s.list_agents(spec["run_id"])
    assert all(t.status == "completed" for t in dump.tasks)
    # the orchestration phases of both orchestrators: the resume spawned again, one drain at the end
    # (the first spawn is recorded once its runners all reported in: before the kill, unless one was slow)
    phases = [(p["phase"], p.get("resume", False)) for p in overhead.phases(dump)]
    assert [p for p in phases if p != ("spawn", False)] == [("setup", False), ("spawn", True), ("drain", False)], phases
    assert phases.count(("spawn", False)) <= 1
    assert result["metrics"]["spawn_ms"] == sum(p["end_ms"] - p["start_ms"] for p in overhead.phases(dump) if p["phase"] == "spawn")
    # no transition lost or duplicated: seqs gap-free, and no task took the same step twice in a row
    assert [t.seq for t in dump.history] == list(range(1, len(dump.history) + 1))
    for t in dump.tasks:
        path = [(x.from_state, x.to_state) for x in transitions(dump) if x.entity_id == t.id]
        assert path[0] == (None, "pending") and path[-1] == ("working", "completed")
        assert all(a != b for a, b in zip(path, path[1:]))
    # no orphan: every runner the store knows of is gone
    for a in agents:
        if a.pid:
            try:
                p = psutil.Process(a.pid)
                assert abs(p.create_time() - a.create_time) > 0.5 or p.status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                pass


def test_bad_inputs_are_refused_and_leave_nothing(tmp_path):
    exp = write_experiment(tmp_path, [task("a", ["a.txt"])], [], {"policy": "pull", "agents": 1})
    results = tmp_path / "results"
    not_repo = tmp_path / "plain"
    not_repo.mkdir()
    with pytest.raises(GitError, match="plain"):
        plan_runs(RunRequest(variant="v", experiment=exp, repo=not_repo, results=results))
    dirty = make_repo(tmp_path / "dirty", {"a.txt": "1\n"})
    (dirty / "a.txt").write_text("2\n")
    with pytest.raises(GitError, match="dirty|uncommitted|changes"):
        plan_runs(RunRequest(variant="v", experiment=exp, repo=dirty, results=results))
    clean = make_repo(tmp_path / "clean", {"a.txt": "1\n"})
    with pytest.raises(GitError, match="no-such-ref"):
        plan_runs(RunRequest(variant="v", experiment=exp, repo=clean, base="no-such-ref", results=results))
    with pytest.raises(InputError, match="--runs 0"):
        plan_runs(RunRequest(variant="v", experiment=exp, repo=clean, runs=0, results=results))
    assert not results.exists()
    # a worktree path that already exists: refused before anything is made in the repository
    [plan] = plan_runs(RunRequest(variant="v", experiment=exp, repo=clean, results=results))
    paths = plan[1]
    paths.worktree_of("w1").mkdir(parents=True)
    (paths.worktree_of("w1") / "keep").write_text("x")
    with pytest.raises((GitError, InputError)):
        run_one(*plan)
    assert git(clean, "branch", "--list", "orch/*") == ""
    assert git(clean, "worktree", "list").count("\n") == 1

