"""The coordination server as agents meet it: ``python -m orchestrator.coordination`` in its own
process, the official MCP SDK client over streamable HTTP, each agent with its run-scoped token."""

from __future__ import annotations

import anyio
import httpx2
import pytest

from coordstore import open_store
from gitfixtures import git, run_git

from coordfixtures import ServerProcess, agent_run, http_client, payload, tokens
from orchestrator.coordination.tools import TOOLS

pytestmark = pytest.mark.usefixtures("no_git_identity")


@pytest.fixture
def served(tmp_path, backend):
    spec, paths = agent_run(tmp_path, backend)
    server = ServerProcess(paths.root)
    yield spec, paths, server, tokens(paths)
    assert server.stop() == 0  # SIGTERM: a clean stop


def history(spec, entity: str = "tool"):
    with open_store(spec.store_url) as store:
        return store.history(spec.run_id, entity=entity)


def test_the_sdk_client_lists_every_tool_and_calls_each_one(served):
    spec, paths, server, tok = served

    async def session():
        async with http_client(server.url, tok["w1"]) as c:
            listed = {t.name: t for t in (await c.list_tools()).tools}
            assert sorted(listed) == sorted(TOOLS)
            assert all(t.description for t in listed.values())
            assert listed["claim"].input_schema["required"] == ["task"]
            assert set(listed["link"].input_schema["properties"]) == {"from", "to", "type", "agent"}
            assert listed["update"].input_schema["properties"]["status"]["anyOf"][0]["enum"][2] == "completed"
            out = {}
            for name, args in [("connect", {"worker_id": "w1", "workflow": "swarm", "tags": ["py"]}),
                               ("list_agents", {}), ("list_tasks", {"ready": True}), ("get", {"task": "a"}),
                               ("claim", {"task": "a"}), ("heartbeat", {}), ("thinking", {"thought": "on a", "tasks": ["a"]}),
                               ("attach", {"task": "a", "name": "notes", "content": "hello"}),
                               ("attachments", {"task": "a", "content": True}),
                               ("log_metrics", {"task": "a", "cost_usd": 0.25, "values": [100, 50, 0, 7]}),
                               ("create", {"title": "follow-up", "blocked_by": ["a"]}),
                               ("create_tree", {"tree": {"title": "later", "children": [{"title": "l1"}, {"title": "l2"}]}}),
                               ("link", {"from": "b", "to": "c"}), ("unlink", {"from": "b", "to": "c"}),
                               ("update", {"task": "a", "status": "completed"}), ("disconnect", {})]:
                r = await c.call_tool(name, args)
                assert not r.is_error, (name, r.content[0].text)
                out[name] = payload(r)
                assert r.structured_content == (out[name] if isinstance(out[name], dict) else {"result": out[name]})
            return out

    out = anyio.run(session)
    assert out["connect"]["agent_id"] == "w1" and out["connect"]["role"] == "worker" and out["connect"]["run"] == "r1"
    assert [t["id"] for t in out["list_tasks"]] == ["a", "b", "box.1"]
    assert out["get"]["dependents"] == ["c"] and out["claim"]["task"]["status"] == "working"
    assert out["attachments"] == [{"name": "notes", "mime": "text/plain", "size": 5, "by": "w1", "ts_ms": out["attachments"][0]["ts_ms"],
                                   "content": "hello"}]
    assert out["log_metrics"]["metrics"] == [100, 50, 0, 7, 0, 0, 0, 0] and len(out["create_tree"]["created"]) == 3
    assert out["update"]["status"] == "completed" and out["update"]["merge"]["ok"]
    rows = history(spec)
    assert [r.entity_id for r in rows] == list(out) and {r.to_state for r in rows} == {"ok"} and {r.agent for r in rows} == {"w1"}
    assert all(r.data["latency_ms"] > 0 and len(r.data["args"]) == 16 for r in rows)


def test_bad_arguments_are_tool_errors_naming_the_argument_and_the_server_lives_on(served):
    spec, paths, server, tok = served
    cases = [("claim", {"task": 5}, "claim: argument 'task' is invalid"),  # the SDK's type check
             ("claim", {}, "claim: argument 'task' is required"),
             ("link", {"from": 3, "to": "a"}, "link: argument 'from' is invalid"),
             ("create_tree", {"tree": "flat"}, "create_tree: argument 'tree' is invalid"),
             ("claim", {"task": "nope"}, "claim: task 'nope' does not exist in run r1"),  # the tool's own checks
             ("update", {"task": "a", "status": "done"}, "update: status 'done' is not one of pending, working, completed, failed, cancelled"),
             ("log_metrics", {"task": "a", "values": [-1]}, "log_metrics: argument 'values' must be a list of at most 8 non-negative"),
             ("no_such_tool", {}, "unknown tool 'no_such_tool'")]

    async def session():
        async with http_client(server.url, tok["w2"]) as c:
            got = [await c.call_tool(name, args) for name, args, _ in cases]
            after = await c.call_tool("get", {"task": "a"})
            return got, after

    got, after = anyio.run(session)
    for r, (name, _, text) in zip(got, cases):
        assert r.is_error and r.content[0].text.startswith(text), (name, r.content[0].text)
        assert r.structured_content == {"error": r.content[0].text, "outcome": "error"}
    assert not after.is_error and payload(after)["id"] == "a"
    rows = history(spec)
    assert [(r.entity_id, r.to_state, r.agent) for r in rows] == [(n, "error", "w2") for n, _, _ in cases] + [("get", "ok", "w2")]
    assert [r.reason for r in rows[:-1]] == [r.content[0].text for r in got]


