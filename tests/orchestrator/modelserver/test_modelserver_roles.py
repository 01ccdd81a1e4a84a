"""The scripted model server playing a working role for real CLIs: each test holds a conversation
over real HTTP in a CLI's own API format and tool names (``roleclis.Cli``), feeding tool results
back as that CLI shapes them; shell calls run for real in a git worktree. The dispatching roles
(coordinator, lead), the decomposer and faults on demand: ``test_modelserver_roles_dispatch``."""

from __future__ import annotations

import json

import pytest

from orchestrator.modelserver import session_url
from orchestrator.modelserver.history import mcp_result, tool_result

from roleclis import CLIS, Cli, bare, ok, role_url, task, worktree  # noqa: F401 (worktree: a fixture)

# ---------------------------------------------------------------- reading results
def test_mcp_results_read_back_whatever_the_cli_wrapped_them_in():
    value = [{"id": "a", "status": "pending"}]
    text = json.dumps(value)
    assert mcp_result(text) == value  # opencode, gemini: the tool's text itself
    assert mcp_result(json.dumps({"result": value})) == value  # claude: the structured content
    assert mcp_result(json.dumps({"content": [{"type": "text", "text": text}], "isError": False})) == value  # an MCP result
    assert mcp_result(json.dumps({"content": [{"type": "text", "text": text}], "structuredContent": {"result": value}})) == value
    assert mcp_result("Wall time: 0.0295 seconds\nOutput:\n" + json.dumps({"result": value})) == value  # codex
    assert mcp_result(f"<untrusted_context>\n{text}\n</untrusted_context>") == value  # gemini
    assert tool_result(json.dumps({"error": "claim: lost", "outcome": "lost"}))[0]["outcome"] == "lost"
    assert mcp_result(json.dumps([{"type": "text", "text": text}])) == value  # bare content blocks
    assert tool_result(json.dumps({"content": [{"type": "text", "text": "claim: task 'a' is no longer available"}],
                                   "isError": True})) == ("claim: task 'a' is no longer available", True)
    assert tool_result("Error: claim: lost", flagged=False) == ("Error: claim: lost", False)  # not JSON: text, not ok
    assert mcp_result('MCP tool reported error for {"name": "claim"} with response: nothing') == \
        'MCP tool reported error for {"name": "claim"} with response: nothing'
    raw = [{"functionResponse": {"name": "claim", "response": {"content": [{"type": "text", "text": "lost"}], "isError": True}}}]
    assert tool_result("MCP tool 'claim' reported tool error for function call: {\"name\": \"claim\"} with response: "
                       + json.dumps(raw)) == ("lost", True)  # gemini-cli's error text


# ---------------------------------------------------------------- a worker, step by step
@pytest.mark.parametrize("cli", list(CLIS))
def test_a_pulling_worker_connects_claims_works_completes_and_stops_when_the_run_is_over(serve, worktree, cli):
    srv = serve("sim", worktrees=[worktree])
    c = Cli(srv, cli, role_url(srv, "w1", "worker", worktree=worktree, policy="pull"), shell_cwd=worktree)
    r = c.send()
    assert r.named == [(next(n for n, t in c.bare.items() if t == "connect"), {"worker_id": "w1"})]  # the CLI's own name
    c.give(r, [ok({"agent_id": "w1", "role": "worker"})])
    r = c.send()
    assert bare(c, r) == [("list_tasks", {"ready": True})]
    c.give(r, [ok([task("a", file_scope=["a.txt"]), task("b", container=True)])])
    r = c.send()
    assert bare(c, r) == [("claim", {"task": "a"})]
    c.give(r, [ok({"success": True, "task": {"id": "a", "status": "working", "attempt": 1}})])
    r = c.send()
    assert bare(c, r) == [("get", {"task": "a"})]
    c.give(r, [ok({**task("a", "working"), "file_scope": ["a.txt"], "attempt": 1, "time_estimate_ms": 60000, "meta": {}})])
    work = 0
    while True:  # the sim's plan for the task, as shell calls run for real in the worktree
        r = c.send()
        if any(n != "shell" for n, _ in bare(c, r)):
            break
        work += 1
        c.give(r, [c.run_shell(i) for _, _, i in r.calls])
    assert work >= 1 and "task a" in (worktree / "a.txt").read_text()
    assert bare(c, r) == [("update", {"task": "a", "status": "completed"})] and "Task a is done" in r.text
    c.give(r, [ok({"success": True, "task": "a", "status": "completed"})])
    r = c.send()
    assert bare(c, r) == [("list_tasks", {"ready": True})]
    c.give(r, [ok([])])
    r = c.send()
    assert bare(c, r) == [("list_tasks", {})]  # nothing ready: is the run over?
    c.give(r, [ok([task("a", "completed"), task("b", "cancelled", container=True)])])
    r = c.send()
    assert not r.calls and "The run is over." in r.text
    recs = [x for x in srv.requests if x["agent"] == "w1"]
    assert {x["script"] for x in recs} == {"worker"} and {x["session"] for x in recs} == {"w1.1"}
    assert [m["tool"] for x in recs for m in x["mcp"]][:4] == ["connect", "list_tasks", "claim", "get"]


