"""Agent processes: spawn, observe, stop whole trees (escaped grandchildren too), re-attach."""

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

from coordstore.errors import AgentError
from orchestrator.supervision.procs import AgentProcess, become_subreaper, process_alive, reap_orphans, spawn
from fixtures_path import PROGS

PY = sys.executable
LINUX = sys.platform.startswith("linux")


def wait_for(pred, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def pids_of(d: Path, *roles: str) -> dict[str, int]:
    wait_for(lambda: all((d / r).exists() for r in roles), what=f"pid files {roles}")
    return {r: int((d / r).read_text()) for r in roles}


def truly_gone(pid: int, create_time: float) -> bool:
    """No process-table entry at all for that process (not even a zombie)."""
    try:
        return abs(psutil.Process(pid).create_time() - create_time) > 0.005
    except psutil.NoSuchProcess:
        return True


_OLDER: set[int] = set()  # children this process had before the test: earlier tests' business


def no_zombie_children() -> bool:
    """No zombie among the children the current test started (an earlier test's process that
    ends while this one runs is not this test's to reap)."""
    return not [c for c in psutil.Process().children() if c.pid not in _OLDER and c.status() == psutil.STATUS_ZOMBIE]


@pytest.fixture(autouse=True)
def no_leftovers(tmp_path: Path):
    """If a test fails half-way, still kill what it started (pid files of tree.py included)."""
    started = psutil.Process().create_time()
    before = {c.pid for c in psutil.Process().children(recursive=True)}
    _OLDER.clear()
    _OLDER.update(before)
    yield
    for child in psutil.Process().children(recursive=True):
        if child.pid not in before:
            try:
                child.kill()
            except psutil.Error:
                pass
    for f in [tmp_path / r for r in ("leader", "child", "grandchild")]:
        if f.exists():
            try:
                proc = psutil.Process(int(f.read_text()))
                if proc.create_time() >= started:
                    proc.kill()
            except psutil.Error:
                pass


def test_spawn_runs_in_own_group_with_logs_and_env(tmp_path: Path) -> None:
    work = tmp_path / "wt"
    work.mkdir()
    code = (
        "import os, sys; print(os.getcwd(), os.environ['ORCH_AGENT'], os.getpgid(0) == os.getpid(), os.getsid(0) == os.getpid()); "
        "print('oops', file=sys.stderr)"
    )
    p = spawn([PY, "-c", code], "a1", {"ORCH_AGENT": "a1"}, work, tmp_path / "logs")
    wait_for(lambda: not p.alive(), what="exit")
    assert p.returncode == 0 and p.pid > 0 and p.create_time > 0
    out, err = p.log_paths
    assert out.read_text().split() == [str(work), "a1", "True", "True"]
    assert err.read_text() == "oops\n"
    assert p.stop(0.1) == 0  # stopping a finished process is harmless


def test_logs_append_across_respawns(tmp_path: Path) -> None:
    for i in range(2):
        p = spawn([PY, "-c", f"print('run {i}')"], "a1", None, tmp_path, tmp_path / "logs")
        wait_for(lambda: not p.alive(), what="exit")
    assert (tmp_path / "logs" / "a1.out.log").read_text() == "run 0\nrun 1\n"


def test_crash_program_exit_code_and_events(tmp_path: Path) -> None:
    ev = tmp_path / "ev" / "c1"
    p = spawn([PY, str(PROGS / "crash.py"), str(ev), "c1", "--code", "7"], "c1", None, tmp_path, tmp_path / "logs")
    wait_for(lambda: not p.alive(), what="crash")
    assert p.returncode == 7
    assert "simulated crash" in p.log_paths[1].read_text()
    types = [json.loads(f.read_text())["type"] for f in sorted(ev.glob("*.json"))]
    assert types == ["started", "step"]  # no done: it died mid-task


def test_unrunnable_program_and_missing_cwd_are_agent_errors(tmp_path: Path) -> None:
    with pytest.raises(AgentError, match="no-such-program-xyz"):
        spawn(["no-such-program-xyz"], "a1", None, tmp_path, tmp_path / "logs")
    with pytest.raises(AgentError, match="does not exist"):
        spawn([PY, "-c", "pass"], "a1", None, tmp_path / "missing", tmp_path / "logs")
    with pytest.raises(AgentError, match="empty command"):
        spawn([], "a1", None, tmp_path, tmp_path / "logs")


@pytest.mark.skipif(not LINUX, reason="setsid/subreaper semantics are Linux")
def test_stop_kills_tree_with_escaped_grandchild_no_survivor_no_zombie(tmp_path: Path) -> None:
    p = spawn([PY, str(PROGS / "tree.py"), str(tmp_path)], "t1", None, tmp_path, tmp_path / "logs")
    pids = pids_of(tmp_path, "leader", "child", "grandchild")
    assert pids["leader"] == p.pid
    times = {r: psutil.Process(pid).create_time() for r, pid in pids.items()}
    gc = psutil.Process(pids["grandchild"])
    assert os.getsid(gc.pid) == gc.pid != p.pid  # really escaped the group and the session
    st = p.stats()
    assert st is not None and st.nprocs == 3 and st.cpu_s > 0
    t0 = time.monotonic()
    rc = p.stop(grace_s=0.5)  # the grandchild ignores SIGTERM: only the SIGKILL sweep gets it
    assert time.monotonic() - t0 < 5
    assert rc == -signal.SIGTERM and p.survivors == []
    assert not p.alive() and p.stats() is None
    if become_subreaper():  # then orphans come to us and stop() must have reaped them
        assert all(truly_gone(pid, times[r]) for r, pid in pids.items()), pids
        assert no_zombie_children()
    else:
        assert all(truly_gone(pid, times[r]) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE for r, pid in pids.items())


@pytest.mark.skipif(not LINUX, reason="setsid/subreaper semantics are Linux")
def test_grandchild_orphaned_before_stop_is_still_killed(tmp_path: Path) -> None:
    p = spawn([PY, str(PROGS / "tree.py"), str(tmp_path), "--child-exits"], "t2", None, tmp_path, tmp_path / "logs")
    pids = pids_of(tmp_path, "leader", "child", "grandchild")
    gc_time = psutil.Process(pids["grandchild"]).create_time()
    assert p.stats().nprocs == 3  # a supervisor tick sees the whole tree
    (tmp_path / "go").touch()  # the child exits: the grandchild is no longer reachable from the leader
    child = psutil.Process(pids["child"])
    wait_for(lambda: child.status() == psutil.STATUS_ZOMBIE, what="child exit")
    assert pids["grandchild"] not in [c.pid for c in psutil.Process(p.pid).children(recursive=True)]
    assert p.stats().nprocs == 2  # leader + remembered grandchild (the zombie child is not counted)
    p.stop(grace_s=0.3)
    assert p.survivors == []
    assert truly_gone(pids["grandchild"], gc_time) or not become_subreaper()
    if become_subreaper():
        assert no_zombie_children()


@pytest.mark.skipif(not LINUX, reason="subreaper semantics are Linux")
def test_unreaped_child_of_a_dead_runner_is_reaped(tmp_path: Path) -> None:
    # the runner forks a child that exits at once and never waits for it: a zombie under the
    # runner, never seen by stats()/stop(); once the runner dies it is re-parented to us
    assert become_subreaper()
    code = "import os, time; pid = os.fork()\nif pid == 0: os._exit(0)\nprint(pid, flush=True); time.sleep(60)"
    p = spawn([PY, "-c", code], "z1", None, tmp_path, tmp_path / "logs")
    zpid = int(wait_for(lambda: p.log_paths[0].read_text().strip(), what="child pid"))
    wait_for(lambda: psutil.Process(zpid).status() == psutil.STATUS_ZOMBIE, what="zombie child")
    os.kill(p.pid, signal.SIGKILL)  # the runner dies on its own, not through stop()
    wait_for(lambda: not p.alive(), what="runner death")
    assert psutil.Process(zpid).ppid() == os.getpid()  # re-parented to us, still a zombie
    assert reap_orphans({os.getpid() + 10**7}) == []  # other sessions are not touched
    assert reap_orphans({p.pid}) == [zpid]
    assert not psutil.pid_exists(zpid) and no_zombie_children()
    assert p.stop(0.1) == -signal.SIGKILL


def test_attach_after_orchestrator_restart(tmp_path: Path) -> None:
    become_subreaper()  # the orphaned runner is then re-parented to this process, as in production
    # a short-lived "orchestrator" process spawns the agent and dies, leaving only (pid, create_time)
    code = (
        "import json, sys; from orchestrator.supervision.procs import spawn; "
        f"p = spawn([sys.executable, {str(PROGS / 'silent.py')!r}, {str(tmp_path / 'ev' / 's1')!r}, 's1'], 's1', None, "
        f"{str(tmp_path)!r}, {str(tmp_path / 'logs')!r}); "
        "print(json.dumps([p.pid, p.create_time]))"
    )
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True, timeout=30).stdout
    pid, create_time = json.loads(out)
    wait_for(lambda: (tmp_path / "ev" / "s1" / "0000000000.json").exists(), what="started event")
    p = AgentProcess.attach(pid, create_time, agent="s1")
    assert p is not None and p.alive()
    assert p.stats() is not None and p.stats().nprocs == 1
    rc = p.stop(grace_s=2.0)
    assert not p.alive() and p.survivors == []
    if LINUX:  # it was re-parented to us, so we reaped it and know how it ended
        assert rc == p.returncode == -signal.SIGTERM
        assert truly_gone(pid, create_time)
    assert AgentProcess.attach(pid, create_time) is None  # gone now


