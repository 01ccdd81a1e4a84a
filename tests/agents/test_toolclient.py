"""The agents' synchronous tool client against the real coordination server (a separate process,
streamable HTTP, the official SDK on both sides) on a prepared agent-driven run."""

from __future__ import annotations

import pytest

from coordfixtures import ServerProcess, agent_run, tokens
from coordstore import open_store
from coordstore.errors import AgentError

from agents.toolclient import ToolClient, ToolRefused

pytestmark = pytest.mark.usefixtures("no_git_identity")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One prepared run (a coordinator, w1 tagged py, w2) and its server, shared by the module's tests."""
    base = tmp_path_factory.mktemp("toolclient")
    spec, paths = agent_run(base)
    server = ServerProcess(paths.root)
    yield spec, paths, server
    server.stop()


def test_a_tools_json_comes_back_as_it_was_returned_lists_included(served):
    spec, paths, server = served
    with ToolClient(server.url, tokens(paths)["w2"]) as c:
        hello = c.call("connect", worker_id="w2")
        assert (hello["agent_id"], hello["role"], hello["run"]) == ("w2", "worker", spec.run_id)
        ready = c.call("list_tasks", ready=True)
        assert [t["id"] for t in ready] == ["a", "b", "box.1"] and all(isinstance(t, dict) for t in ready)
        # a list of one is still a list, and no match is an empty one
        assert [t["id"] for t in c.call("list_tasks", ready=True, limit=1)] == ["a"]
        assert c.call("list_tasks", owner="nobody") == []
        got = c.call("get", task="c")
        assert got["id"] == "c" and got["blocked_by"] == ["a"] and got["ready"] is False
        assert c.call("list_tasks", status="pending", parent=None)  # None arguments are left out, not sent


def test_refusals_say_their_outcome_a_lost_claim_included(served):
    spec, paths, server = served
    book = tokens(paths)
    with ToolClient(server.url, book["w1"]) as w1, ToolClient(server.url, book["w2"]) as w2:
        assert w1.call("claim", task="b")["task"]["status"] == "working"
        with pytest.raises(ToolRefused) as lost:
            w2.call("claim", task="b")
        assert lost.value.lost and lost.value.outcome == "lost" and "no longer available" in lost.value.text
        with pytest.raises(ToolRefused) as bad:
            w2.call("update", task="b", status="done")
        assert bad.value.outcome == "error" and not bad.value.lost and "status" in bad.value.text
        with pytest.raises(ToolRefused) as denied:
            w2.call("connect", worker_id="w1")
        assert denied.value.outcome == "denied"
    with open_store(spec.store_url) as s:
        rows = [(r.entity_id, r.agent, r.to_state) for r in s.history(spec.run_id, entity="tool")]
    assert ("claim", "w2", "lost") in rows and ("update", "w2", "error") in rows and ("connect", "w2", "denied") in rows


def test_a_forged_token_or_an_unreachable_server_is_an_agent_error(served, tmp_path):
    spec, paths, server = served
    with pytest.raises(AgentError, match="cannot connect"):
        ToolClient(server.url, f"orch.{spec.run_id}.forged")
    with pytest.raises(AgentError, match="must both be set"):
        ToolClient(server.url, "")
    # a server that goes away mid-session: the next call says so, and closing is still quiet
    _, other = agent_run(tmp_path, run_id="r2")
    gone = ServerProcess(other.root)
    c = ToolClient(gone.url, tokens(other)["w2"])
    assert c.call("list_tasks", ready=True)
    gone.stop()
    with pytest.raises(AgentError, match=gone.url):
        c.call("list_tasks", ready=True)
    c.close()
    c.close()
    with pytest.raises(AgentError, match="closed"):
        c.call("list_tasks")
