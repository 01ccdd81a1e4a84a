"""Running orch as a user does, for the tests of orch's own commands: `orch run` subprocesses on
the demo repository with git cut off from the machine (no identity anywhere), in-process calls of
`orch` with their exit code and output, and the module fixture ``env`` that isolates git."""

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
from coordstore.errors import NotFound
from orchestrator.cli.main import main
from orchestrator.rundir import RunPaths

RUN_ARGS = ["--variant", "pull-4", "--template", "tiny-feature", "--runs", "1"]
FAST_SCALE = "0.0005"  # tiny-feature in a few seconds
SLOW_SCALE = "0.001"  # long enough to stop it mid-way
GIT_IDENTITY_VARS = ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL")
REPO_ROOT = Path(__file__).resolve().parents[1]  # tests/ is beside the packages


# ---------------------------------------------------------------------------------- helpers
def isolated_env(home: Path) -> dict[str, str]:
    """This process's environment with git cut off from any user or system configuration."""
    env = {k: v for k, v in os.environ.items() if k not in GIT_IDENTITY_VARS}
    home.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    return env


def run_bench(tmp_path: Path, script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``bench/<script>`` with ARGS as a user runs it: its own process, an isolated home, cwd tmp_path."""
    return subprocess.run([sys.executable, str(REPO_ROOT / "bench" / script), *args], env=isolated_env(tmp_path / "home"),
                          cwd=tmp_path, capture_output=True, text=True, timeout=timeout)


def orch_run(results: Path, scale: str, env: dict[str, str], cwd: Path) -> Path:
    """A complete `orch run`; returns the run directory."""
    p = subprocess.run([sys.executable, "-m", "orchestrator", "run", *RUN_ARGS, "--time-scale", scale,
                        "--results", str(results), "--json"], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return Path(json.loads(p.stdout)["runs"][0]["run_dir"])


def start_run(results: Path, scale: str, env: dict[str, str], cwd: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    """Start `orch run` (with ``extra`` arguments) in the background; return it and its (new) run
    directory once that exists."""
    before = set(results.rglob("run.json"))
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", *RUN_ARGS, "--time-scale", scale,
                             "--results", str(results), "--json", *extra], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = list(set(results.rglob("run.json")) - before)
        if found:
            return proc, found[0].parent
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    proc.kill()
    pytest.fail("orch run created no run directory within 60 s")


def completed(run_dir: Path) -> tuple[int, int]:
    """(completed, total) tasks; (0, 0) while setup has written run.json but not yet the run's row."""
    spec = RunPaths(run_dir).read_spec()
    with open_store(spec.store_url) as s:
        try:
            tasks = s.list_tasks(spec.run_id)
        except NotFound:
            return 0, 0
    return sum(t.status == "completed" for t in tasks), len(tasks)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def kill_run(proc: subprocess.Popen, run_dir: Path) -> None:
    """SIGKILL the orchestrator (first, as in a crash), then every runner it started."""
    runners = psutil.Process(proc.pid).children(recursive=True)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    spec, store = store_of(run_dir)
    with store:
        recorded = [a for a in store.list_agents(spec.run_id) if a.pid]
    for a in recorded:  # runners spawned after the snapshot above
        try:
            p = psutil.Process(a.pid)
            if abs(p.create_time() - (a.create_time or 0)) < 0.01:
                runners.append(p)
        except psutil.Error:
            pass
    for p in runners:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(runners, timeout=10)


def run_quietly(*args) -> tuple[int, str, str]:
    """`cli` for fixtures, which cannot use capsys."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as ei:
        main([str(a) for a in args])
    return ei.value.code, out.getvalue(), err.getvalue()


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run `orch ARGS` in-process like a shell would; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as ei:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return ei.value.code, out, err


def store_of(run_dir: Path):
    spec = RunPaths(run_dir).read_spec()
    return spec, open_store(spec.store_url)


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Git cut off from the machine for the subprocesses and for this process (module-wide)."""
    e = isolated_env(tmp_path_factory.mktemp("home"))
    with pytest.MonkeyPatch.context() as mp:
        for k in GIT_IDENTITY_VARS:
            mp.delenv(k, raising=False)
        for k in ("HOME", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_NOSYSTEM", "GIT_TERMINAL_PROMPT"):
            mp.setenv(k, e[k])
        yield e


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="module")
def finished_run(env, results, tmp_path_factory) -> Path:
    """A finished sim run (a real `orch run` subprocess on a demo repository), once per module."""
    return orch_run(results, FAST_SCALE, env, tmp_path_factory.mktemp("cwd"))