def test_attach_refuses_reused_or_missing_pid(tmp_path: Path) -> None:
    p = spawn([PY, str(PROGS / "silent.py"), str(tmp_path / "ev"), "s2"], "s2", None, tmp_path, tmp_path / "logs")
    try:
        # same pid, another start time: a different process that happens to have the pid
        assert AgentProcess.attach(p.pid, p.create_time + 1.0) is None
        assert AgentProcess.attach(p.pid, p.create_time - 0.02) is None  # two clock ticks off
        assert p.alive()  # and nothing was done to the real one
        again = AgentProcess.attach(p.pid, p.create_time)
        assert again is not None and again.alive()
    finally:
        p.stop(grace_s=1.0)
    assert again is not None and not again.alive()  # the attached handle sees the death
    assert again.stop(0.1) is None  # nothing to do, and no exit code it could know
    taken = {proc.pid for proc in psutil.process_iter()}
    free = next(n for n in range(4_000_000, 1, -1) if n not in taken)
    assert AgentProcess.attach(free, 0.0) is None


def test_process_alive_by_identity_and_the_state_a_verdict_cites(tmp_path: Path) -> None:
    p = spawn([PY, str(PROGS / "silent.py"), str(tmp_path / "ev"), "s4"], "s4", None, tmp_path, tmp_path / "logs")
    try:
        assert process_alive(p.pid, p.create_time)
        assert not process_alive(p.pid, p.create_time + 1.0) and not process_alive(p.pid, None) and not process_alive(None, 0.0)
        os.kill(p.pid, signal.SIGSTOP)  # alive, but it renews nothing: the lease decides, the state explains
        assert wait_for(lambda: p.state() == psutil.STATUS_STOPPED, what="stopped state")
        assert process_alive(p.pid, p.create_time)
        os.kill(p.pid, signal.SIGCONT)
    finally:
        p.stop(grace_s=1.0)
    assert not process_alive(p.pid, p.create_time) and p.state() is None


