"""`orch mcp RUN_DIR`: the coordination server as a command, its usage errors, and a session with
the official SDK client against it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import anyio
import pytest

from cliruns import cli
from coordfixtures import ROOT, agent_run, http_client, payload, tokens

pytestmark = pytest.mark.usefixtures("no_git_identity")


@pytest.mark.parametrize("args, needle", [
    (["--http", "--stdio"], "--http and --stdio are alternatives"),
    (["--stdio", "--port", "3"], "--port goes with --http"),
    (["--port", "70000"], "--port 70000: must be between 0 and 65535"),
])
def test_usage_errors_are_one_line_and_exit_2(capsys, tmp_path, args, needle):
    code, out, err = cli(capsys, "mcp", tmp_path, *args)
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("orch: error: ") and needle in err


def test_a_directory_that_is_not_there_or_not_a_run(capsys, tmp_path):
    code, _, err = cli(capsys, "mcp", tmp_path / "nowhere")
    assert code == 2 and err == f"orch: error: {tmp_path / 'nowhere'}: no such run directory\n"
    code, _, err = cli(capsys, "mcp", tmp_path)
    assert code == 1 and err == f"orch: error: {tmp_path}: not a run directory (no run.json)\n"


def test_orch_mcp_serves_the_run_until_sigterm(tmp_path):
    spec, paths = agent_run(tmp_path, "sqlite")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "mcp", str(paths.root), "--http", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        first = proc.stdout.readline().strip()
        assert first.startswith("listening http://127.0.0.1:") and first.endswith("/mcp"), proc.stderr.read()
        url = first.split(" ", 1)[1]

        async def session():
            async with http_client(url, tokens(paths)["coordinator"]) as c:
                return payload(await c.call_tool("connect", {}))

        me = anyio.run(session)
        assert (me["agent_id"], me["role"], me["instruction"]) == ("coordinator", "coordinator", "assign every task")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        proc.stdout.close()
        proc.stderr.close()
