"""Operator commands (runs, status, watch, branches, diff, log, logs, clean; history in
test_orch_history.py) on real runs:
a finished sim run, a run whose orchestrator and runners were SIGKILLed mid-way, and a run whose
branches get cleaned. Every run is a real `orch run` subprocess on a real demo repository, with
git isolated from the machine's configuration (no user identity anywhere).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coordstore.models import TERMINAL
from orchestrator.rundir import RunPaths

from cliruns import (REPO_ROOT, SLOW_SCALE, cli, completed, env, finished_run, results,  # noqa: F401 (module fixtures)
                     FAST_SCALE, git, kill_run, orch_run, run_quietly, start_run, store_of)


@pytest.fixture(scope="module")
def interrupted(env, results, finished_run, tmp_path_factory) -> dict:
    """A run whose orchestrator and runners were SIGKILLed after a task completed (created after
    ``finished_run``, in the same results directory). While it was still running, `orch status`
    and `orch clean --yes` were run against it; their outcomes are returned for the tests."""
    proc, run_dir = start_run(results, SLOW_SCALE, env, tmp_path_factory.mktemp("cwd"))
    seen: dict = {"run_dir": run_dir}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if (run_dir / "orch.db").exists() and completed(run_dir)[0] >= 1:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        seen["status_running"] = run_quietly("status", run_dir, "--json")
        seen["clean_running"] = run_quietly("clean", run_dir, "--yes")
        kill_run(proc, run_dir)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()
    return seen


@pytest.fixture(scope="module")
def interrupted_run(interrupted) -> Path:
    return interrupted["run_dir"]


# ---------------------------------------------------------------------------------- runs
def test_runs_lists_finished_and_interrupted_newest_first(capsys, results, finished_run, interrupted_run):
    code, out, _ = cli(capsys, "runs", "--results", results, "--json")
    assert code == 0
    view = json.loads(out)
    assert view["version"] == 1
    rows = {r["run_dir"]: r for r in view["runs"]}
    assert set(rows) == {str(finished_run), str(interrupted_run)}
    assert [r["run_dir"] for r in view["runs"]] == [str(interrupted_run), str(finished_run)]
    fin, intr = rows[str(finished_run)], rows[str(interrupted_run)]
    assert fin["status"] == "finished"
    assert (fin["tasks_completed"], fin["tasks_total"]) == completed(finished_run)
    assert fin["experiment"] == "coordination" and fin["variant"] == "pull-4"
    assert fin["wall_clock_ms"] == json.loads(RunPaths(finished_run).metrics.read_text())["wall_clock_ms"] > 0
    assert intr["status"] == "interrupted", intr["evidence"]
    assert intr["tasks_completed"] >= 1 and (intr["tasks_completed"], intr["tasks_total"]) == completed(interrupted_run)

    code, out, _ = cli(capsys, "runs", "--results", results)
    assert code == 0
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert lines[0].split()[:4] == ["run", "experiment", "variant", "status"]
    assert finished_run.name in lines[2] and "finished" in lines[2]
    assert interrupted_run.name in lines[1] and "interrupted" in lines[1]


def test_a_bare_run_id_is_found_below_the_default_results(capsys, results, finished_run, tmp_path, monkeypatch):
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "results").symlink_to(results)
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli(capsys, "status", finished_run.name, "--json")
    assert code == 0 and json.loads(out)["run_dir"].endswith(finished_run.name)
    code, out, _ = cli(capsys, "runs", "--json")
    assert code == 0 and len(json.loads(out)["runs"]) >= 1


def test_runs_on_missing_directory_is_one_line_error(capsys, tmp_path):
    code, out, err = cli(capsys, "runs", "--results", tmp_path / "nope")
    assert code == 1 and out == ""
    assert err.strip().count("\n") == 0 and "nope" in err


# ---------------------------------------------------------------------------------- status
def test_status_of_finished_run(capsys, finished_run):
    code, out, _ = cli(capsys, "status", finished_run, "--json")
    assert code == 0
    v = json.loads(out)
    assert v["version"] == 1 and v["status"] == "finished"
    spec, store = store_of(finished_run)
    with store:
        tasks = store.list_tasks(spec.run_id)
        merged_rows = [r for r in store.history(spec.run_id, entity="merge") if r.to_state == "merged"]
    assert v["tasks"]["total"] == len(tasks) == sum(v["tasks"]["by_status"].values())
    assert v["tasks"]["by_status"]["completed"] == sum(t.status == "completed" for t in tasks)
    assert [a["id"] for a in v["agents"]] == [a.id for a in spec.agents]
    assert sum(a["tasks_done"] for a in v["agents"]) == v["tasks"]["by_status"]["completed"]
    assert all(a["verdict"] == "stopped" and a["current_task"] is None and not a["alive"] for a in v["agents"])
    assert v["merge"]["merged"] == len(merged_rows) and v["merge"]["merged_branch"] == spec.merged_branch

    code, out, _ = cli(capsys, "status", finished_run)
    assert code == 0
    assert f"run {spec.run_id}" in out and "finished" in out
    for a in spec.agents:
        assert re.search(rf"^{a.id}\s+worker\s+stopped", out, re.M)


def test_status_of_interrupted_run(capsys, interrupted_run):
    code, out, _ = cli(capsys, "status", interrupted_run, "--json")
    assert code == 0
    v = json.loads(out)
    assert v["status"] == "interrupted"
    assert not any(a["alive"] for a in v["agents"])
    assert v["tasks"]["by_status"]["completed"] >= 1
    ended = sum(n for s, n in v["tasks"]["by_status"].items() if s in TERMINAL)
    assert ended < v["tasks"]["total"], "every task ended: the run was not interrupted mid-way"


def test_while_running_status_says_running_and_clean_refuses(interrupted):
    code, out, _ = interrupted["status_running"]
    v = json.loads(out)
    assert code == 0 and v["status"] == "running" and any(a["alive"] for a in v["agents"])
    code, out, err = interrupted["clean_running"]
    assert code == 1 and out == "" and "still running" in err and err.count("\n") == 1
    assert all(RunPaths(interrupted["run_dir"]).worktree_of(a).is_dir() for a in ("w1", "w2", "w3", "w4"))


def test_liveness_trusts_the_orchestrator_pid_file(interrupted_run):
    from orchestrator.views.runinfo import liveness, open_run, pidfile, write_pidfile

    ref = open_run(interrupted_run)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    try:
        with ref.open_store() as store:
            run = store.get_run(ref.run_id)
            assert liveness(ref, store, run)[0] == "interrupted"  # no pid file: no runner alive
            write_pidfile(ref.paths)  # this test process stands in for a live orchestrator
            assert liveness(ref, store, run) == ("running", "orchestrator process alive")
            write_pidfile(ref.paths, pid=os.getppid())  # a live process, but not the one recorded
            rec = json.loads(pidfile(ref.paths).read_text())
            pidfile(ref.paths).write_text(json.dumps({**rec, "create_time": rec["create_time"] - 5}))
            assert liveness(ref, store, run) == ("interrupted", "orchestrator process gone")
            pidfile(ref.paths).write_text(json.dumps({"pid": gone.pid, "create_time": rec["create_time"]}))
            assert liveness(ref, store, run)[0] == "interrupted"
    finally:
        pidfile(ref.paths).unlink(missing_ok=True)


def test_watch_exits_on_interrupted_run(capsys, interrupted_run):
    t0 = time.monotonic()
    code, out, _ = cli(capsys, "watch", interrupted_run, "--interval", "0.1")
    assert code == 0
    assert "interrupted" in out.splitlines()[-1]
    assert time.monotonic() - t0 < 20
    code, out, _ = cli(capsys, "watch", interrupted_run, "--interval", "0.1", "--exit-status")
    assert code == 1


def test_watch_on_finished_run_prints_final_view(capsys, finished_run):
    code, out, _ = cli(capsys, "watch", finished_run)
    done, total = completed(finished_run)
    assert code == 0
    assert f"tasks {done}/{total}" in out and out.splitlines()[-1].endswith(f"{total}/{total} tasks ended")


# ---------------------------------------------------------------------------------- git views
def test_branches_match_git_and_store(capsys, finished_run):
    spec, store = store_of(finished_run)
    with store:
        tasks = store.list_tasks(spec.run_id)
    repo = Path(spec.repo)
    base = git(repo, "rev-parse", f"{spec.base}^{{commit}}").strip()
    code, out, _ = cli(capsys, "branches", finished_run, "--json")
    assert code == 0
    v = json.loads(out)
    assert v["version"] == 1 and v["base"] == base
    assert [a["agent"] for a in v["agents"]] == [a.id for a in spec.agents if a.works]
    for a in v["agents"]:
        done = sorted(t.id for t in tasks if t.completed_by == a["agent"] and t.status == "completed")
        assert a["tasks"] == done
        authors = git(repo, "log", "--no-merges", "--format=%an", f"{base}..{a['branch']}").split()
        assert a["commits"] == authors.count(a["agent"])  # no hand-made commits in this run
        assert a["merged"] is True and a["unmerged_commits"] == 0 and a["conflicts"] == []
    m = v["merged"]
    assert m["exists"] and m["sha"] == git(repo, "rev-parse", spec.merged_branch).strip()
    assert m["commits"] == int(git(repo, "rev-list", "--count", "--no-merges", f"{base}..{spec.merged_branch}"))

    code, out, _ = cli(capsys, "branches", finished_run)
    assert code == 0 and f"merged branch {spec.merged_branch}" in out
    busiest = max(v["agents"], key=lambda a: a["commits"])
    assert re.search(rf"^{busiest['agent']}\s+{busiest['commits']}\s", out, re.M)


def test_diff_and_log_of_an_agent(capsys, finished_run):
    spec, store = store_of(finished_run)
    with store:
        tasks = store.list_tasks(spec.run_id)
    agent = max({t.completed_by for t in tasks if t.completed_by}, key=lambda a: sum(t.completed_by == a for t in tasks))
    repo, branch = Path(spec.repo), spec.agent_branch(agent)
    base = git(repo, "rev-parse", f"{spec.base}^{{commit}}").strip()

    code, out, _ = cli(capsys, "diff", finished_run, agent, "--stat")
    assert code == 0 and out == git(repo, "diff", "--stat", base, branch)
    code, out, _ = cli(capsys, "diff", finished_run, agent)
    assert code == 0 and out == git(repo, "diff", base, branch) and out.startswith("diff --git")

    code, out, _ = cli(capsys, "log", finished_run, agent, "--json")
    v = json.loads(out)
    assert v["version"] == 1 and v["branch"] == branch
    own = {c["task"] for c in v["commits"] if not c["merge"] and c["author"] == agent}
    assert own == {t.id for t in tasks if t.completed_by == agent}
    code, out, _ = cli(capsys, "log", finished_run, agent)
    assert code == 0
    for t in own:
        assert re.search(rf"^[0-9a-f]{{12}}  {re.escape(t)}\s+task {re.escape(t)}: ", out, re.M)


def test_unknown_agent_is_one_line_error(capsys, finished_run):
    for cmd in ("diff", "log", "logs"):
        code, out, err = cli(capsys, cmd, finished_run, "nobody")
        assert code == 2 and out == ""  # a usage error: the agent names nothing in this run
        assert err.count("\n") == 1 and "'nobody'" in err and "w1" in err


def test_logs_prints_the_agent_output(capsys, finished_run):
    paths = RunPaths(finished_run)
    err_log = paths.logs / "w2.err.log"
    with open(err_log, "a") as f:  # a line of process output, as a runner would write it
        f.write("marker line from the runner\n")
    expected = "".join(p.read_text() for p in sorted(paths.logs.glob("w2.*"), key=lambda p: not p.name.endswith(".out.log")))
    for args in ((), ("--follow",)):  # --follow ends by itself once the run has ended
        code, out, _ = cli(capsys, "logs", finished_run, "w2", *args)
        assert code == 0
        assert "marker line from the runner" in out and f"==> {err_log} <==" in out
        assert re.sub(r"==> .* <==\n", "", out) == expected


# ---------------------------------------------------------------------------------- clean
def test_clean_keeps_unmerged_and_dirty_work(capsys, env, tmp_path):
    run_dir = orch_run(tmp_path / "results", FAST_SCALE, env, tmp_path)
    spec = RunPaths(run_dir).read_spec()
    repo = Path(spec.repo)
    paths = RunPaths(run_dir)
    # w4 gets a commit by hand that is merged nowhere; w3 gets an uncommitted file
    wt4 = paths.worktree_of("w4")
    (wt4 / "extra.txt").write_text("not merged anywhere\n")
    git(wt4, "add", "extra.txt")
    git(wt4, "-c", "user.name=hand", "-c", "user.email=hand@example.invalid", "commit", "-q", "-m", "hand-made commit")
    (paths.worktree_of("w3") / "scratch.txt").write_text("uncommitted\n")
    # w1 gets build output git ignores: `git worktree remove` would delete it without a word
    common = Path(git(repo, "rev-parse", "--path-format=absolute", "--git-common-dir").strip())
    (common / "info").mkdir(exist_ok=True)
    (common / "info" / "exclude").write_text("build/\n")
    (paths.worktree_of("w1") / "build").mkdir()
    (paths.worktree_of("w1") / "build" / "out.o").write_text("built\n")
    code, out, _ = cli(capsys, "branches", run_dir, "--json")
    w4 = next(a for a in json.loads(out)["agents"] if a["agent"] == "w4")
    base = git(repo, "rev-parse", f"{spec.base}^{{commit}}").strip()
    by_w4 = git(repo, "log", "--no-merges", "--format=%an", f"{base}..{spec.agent_branch('w4')}").split().count("w4")
    assert code == 0 and w4["merged"] is False and w4["unmerged_commits"] == 1 and w4["commits"] == by_w4 + 1
    refs_before = git(repo, "for-each-ref", "--format=%(refname) %(objectname)")

    code, out, _ = cli(capsys, "clean", run_dir, "--branches", "--json")  # no --yes, no terminal: dry run
    v = json.loads(out)
    assert code == 0 and v["version"] == 1 and v["dry_run"] is True
    assert git(repo, "for-each-ref", "--format=%(refname) %(objectname)") == refs_before
    assert all(paths.worktree_of(a).is_dir() for a in ("w1", "w2", "w3", "w4"))
    plan = v

    code, out, _ = cli(capsys, "clean", run_dir, "--branches")
    assert code == 0 and "dry run" in out.splitlines()[-1] and "would remove" in out
    assert f"kept worktree {paths.worktree_of('w1')}: 1 git-ignored files or directories (build/)" in out

    code, out, _ = cli(capsys, "clean", run_dir, "--branches", "--yes", "--json")
    v = json.loads(out)
    assert code == 0 and v["dry_run"] is False
    # the dry run announced exactly what was done
    assert {(i["kind"], i["name"]) for i in v["removed"]} == {(i["kind"], i["name"]) for i in plan["removed"]}
    assert {(i["kind"], i["name"]) for i in v["kept"]} == {(i["kind"], i["name"]) for i in plan["kept"]}
    kept = {i["name"]: i["reason"] for i in v["kept"]}
    b = lambda a: f"refs/heads/{spec.agent_branch(a)}"  # noqa: E731
    assert "1 commits not merged anywhere" in kept[b("w4")]
    assert "uncommitted" in kept[str(paths.worktree_of("w3"))]
    assert "checked out in worktree" in kept[b("w3")]
    assert "merged result" in kept[f"refs/heads/{spec.merged_branch}"]
    assert "git-ignored" in kept[str(paths.worktree_of("w1"))] and "checked out in worktree" in kept[b("w1")]
    removed = {i["name"] for i in v["removed"]}
    assert b("w2") in removed and str(paths.worktree_of("w4")) in removed
    remaining = set(git(repo, "for-each-ref", "--format=%(refname)", "refs/heads/orch").split())
    assert remaining == {b("w1"), b("w3"), b("w4"), f"refs/heads/{spec.merged_branch}"}
    assert (paths.worktree_of("w1") / "build" / "out.o").read_text() == "built\n" and paths.worktree_of("w3").is_dir()
    assert git(repo, "log", "-1", "--format=%s", b("w4")).strip() == "hand-made commit"

    code, out, _ = cli(capsys, "clean", run_dir, "--branches", "--yes")  # again: says what it keeps
    assert code == 0
    assert f"kept branch {spec.agent_branch('w4')}: 1 commits not merged anywhere" in out
    assert "removed" not in out

    code, out, _ = cli(capsys, "clean", run_dir, "--branches", "--yes", "--ignored")  # asked for: they go
    assert code == 0 and f"removed worktree {paths.worktree_of('w1')} (clean; 1 git-ignored" in out
    assert f"removed branch {spec.agent_branch('w1')}" in out and not paths.worktree_of("w1").exists()


# ---------------------------------------------------------------------------------- conventions
def test_every_command_has_help_and_is_in_readme(capsys):
    import typer

    from orchestrator.cli import app as cli_mod

    assert cli(capsys, "--help")[0] == 0  # main() imports every command module, as in real use

    main_cmd = typer.main.get_command(cli_mod.app)
    readme = (REPO_ROOT / "README.md").read_text()
    missing_help, missing_doc = [], []

    def walk(cmd, path):
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            full = f"{path} {name}"
            if hasattr(sub, "commands"):
                walk(sub, full)
                continue
            if not (sub.help or "").strip():
                missing_help.append(full)
            for p in sub.params:
                if p.name != "help" and not (getattr(p, "help", None) or "").strip():
                    missing_help.append(f"{full} {p.name}")
            if f"`{full}" not in readme and f"{full} " not in readme:
                missing_doc.append(full)

    walk(main_cmd, "orch")
    assert not missing_help, f"commands/options without help: {missing_help}"
    assert not missing_doc, f"commands not in README.md: {missing_doc}"


def test_usage_errors_exit_2_and_help_exits_0(capsys, tmp_path):
    code, _, err = cli(capsys, "status")
    assert code == 2 and "run_dir" in err.lower()
    code, _, _ = cli(capsys, "watch", tmp_path, "--interval", "0")
    assert code == 2
    for cmd in ("runs", "status", "watch", "branches", "diff", "log", "logs", "clean", "history"):
        code, out, _ = cli(capsys, cmd, "--help")
        assert code == 0 and "Usage:" in out
    code, out, err = cli(capsys, "status", tmp_path / "missing")
    assert code == 1 and out == "" and "missing" in err and err.count("\n") == 1
    code, _, err = cli(capsys, "status", tmp_path)
    assert code == 1 and "not a run directory" in err


def test_json_shapes_are_stable(capsys, finished_run, results):
    expect = {
        ("runs", "--results", results): {"version", "results", "runs"},
        ("status", finished_run): {"version", "run_id", "run_dir", "experiment", "variant", "policy", "status", "evidence",
                                   "created_at", "finished_at", "wall_clock_ms", "tasks", "agents", "merge"},
        ("branches", finished_run): {"version", "run_id", "repo", "base", "merge_mode", "agents", "merged", "merge_rows",
                                     "conflicts"},
        ("history", finished_run): {"version", "run_id", "origin_ms", "filter", "transitions"},
        ("history", finished_run, "--summary"): {"version", "run_id", "status", "end_ms", "filter", "work_tasks",
                                                 "time_in_status_ms", "time_by_agent_ms", "tasks"},
        ("log", finished_run, "w1"): {"version", "run_id", "agent", "branch", "base", "commits"},
    }
    for args, keys in expect.items():
        code, out, _ = cli(capsys, *args, "--json")
        assert code == 0, args
        assert set(json.loads(out)) == keys, args