def test_stop_escalates_to_sigkill_when_term_is_ignored(tmp_path: Path) -> None:
    argv = [PY, str(PROGS / "silent.py"), str(tmp_path / "ev"), "s3", "--ignore-term"]
    p = spawn(argv, "s3", None, tmp_path, tmp_path / "logs")
    wait_for(lambda: (tmp_path / "ev" / "0000000000.json").exists(), what="started event")  # handler installed
    assert p.stop(grace_s=0.3) == -signal.SIGKILL


def test_stats_tell_a_busy_loop_from_a_silent_stall(tmp_path: Path) -> None:
    argv = [PY, str(PROGS / "looper.py"), str(tmp_path / "l"), "l", "--interval", "0.01"]
    looper = spawn(argv, "l", None, tmp_path, tmp_path / "logs")
    silent = spawn([PY, str(PROGS / "silent.py"), str(tmp_path / "s"), "s"], "s", None, tmp_path, tmp_path / "logs")
    try:
        both = [tmp_path / "l" / "0000000005.json", tmp_path / "s" / "0000000000.json"]
        wait_for(lambda: all(f.exists() for f in both), what="both running")
        time.sleep(0.1)  # let the silent one finish its start-up
        l0, s0 = looper.stats(), silent.stats()
        time.sleep(0.5)
        l1, s1 = looper.stats(), silent.stats()
        d_loop = l1.ctx_voluntary - l0.ctx_voluntary
        d_silent = s1.ctx_voluntary - s0.ctx_voluntary
        assert d_loop >= 10 and d_silent <= 2, (d_loop, d_silent)
        assert l1.cpu_s >= l0.cpu_s and s1.cpu_s - s0.cpu_s < 0.05
    finally:
        looper.stop(1.0)
        silent.stop(1.0)