def test_a_lost_claim_means_looking_again_and_empty_looks_wait_longer_and_longer(serve):
    srv = serve("sim")
    c = Cli(srv, "claude", role_url(srv, "w2", "worker", policy="pull", poll_s=0.5, poll_max_s=1))
    said = []

    def answer(*results):
        r = c.send()
        said.append(bare(c, r))
        c.give(r, list(results))
        return r

    answer(ok({"agent_id": "w2"}))
    answer(ok([task("a")]))
    answer(("claim: task 'a' is no longer available: it is working (owner w1)", True))
    answer(ok([task("a")]))  # a stale listing: the refused task is not claimed again before a wait
    answer(ok([task("a", "working", owner="w1")]))
    answer(("Exit code: 0\nOutput:\n", False))
    answer(ok([]))
    answer(ok([task("a", "working", owner="w1")]))
    answer(("Exit code: 0\nOutput:\n", False))
    answer(ok([]))
    answer(ok([task("a", "working", owner="w1")]))
    sleeps = [float(said.pop(i)[0][1]["command"].split()[1]) for i in (8, 5)][::-1]
    assert said == [[("connect", {"worker_id": "w2"})], [("list_tasks", {"ready": True})], [("claim", {"task": "a"})],
                    [("list_tasks", {"ready": True})], [("list_tasks", {})],
                    [("list_tasks", {"ready": True})], [("list_tasks", {})],
                    [("list_tasks", {"ready": True})], [("list_tasks", {})]]
    (name, args), = bare(c, c.send())
    sleeps.append(float(args["command"].split()[1]))
    # 0.5 then doubling, capped at 1, each jittered +-25% (no two alike: a CLI's loop detection sees no cycle)
    assert 0.375 <= sleeps[0] <= 0.625 and all(0.75 <= s <= 1.25 for s in sleeps[1:]) and len(set(sleeps)) == 3


def test_a_pushed_worker_takes_what_it_was_given_and_a_hybrid_one_its_subtree_first(serve):
    srv = serve("sim")
    push = Cli(srv, "opencode", role_url(srv, "w1", "worker", policy="push"))
    push.step(lambda t, a: ok({"agent_id": "w1"}))
    assert bare(push, push.step(lambda t, a: ok([task("x", "assigned", owner="w1")]))) == [
        ("list_tasks", {"owner": "w1", "status": "assigned"})]
    assert bare(push, push.send()) == [("claim", {"task": "x"})]
    hybrid = Cli(srv, "gemini", role_url(srv, "w2", "worker", policy="hybrid"))
    hybrid.step(lambda t, a: ok({"agent_id": "w2"}))
    graph = [task("X", "assigned", owner="w2", container=True, ready=False), task("x1", parent="X", priority=0),
             task("x2", parent="X", priority=5), task("Y", "assigned", owner="w1", container=True, ready=False),
             task("y1", parent="Y", priority=9)]
    r = hybrid.step(lambda t, a: ok(graph))
    assert bare(hybrid, r) == [("list_tasks", {})]
    assert bare(hybrid, hybrid.send()) == [("claim", {"task": "x2"})]  # inside its own subtree, best first


def test_codex_continuing_by_previous_response_id_alone_still_shows_the_script_its_calls(serve):
    srv = serve("sim")
    c = Cli(srv, "codex", role_url(srv, "w1", "worker", policy="pull"), by_id=True)
    c.step(lambda t, a: ok({"agent_id": "w1"}))
    c.step(lambda t, a: ok([task("a")]))
    c.step(lambda t, a: ("claim: task 'a' is no longer available", True))  # codex's wrapper says isError
    assert len(c.fresh) == 1 and c.last_id  # only the claim's result is sent, with the id of the response before
    assert bare(c, c.send()) == [("list_tasks", {"ready": True})]  # the lost claim seen, connect not repeated
    assert [x["turn"] for x in srv.requests] == [0, 1, 2, 3]


# ---------------------------------------------------------------- mcp names
@pytest.mark.parametrize("cli,name", [("claude", "mcp__orch__claim"), ("codex", "mcp__orch__claim"),
                                      ("opencode", "orch_claim"), ("gemini", "mcp_orch_claim"), ("gemini-bare", "claim")])
def test_portable_mcp_calls_take_each_clis_name_for_orchs_tool(serve, cli, name):
    srv = serve("sim")
    c = Cli(srv, cli, role_url(srv, "w1", "worker", policy="pull"))
    c.step(lambda t, a: ok({"agent_id": "w1"}))
    c.step(lambda t, a: ok([task("a")]))
    assert c.send().named == [(name, {"task": "a"})]


def test_a_cli_without_orchs_tools_hears_so_in_a_final_text(serve):
    srv = serve("sim")
    c = Cli(srv, "claude", role_url(srv, "w1", "worker"), tools=["Bash", "mcp__other__claim"])
    r = c.send()
    assert r.status == 200 and not r.calls and "orch's coordination tools are missing" in r.text and "connect" in r.text
    side = Cli(srv, "opencode", role_url(srv, "w1", "worker"), tools=[]).send()  # a title request: aside, no role turn
    assert side.status == 200 and side.text == "OK" and [x["side"] for x in srv.requests] == [False, True]


def test_bad_role_options_are_one_error_naming_the_option(serve):
    srv = serve("sim")
    for options, words in [({"policy": "swarm"}, "options.policy"), ({"poll_s": -1}, "poll_s=-1"),
                           ({"faults": [{"turn": "x", "kind": "hang"}]}, "options.faults.0"),
                           ({"faults": [{"turn": 1, "kind": "flood"}]}, "options.faults.0.kind"),
                           ({"loop_on_claim": "yes"}, "options.loop_on_claim")]:
        r = Cli(srv, "claude", role_url(srv, "w1", "worker", **options)).send()
        assert r.status == 400 and "script worker" in r.text and words in r.text, (options, r.text)
    r = Cli(srv, "claude", session_url(srv.url, session="x", script="worker")).send()
    assert r.status == 400 and "names no agent" in r.text
