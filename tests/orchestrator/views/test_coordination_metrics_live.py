"""The coordination metrics of a history written by the real coordination server: a prepared
agent-driven run, `python -m orchestrator.coordination` over streamable HTTP, agents calling it
with the official SDK client and their own tokens. Each metric is recounted from the history (and
from what the test's agents saw) on both store backends."""

from __future__ import annotations

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from coordstore import open_store
from orchestrator.views.metrics import compute_metrics

from coordfixtures import ServerProcess, agent_run, tokens

pytestmark = pytest.mark.usefixtures("no_git_identity")


class Agents:
    """One SDK client per agent, each with its bearer token; every call and whether it was refused."""

    def __init__(self, url: str, book: dict[str, str]):
        self.url, self.book = url, book
        self.calls: list[tuple[str, str, bool]] = []  # (agent, tool, refused)

    async def call(self, agent: str, tool: str, **args):
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {self.book[agent]}"}, timeout=60) as http:
            async with Client(streamable_http_client(self.url, http_client=http)) as c:
                r = await c.call_tool(tool, args)
        self.calls.append((agent, tool, bool(r.is_error)))
        return r


async def play(agents: Agents, worktree_w2) -> None:
    a = agents.call
    for who in ("coordinator", "w1", "w2"):
        await a(who, "connect")
    await a("coordinator", "list_tasks", status="pending")
    await a("coordinator", "update", task="a", assignee="w1")
    await a("coordinator", "update", task="nope", assignee="w1")  # an error row
    await a("coordinator", "log_metrics", task="a", values=[5, 5, 0, 0])
    assert not (await a("w2", "claim", task="b")).is_error
    assert (await a("w1", "claim", task="b")).is_error  # taken: lost (w1 works nothing yet: no other refusal)
    await a("w1", "update", task="a", status="working")
    r = await a("w2", "create_tree", parent="box", tree={"title": "more", "children": [{"title": "m1"}, {"title": "m2"}]})
    assert not r.is_error
    (worktree_w2 / "b.txt").write_text("b, done by w2\n")
    assert not (await a("w2", "update", task="b", status="completed")).is_error


@pytest.mark.parametrize("scheme", ["sqlite", "file"])
def test_metrics_of_what_the_real_server_recorded(tmp_path, scheme):
    spec, paths = agent_run(tmp_path, scheme)
    server = ServerProcess(paths.root)
    try:
        agents = Agents(server.url, tokens(paths))
        anyio.run(play, agents, paths.worktree_of("w2"))
    finally:
        server.stop()
    with open_store(spec.store_url) as store:
        dump = store.dump_run(spec.run_id)
    m = compute_metrics(dump)
    hist = dump.history
    tool_rows = [r for r in hist if r.entity == "tool"]
    assert [(r.agent, r.entity_id) for r in tool_rows] == [(who, tool) for who, tool, _ in agents.calls]
    assert m["coordination_calls"] == len(agents.calls) == 12
    assert m["tasks_completed"] == 1 and m["coordination_calls_per_task"] == 12.0
    assert m["coordination_calls_by_outcome"] == {"ok": 10, "error": 1, "lost": 1, "denied": 0}
    assert sum(refused for *_, refused in agents.calls) == 2

    coord = [r for r in tool_rows if r.agent == "coordinator"]
    assert m["coordinator_calls"] == len(coord) == 5
    assert m["coordinator_busy_ms"] == pytest.approx(sum(r.data["latency_ms"] for r in coord), abs=1e-3)
    assert m["coordinator_busy_ms"] > 0
    assert m["coordinator_tokens"] == 10  # its log_metrics slots: it sent no tokens events

    [assigned] = [r for r in hist if r.entity == "task" and r.entity_id == "a" and r.to_state == "assigned"]
    [working] = [r for r in hist if r.entity == "task" and r.entity_id == "a" and r.to_state == "working"]
    assert assigned.data["by"] == "coordinator"
    assert m["assignment_latency_ms"] == m["assignment_latency_p50_ms"] == working.ts_ms - assigned.ts_ms

    # the lost claim is a store row and a tool row: one attempt
    claims = [r.to_state for r in hist if r.entity == "claim"]
    assert sorted(claims) == ["lost", "won"]
    assert (m["claim_attempts"], m["claim_conflicts"], m["claim_contention"]) == (2, 1, 0.5)

    w2 = [r for r in tool_rows if r.agent == "w2"]
    create = next(i for i, r in enumerate(w2) if r.entity_id == "create_tree")
    assert m["decomposition_ms"] == w2[create].ts_ms - w2[create - 1].ts_ms
    added = {r.entity_id: r.agent for r in hist if r.entity == "task" and r.reason == "added"}
    assert len(added) == m["tasks_added"] == 3 and set(added.values()) == {"w2"}  # who created what
    assert m["decomposed_tasks"] == 1 and m["subtasks_per_decomposed_task"] == 3.0  # box gained more, m1, m2
    assert m["duplicated_work"] == m["duplicated_commits"] == 0