def test_forged_foreign_and_missing_tokens_get_401_and_no_tool_runs(served, tmp_path):
    spec, paths, server, tok = served
    _, other = agent_run(tmp_path / "other", run_id="r2")
    foreign = tokens(other)["w1"]
    forged = tok["w1"][:-4] + ("AAAA" if not tok["w1"].endswith("AAAA") else "BBBB")
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    expected = [(None, "no token"), ("Bearer " + forged, "is not one of run r1's"), ("Bearer " + foreign, "belongs to run r2, not r1"),
                ("Bearer not-a-token", "not an orch coordination token"), ("Basic " + tok["w1"], "no token")]
    for header, why in expected:
        r = httpx2.post(server.url, json=body, headers={"Authorization": header} if header else {})
        assert r.status_code == 401 and why in r.json()["error"] and r.headers["www-authenticate"].startswith("Bearer")

    async def sdk_with(token):
        async with http_client(server.url, token) as c:
            await c.call_tool("claim", {"task": "a"})

    for token in (forged, foreign):
        with pytest.raises(BaseException) as e:  # the SDK gives up during its handshake
            anyio.run(sdk_with, token)
        assert "error" in repr(e.value).lower()
    assert history(spec) == [] and history(spec, "claim") == []


def test_a_token_acts_as_its_own_agent_only(served):
    spec, paths, server, tok = served

    async def session():
        async with http_client(server.url, tok["w2"]) as c:
            return await c.call_tool("claim", {"task": "a", "worker_id": "w1"}), await c.call_tool("connect", {})

    denied, me = anyio.run(session)
    assert denied.is_error and denied.structured_content["outcome"] == "denied"
    assert denied.content[0].text == "claim: worker_id 'w1' is not you: this token acts as 'w2' only"
    assert payload(me)["agent_id"] == "w2"
    assert [(r.entity_id, r.to_state, r.agent) for r in history(spec)] == [("claim", "denied", "w2"), ("connect", "ok", "w2")]


def test_two_agents_racing_for_each_task_one_wins_and_the_other_lost(served):
    spec, paths, server, tok = served
    race = ["a", "b", "box.1"]

    async def racer(agent, results):
        async with http_client(server.url, tok[agent]) as c:
            await c.call_tool("connect", {})
            for task in race:
                results[(agent, task)] = await c.call_tool("claim", {"task": task})

    async def both():
        results = {}
        async with anyio.create_task_group() as tg:
            for agent in ("w1", "w2"):
                tg.start_soon(racer, agent, results)
        return results

    results = anyio.run(both)
    for task in race:
        won = [a for a in ("w1", "w2") if not results[(a, task)].is_error]
        lost = [a for a in ("w1", "w2") if results[(a, task)].is_error]
        assert len(won) == 1 and len(lost) == 1, task
        r = results[(lost[0], task)]
        assert r.structured_content["outcome"] == "lost" and f"task '{task}' is no longer available" in r.content[0].text
        with open_store(spec.store_url) as store:
            assert store.get_task(spec.run_id, task).owner == won[0]
        rows = [r for r in history(spec) if r.entity_id == "claim" and r.data["task"] == task]
        assert sorted((r.agent, r.to_state) for r in rows) == sorted([(won[0], "ok"), (lost[0], "lost")])
        claims = [r for r in history(spec, "claim") if r.entity_id == task]
        assert sorted((r.agent, r.to_state) for r in claims) == sorted([(won[0], "won"), (lost[0], "lost")])


def test_completing_over_http_commits_on_the_agents_branch_and_merges(served):
    spec, paths, server, tok = served
    wt = paths.worktree_of("w1")

    async def session():
        async with http_client(server.url, tok["w1"]) as c:
            assert not (await c.call_tool("claim", {"task": "box.1"})).is_error
            (wt / "box.txt").write_text("inside the box\n")
            return payload(await c.call_tool("update", {"task": "box.1", "status": "completed"}))

    done = anyio.run(session)
    branch = spec.agent_branch("w1")
    assert git(wt, "log", "-1", "--format=%s", branch) == "task box.1: first inside" == git(wt, "log", "-1", "--format=%s", done["commit"])
    assert run_git(wt, "merge-base", "--is-ancestor", branch, spec.merged_branch, check=False) == ""
    assert git(wt, "show", f"{spec.merged_branch}:box.txt") == "inside the box"
    with open_store(spec.store_url) as store:
        assert store.get_task(spec.run_id, "box.1").status == "completed"
        assert store.get_task(spec.run_id, "box.2").status == "pending"  # it follows box.1: ready now


def test_a_tree_created_by_one_agent_is_listed_for_another_with_its_author(served):
    spec, paths, server, tok = served

    async def session():
        async with http_client(server.url, tok["w1"]) as lead, http_client(server.url, tok["w2"]) as worker:
            made = payload(await lead.call_tool("create_tree", {"parent": "b", "tree": [{"title": "b part 1"}, {"title": "b part 2"}]}))
            seen = payload(await worker.call_tool("list_tasks", {"parent": "b", "ready": True}))
            return made, seen

    made, seen = anyio.run(session)
    assert [t["id"] for t in seen] == made["created"] and [t["title"] for t in seen] == ["b part 1", "b part 2"]
    added = [r for r in history(spec, "task") if r.reason == "added"]
    assert [(r.entity_id, r.agent, r.data["created_by"]) for r in added] == [(i, "w1", "w1") for i in made["created"]]
