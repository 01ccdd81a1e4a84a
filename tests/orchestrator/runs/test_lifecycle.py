"""A run's lifecycle under real signals: SIGTERM, SIGHUP and Ctrl-C stop every runner and leave the
run interrupted and resumable; `orch resume` refuses a live run and finishes an interrupted one
however it stopped (SIGKILL included); `orch clean` refuses while any process of the run lives.

Every run is a real `orch run` subprocess (own session, as a shell would start it) on a real git
repository with real sim runners; liveness is checked by pid + create time, as orch does.
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
import yaml

from conftest import wait_for
from coordstore import open_store
from coordstore.errors import NotFound
from gitfixtures import make_repo
from gitfixtures import run_git as git
from orchestrator.supervision.interrupts import Interrupted, catch_signals, deferred
from orchestrator.rundir import RunPaths
from fixtures_path import REPO_ROOT

CHAIN = 7  # tasks in a chain, so a run cannot finish before the signal comes
TASK_MS = 1500  # sim duration of one task (time_scale 1): the chain takes over 10 s
SUPERVISION = {"stall_after_ms": 8000, "kill_grace_s": 0.5, "respawn_backoff_ms": 100, "respawn_backoff_max_ms": 400}


@pytest.fixture(autouse=True)
def isolated_git(no_git_identity):
    """No git identity anywhere (conftest): whatever orch commits carries its own."""


def write_experiment(tmp_path: Path, timeout_s: float = 150) -> Path:
    """Three sim agents on a chain of CHAIN tasks plus two side tasks."""
    tasks = [{"id": f"c{i}", "title": f"chain {i}", "time_estimate_ms": TASK_MS, "file_scope": [f"c{i}.txt"]} for i in range(CHAIN)]
    tasks += [{"id": f"s{i}", "title": f"side {i}", "time_estimate_ms": TASK_MS, "file_scope": [f"s{i}.txt"]} for i in range(2)]
    deps = [{"from_id": f"c{i}", "to_id": f"c{i + 1}", "type": "blocks"} for i in range(CHAIN - 1)]
    tpl = tmp_path / "graph.json"
    tpl.write_text(json.dumps({"format": "orch-graph", "version": 1, "tasks": tasks, "dependencies": deps}))
    exp = {"experiment": {"id": "t"}, "template": str(tpl),
           "execution": {"runs": 1, "seed": 1, "time_scale": 1.0, "timeout_s": timeout_s, "supervision": SUPERVISION},
           "variants": [{"name": "v", "policy": "pull", "agents": 3, "kind": "sim", "kind_options": {"sigma": 0}}]}
    f = tmp_path / "exp.yaml"
    f.write_text(yaml.safe_dump(exp))
    return f


def orch_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))}


def orch(*args, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args)], env=orch_env(), capture_output=True,
                          text=True, timeout=timeout)


def start_run(tmp_path: Path, prefix: tuple[str, ...] = (), timeout_s: float = 150) -> tuple[subprocess.Popen, Path]:
    """`orch run` in its own session (``prefix``: e.g. a `timeout` command before it); returns it
    and its run directory once the run's store exists."""
    repo = make_repo(tmp_path / "repo", {"README": "x\n"})
    exp = write_experiment(tmp_path, timeout_s)
    results = tmp_path / "results"
    argv = [*prefix, sys.executable, "-m", "orchestrator", "run", "--variant", "v", "--experiment", str(exp),
            "--repo", str(repo), "--results", str(results), "--quiet"]
    proc = subprocess.Popen(argv, env=orch_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    found = wait_for(lambda: list(results.glob("t/v/*/run.json")) or proc.poll() is not None, timeout=90)
    assert found is not True, f"orch run ended before creating a run: {proc.communicate()}"
    return proc, found[0].parent


def task_states(run_dir: Path) -> dict[str, str]:
    spec = RunPaths(run_dir).read_spec()
    try:
        with open_store(spec.store_url) as s:
            return {t.id: t.status for t in s.list_tasks(spec.run_id)}
    except (NotFound, OSError):
        return {}  # setup has not written the run's row yet


def wait_mid_flight(proc: subprocess.Popen, run_dir: Path) -> None:
    """Until a task completed while others remain (the run must still be going)."""
    wait_for(lambda: "completed" in task_states(run_dir).values() or proc.poll() is not None, timeout=90, every=0.05)
    assert proc.poll() is None, f"orch run ended early: {proc.communicate()}"


def recorded_runners(run_dir: Path) -> dict[str, tuple[int, float]]:
    spec = RunPaths(run_dir).read_spec()
    with open_store(spec.store_url) as s:
        return {a.id: (a.pid, a.create_time) for a in s.list_agents(spec.run_id) if a.pid}


def alive(pid: int, create_time: float) -> bool:
    """The very process (pid + create time) still runs; a zombie or a reused pid does not count."""
    try:
        p = psutil.Process(pid)
        return abs(p.create_time() - create_time) < 0.01 and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def run_rows(run_dir: Path) -> list[tuple[str | None, str, str | None]]:
    """The run's changes of status (its notes, e.g. the orchestration phases, left out)."""
    spec = RunPaths(run_dir).read_spec()
    with open_store(spec.store_url) as s:
        return [(r.from_state, r.to_state, r.reason) for r in s.history(spec.run_id, entity="run") if not r.is_note]


def assert_resume_finishes(run_dir: Path) -> None:
    """`orch resume` exits 0 with every task completed, the history intact, and no runner left."""
    r = orch("resume", run_dir, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["status"] == "finished"
    spec = RunPaths(run_dir).read_spec()
    with open_store(spec.store_url) as s:
        dump = s.dump_run(spec.run_id)
    assert {t.id: t.status for t in dump.tasks} == {t.id: "completed" for t in dump.tasks}
    assert [r.seq for r in dump.history] == list(range(1, len(dump.history) + 1))
    assert [(f, t) for f, t, _ in run_rows(run_dir)][-2:] == [("interrupted", "running"), ("running", "finished")]
    assert not [a for a, rec in recorded_runners(run_dir).items() if alive(*rec)]


def assert_interrupted_and_no_runner_left(run_dir: Path, runners: dict, signame: str) -> None:
    assert runners, "no runner was recorded before the signal"
    assert not [a for a, rec in {**runners, **recorded_runners(run_dir)}.items() if alive(*rec)]
    rows = run_rows(run_dir)
    assert rows[-1][:2] == ("running", "interrupted") and signame in rows[-1][2], rows
    assert set(task_states(run_dir).values()) != {"completed"}, "the run ended before the signal"


def test_stop_signals_interrupt_but_wait_for_a_deferred_block_to_end():
    before = signal.getsignal(signal.SIGTERM)
    with catch_signals():
        with pytest.raises(Interrupted) as e:
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(5)  # never reached: the handler raises at once
        assert (e.value.name, e.value.exit_code, str(e.value)) == ("SIGHUP", 129, "interrupted by SIGHUP")
        steps = []
        with pytest.raises(Interrupted) as e:
            with deferred():  # e.g. a runner spawned and not yet recorded
                os.kill(os.getpid(), signal.SIGTERM)
                steps.append("finished the block")
        assert steps == ["finished the block"] and e.value.signum == signal.SIGTERM
        with deferred(deliver=False):  # the shutdown itself: a second Ctrl-C is dropped
            os.kill(os.getpid(), signal.SIGINT)
            steps.append("shut down")
        assert steps[-1] == "shut down"
    assert signal.getsignal(signal.SIGTERM) == before


def test_run_under_timeout_leaves_no_runner_and_resume_finishes_it(tmp_path):
    proc, run_dir = start_run(tmp_path, prefix=("timeout", "10"))
    wait_mid_flight(proc, run_dir)
    runners = recorded_runners(run_dir)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 124, err  # timeout's own code: it had to send SIGTERM
    assert err.count("\n") == 1 and "SIGTERM" in err and f"orch resume {run_dir}" in err, err
    assert_interrupted_and_no_runner_left(run_dir, runners, "SIGTERM")
    assert_resume_finishes(run_dir)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP], ids=["SIGINT", "SIGHUP"])
