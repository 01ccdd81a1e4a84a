"""A coordination server whose orchestrator died serves the runners that outlive it while the run
goes on, and stops by itself once the run is over (real server processes, a real dead parent)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from coordstore import open_store

from coordfixtures import ServerProcess, agent_run

pytestmark = pytest.mark.usefixtures("no_git_identity")


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_an_orphaned_server_serves_on_while_the_run_goes_on_and_stops_once_it_is_over(tmp_path):
    spec, paths = agent_run(tmp_path)
    server = ServerProcess(paths.root, "--parent-pid", str(dead_pid()))
    try:
        time.sleep(5.0)  # two checks of the watch: the run is still running, so it serves on
        assert server.proc.poll() is None
        with open_store(spec.store_url) as s:
            s.finish_run(spec.run_id, "interrupted", reason="nobody resumed")
        deadline = time.monotonic() + 15
        while server.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.proc.poll() == 0  # a graceful stop, by itself
    finally:
        server.stop()


def test_a_server_whose_orchestrator_lives_is_left_to_it(tmp_path):
    spec, paths = agent_run(tmp_path)
    with open_store(spec.store_url) as s:
        s.finish_run(spec.run_id, "finished")
    server = ServerProcess(paths.root, "--parent-pid", str(__import__("os").getpid()))
    try:
        time.sleep(5.0)
        assert server.proc.poll() is None  # the orchestrator (this test) stops it
    finally:
        assert server.stop() == 0
