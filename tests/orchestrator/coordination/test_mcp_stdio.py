"""The coordination server over stdio, launched by the official SDK's stdio client the way an agent's
MCP configuration launches it: the token in ``ORCH_MCP_TOKEN``, checked before serving."""

from __future__ import annotations

import os
import subprocess
import sys

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from coordstore import open_store

from coordfixtures import ROOT, agent_run, payload, tokens
from orchestrator.coordination.tools import TOOLS

pytestmark = pytest.mark.usefixtures("no_git_identity")


def params(run_dir, token: str, *extra: str) -> StdioServerParameters:
    env = {**os.environ, "ORCH_MCP_TOKEN": token, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return StdioServerParameters(command=sys.executable, args=["-m", "orchestrator.coordination", "--run-dir", str(run_dir), "--stdio", *extra],
                                 env=env, cwd=str(ROOT))


def test_stdio_lists_the_tools_and_acts_as_the_tokens_agent(tmp_path):
    spec, paths = agent_run(tmp_path, "sqlite")
    tok = tokens(paths)

    async def session():
        async with Client(params(paths.root, tok["w2"])) as c:
            names = sorted(t.name for t in (await c.list_tools()).tools)
            me = await c.call_tool("connect", {})
            claimed = await c.call_tool("claim", {"task": "b"})
            bad = await c.call_tool("claim", {"task": "b", "worker_id": "w1"})
            return names, me, claimed, bad

    names, me, claimed, bad = anyio.run(session)
    assert names == sorted(TOOLS)
    assert payload(me)["agent_id"] == "w2" and payload(claimed)["task"]["worker_id"] == "w2"
    assert bad.is_error and bad.structured_content["outcome"] == "denied"
    with open_store(spec.store_url) as store:
        rows = store.history(spec.run_id, entity="tool")
        assert [(r.entity_id, r.to_state, r.agent) for r in rows] == [("connect", "ok", "w2"), ("claim", "ok", "w2"), ("claim", "denied", "w2")]
        assert store.get_task(spec.run_id, "b").owner == "w2"


@pytest.mark.parametrize("token, why", [("orch.r1.forged", "ORCH_MCP_TOKEN: the token is not one of run r1's"),
                                        ("", "ORCH_MCP_TOKEN: no token (set it to the agent's token)")])
def test_stdio_refuses_a_bad_token_before_serving(tmp_path, token, why):
    _, paths = agent_run(tmp_path, "file")
    p = params(paths.root, token)
    out = subprocess.run([p.command, *p.args], env=p.env, cwd=p.cwd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [f"orch mcp: {why}"]


def test_another_runs_token_is_refused_by_name(tmp_path):
    _, paths = agent_run(tmp_path / "one", "sqlite", run_id="r1")
    _, other = agent_run(tmp_path / "two", "sqlite", run_id="r2")
    p = params(paths.root, tokens(other)["w1"])
    out = subprocess.run([p.command, *p.args], env=p.env, cwd=p.cwd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 1 and "the token belongs to run r2, not r1" in out.stderr