def test_ctrl_c_or_hangup_stops_runners_and_resume_finishes(tmp_path, sig):
    proc, run_dir = start_run(tmp_path)
    wait_mid_flight(proc, run_dir)
    runners = recorded_runners(run_dir)
    os.killpg(proc.pid, sig)  # what a terminal does: the whole foreground group (runners have their own)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert err.count("\n") == 1 and sig.name in err and f"orch resume {run_dir}" in err, err
    assert_interrupted_and_no_runner_left(run_dir, runners, sig.name)
    assert_resume_finishes(run_dir)


def test_run_stopped_by_its_own_timeout_is_resumed_to_the_end(tmp_path):
    # each orchestrator session gets 8 s: the first ends mid-chain (10.5 s of work), the resume
    # finishes it (a timeout stops the runners at once: they do not work on through a drain)
    proc, run_dir = start_run(tmp_path, timeout_s=8)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    rows = run_rows(run_dir)
    assert rows[-1][:2] == ("running", "interrupted") and set(task_states(run_dir).values()) != {"completed"}
    assert_resume_finishes(run_dir)  # its runners were stopped and marked so: all are respawned


def test_live_run_refuses_resume_and_clean_until_every_process_is_gone(tmp_path):
    proc, run_dir = start_run(tmp_path)
    try:
        wait_mid_flight(proc, run_dir)
        runners = recorded_runners(run_dir)
        r = orch("resume", run_dir)
        assert r.returncode == 1 and r.stdout == "" and r.stderr.count("\n") == 1, r.stderr
        assert "still running" in r.stderr and f"pid {proc.pid}" in r.stderr
        assert recorded_runners(run_dir) == runners  # nobody respawned them: one supervisor only
        os.kill(proc.pid, signal.SIGKILL)  # the orchestrator only: its runners go on unsupervised
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    live = {a: rec for a, rec in recorded_runners(run_dir).items() if alive(*rec)}
    assert live, "every runner ended with the orchestrator: nothing left to protect"
    spec = RunPaths(run_dir).read_spec()
    refs = git(Path(spec.repo), "for-each-ref", "--format=%(refname)", "refs/heads/orch")
    r = orch("clean", run_dir, "--branches", "--yes")
    assert r.returncode == 1 and r.stdout == "" and r.stderr.count("\n") == 1, r.stderr
    assert "alive" in r.stderr and any(f"pid {pid}" in r.stderr for pid, _ in live.values()), r.stderr
    assert all(RunPaths(run_dir).worktree_of(a.id).is_dir() for a in spec.agents)
    # every branch is still there (the unsupervised runners may still move them forward)
    assert git(Path(spec.repo), "for-each-ref", "--format=%(refname)", "refs/heads/orch") == refs

    r = orch("resume", run_dir, "--json")  # re-attaches the live runners, respawns the dead ones
    assert r.returncode == 0, r.stderr
    with open_store(spec.store_url) as s:
        assert {t.status for t in s.list_tasks(spec.run_id)} == {"completed"}
    assert not [a for a, rec in {**live, **recorded_runners(run_dir)}.items() if alive(*rec)]
    r = orch("clean", run_dir, "--branches", "--yes")  # now nobody works there: clean goes ahead
    assert r.returncode == 0, r.stderr
    assert not any(RunPaths(run_dir).worktree_of(a.id).exists() for a in spec.agents)
    r = orch("resume", run_dir)  # an ended run: nothing to resume, said in one line
    assert r.returncode == 1 and r.stdout == "" and r.stderr.count("\n") == 1, r.stderr
    assert "already finished" in r.stderr and "nothing to resume" in r.stderr

