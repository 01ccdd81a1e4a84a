"""The scripted model server playing roles for real CLIs: each test holds a conversation over real
HTTP in a CLI's own API format and tool names, feeding tool results back as that CLI shapes them
(as the installed CLIs were seen to): claude (Anthropic messages, ``mcp__orch__*``, a list result
as its structured content ``{"result": [...]}``), codex (OpenAI responses, orch's tools inside a
``mcp__orch`` namespace, results after ``Wall time: ...\nOutput:\n``), opencode (OpenAI chat,
``orch_*``, the tool's text), gemini (generateContent, ``mcp_orch_*`` -- bare names in older
versions --, results inside ``<untrusted_context>``). Shell calls run for real in a git worktree.
``Cli`` is the driver the real-server tests reuse."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gitfixtures import make_repo
from orchestrator.coordination.schemas import TOOL_PARAMS
from orchestrator.modelserver import session_url
from orchestrator.modelserver.history import mcp_result, tool_result

ORCH = list(TOOL_PARAMS)
# cli -> (API, its shell tool, how it names orch's tool T)
CLIS = {"claude": ("anthropic", "Bash", "mcp__orch__{}"), "codex": ("responses", "exec_command", "mcp__orch__{}"),
        "opencode": ("chat", "bash", "orch_{}"), "gemini": ("gemini", "run_shell_command", "mcp_orch_{}"),
        "gemini-bare": ("gemini", "run_shell_command", "{}")}
CODEX_NAMESPACE = "mcp__orch"
FAST = {"poll_s": 0.01, "poll_max_s": 0.04}


@dataclass
class Reply:
    status: int
    calls: list[tuple[str, str, dict]] = field(default_factory=list)  # (id, name, input)
    text: str = ""
    headers: dict = field(default_factory=dict)

    @property
    def named(self) -> list[tuple[str, dict]]:
        return [(n, i) for _, n, i in self.calls]


class Cli:
    """One CLI's conversation with the server: its API, its tools, its way of sending results back.
    ``by_id``: codex's way of continuing a response by ``previous_response_id`` alone."""

    def __init__(self, srv, cli: str, base: str, by_id: bool = False, shell_cwd: Path | None = None, tools: list[str] | None = None):
        self.srv, self.cli, self.base, self.by_id, self.cwd = srv, cli, base, by_id, shell_cwd
        self.api, self.shell, fmt = CLIS[cli]
        self.bare = {fmt.format(t): t for t in ORCH}
        self.tools = tools if tools is not None else [self.shell, *self.bare]
        self.history: list[dict] = [] if self.api != "chat" else [{"role": "system", "content": "You are an agent."}]
        self.history.append(self._user("Play your role in the run until it is over."))
        self.fresh: list[dict] = list(self.history)  # items not yet sent (by_id)
        self.last_id: str | None = None

    # ---------------------------------------------------------------- the wire
    def _user(self, text: str) -> dict:
        return {"role": "user", "parts": [{"text": text}]} if self.api == "gemini" else {"role": "user", "content": text}

    def _declared(self) -> list[dict]:
        schema = {"type": "object", "properties": {}}
        if self.api == "anthropic":
            return [{"name": n, "description": n, "input_schema": schema} for n in self.tools]
        if self.api == "chat":
            return [{"type": "function", "function": {"name": n, "parameters": schema}} for n in self.tools]
        if self.api == "responses":  # codex: an MCP server's tools inside a namespace
            inner = [{"type": "function", "name": self.bare[n], "parameters": schema} for n in self.tools if n in self.bare]
            return [{"type": "function", "name": n, "parameters": schema} for n in self.tools if n not in self.bare] + \
                ([{"type": "namespace", "name": CODEX_NAMESPACE, "description": "orch", "tools": inner}] if inner else [])
        return [{"functionDeclarations": [{"name": n, "parameters": schema} for n in self.tools]}]

    def _request(self) -> tuple[str, dict, dict]:
        if self.api == "anthropic":
            return "/v1/messages", {"x-api-key": self.srv.key}, {"model": "m", "max_tokens": 100, "messages": self.history,
                                                                   "tools": self._declared()}
        if self.api == "chat":
            return "/v1/chat/completions", {"authorization": f"Bearer {self.srv.key}"}, {
                "model": "g", "messages": self.history, "tools": self._declared()}
        if self.api == "responses":
            body = {"model": "g", "tools": self._declared(), "input": self.fresh if self.by_id else self.history}
            if self.by_id and self.last_id:
                body["previous_response_id"] = self.last_id
            return "/v1/responses", {"authorization": f"Bearer {self.srv.key}"}, body
        return "/v1beta/models/gemini-x:generateContent", {"x-goog-api-key": self.srv.key}, {
            "contents": self.history, "tools": self._declared()}

    def send(self, timeout: float = 30) -> Reply:
        path, headers, body = self._request()
        req = urllib.request.Request(self.base + path, json.dumps(body).encode(), {"content-type": "application/json", **headers})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                data = json.loads(r.read())
        except urllib.error.HTTPError as e:
            return Reply(e.code, text=e.read().decode(), headers=dict(e.headers))
        reply = self._read(data)
        return reply

    def _read(self, data: dict) -> Reply:
        reply = Reply(200)
        if self.api == "anthropic":
            self.history.append({"role": "assistant", "content": data["content"]})
            reply.text = "".join(b.get("text", "") for b in data["content"] if b["type"] == "text")
            reply.calls = [(b["id"], b["name"], b["input"]) for b in data["content"] if b["type"] == "tool_use"]
        elif self.api == "chat":
            msg = data["choices"][0]["message"]
            self.history.append({k: v for k, v in msg.items() if k in ("role", "content", "tool_calls")})
            reply.text = msg.get("content") or ""
            reply.calls = [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in msg.get("tool_calls") or []]
        elif self.api == "responses":
            self.history += data["output"]
            self.fresh, self.last_id = [], data["id"]
            reply.text = "".join(c["text"] for it in data["output"] if it["type"] == "message" for c in it["content"])
            reply.calls = [(it["call_id"], f"{it['namespace']}__{it['name']}" if it.get("namespace") else it["name"],
                            json.loads(it["arguments"])) for it in data["output"] if it["type"] == "function_call"]
        else:
            content = data["candidates"][0]["content"]
            self.history.append(content)
            reply.text = "".join(p.get("text", "") for p in content["parts"])
            reply.calls = [(p["functionCall"]["id"], p["functionCall"]["name"], p["functionCall"]["args"])
                           for p in content["parts"] if "functionCall" in p]
        return reply

    def give(self, reply: Reply, results: list[tuple[str, bool]]) -> None:
        """Send ``results`` ((text, is it an error) per call of ``reply``) back as this CLI does."""
        if self.api == "anthropic":  # claude sends an MCP tool's structured content: a list as {"result": [...]}
            self.history.append({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": cid, "is_error": err, "content": structured(text) if name in self.bare else text}
                for (cid, name, _), (text, err) in zip(reply.calls, results)]})
        elif self.api == "chat":
            self.history += [{"role": "tool", "tool_call_id": cid, "content": ("Error: " if err else "") + text}
                             for (cid, _, _), (text, err) in zip(reply.calls, results)]
        elif self.api == "responses":
            items = [{"type": "function_call_output", "call_id": cid,
                      "output": (json.dumps({"content": [{"type": "text", "text": text}], "isError": True}) if err else
                                 "Wall time: 0.0123 seconds\nOutput:\n" + structured(text)) if name in self.bare else text}
                     for (cid, name, _), (text, err) in zip(reply.calls, results)]
            self.history += items
            self.fresh += items
        else:
            self.history.append({"role": "user", "parts": [
                {"functionResponse": {"id": cid, "name": name, "response": {"error": text} if err else
                                      {"output": f"<untrusted_context>\n{text}\n</untrusted_context>" if name in self.bare else text}}}
                for (cid, name, _), (text, err) in zip(reply.calls, results)]})

    # ---------------------------------------------------------------- running calls
    def shell_command(self, inp: dict) -> str:
        cmd = inp.get("command", inp.get("cmd"))
        return cmd[-1] if isinstance(cmd, list) else cmd

    def run_shell(self, inp: dict) -> tuple[str, bool]:
        assert self.cwd is not None, "a Cli that runs shell calls needs shell_cwd (never the test's own directory)"
        p = subprocess.run(["bash", "-c", self.shell_command(inp)], cwd=self.cwd, capture_output=True, text=True, timeout=60)
        return f"Exit code: {p.returncode}\nOutput:\n{p.stdout}{p.stderr}", p.returncode != 0

    def step(self, orch) -> Reply:
        """One turn: send, run each call (orch's tools by ``orch(bare, args) -> (text, error)``), give back."""
        reply = self.send()
        assert reply.status == 200, reply.text
        results = [orch(self.bare[n], i) if n in self.bare else self.run_shell(i) for _, n, i in reply.calls]
        if reply.calls:
            self.give(reply, results)
        return reply


def structured(text: str) -> str:
    """An MCP tool's structured content as claude and codex send it: a list wrapped as ``{"result": [...]}``."""
    return json.dumps({"result": json.loads(text)}) if text.startswith("[") else text


def role_url(srv, agent: str, script: str, spawn: int = 1, worktree=None, seed: int = 7, **options) -> str:
    return session_url(srv.url, session=f"{agent}.{spawn}", script=script, worktree=str(worktree) if worktree else None,
                       seed=seed, agent=agent, run="r1", options={**FAST, **options})


def ok(value) -> tuple[str, bool]:
    return json.dumps(value), False


def bare(cli: Cli, reply: Reply) -> list[tuple[str, dict]]:
    """The reply's calls with orch's tools by their bare names and shell calls as ``shell``."""
    return [(cli.bare.get(n, "shell" if n == cli.shell else n), i) for n, i in reply.named]


def task(tid: str, status: str = "pending", **kw) -> dict:
    return {"id": tid, "title": f"do {tid}", "status": status, "owner": None, "parent": None, "priority": 0, "points": 1,
            "tags": [], "needed_tags": [], "wanted_tags": [], "ready": status == "pending", "container": False, **kw}


def agent(aid: str, role: str = "worker", tags=None, tasks=()) -> dict:
    return {"id": aid, "role": role, "tags": tags, "status": "idle", "current_task": None, "tasks": list(tasks)}


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
@pytest.fixture
def worktree(tmp_path):
    return make_repo(tmp_path / "wt", {"README.md": "demo\n"})


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


# ---------------------------------------------------------------- the coordinator
def test_the_coordinator_assigns_ready_tasks_to_idle_workers_whose_tags_fit(serve):
    srv = serve("sim")
    c = Cli(srv, "claude", role_url(srv, "coordinator", "coordinator"))
    c.step(lambda t, a: ok({"agent_id": "coordinator"}))
    r = c.step(lambda t, a: ok([task("a", needed_tags=["py"]), task("b", priority=3), task("c"), task("box", container=True)]))
    assert bare(c, r) == [("list_tasks", {"status": "pending", "ready": True})]
    agents = [agent("coordinator", "coordinator"), agent("w1", tags=["py"]), agent("w2", tags=["js"]), agent("w3", tasks=["z"])]
    assert bare(c, c.step(lambda t, a: ok(agents))) == [("list_agents", {})]
    made = []
    for _ in range(2):
        r = c.step(lambda t, a: ok({"success": True, "assignee": a["assignee"]}))
        made += [i for _, i in bare(c, r)]
    # b first (priority); w1 and w2 both fit it, neither had one: the first; a needs py and w1 is taken: c
    assert made == [{"task": "b", "assignee": "w1"}, {"task": "c", "assignee": "w2"}]
    r = c.send()
    assert bare(c, r) == [("list_tasks", {"status": "pending", "ready": True})]  # every idle worker served: look again


def test_the_coordinator_gives_a_task_that_came_back_to_another_worker_and_stops_when_all_is_terminal(serve, tmp_path):
    srv = serve("sim")
    c = Cli(srv, "gemini", role_url(srv, "coordinator", "coordinator"), shell_cwd=tmp_path)
    c.step(lambda t, a: ok({"agent_id": "coordinator"}))
    c.step(lambda t, a: ok([task("a")]))
    c.step(lambda t, a: ok([agent("w1"), agent("w2")]))
    r = c.step(lambda t, a: ok({"success": True}))
    assert bare(c, r) == [("update", {"task": "a", "assignee": "w1"})]
    c.step(lambda t, a: ok([task("a")]))  # a came back pending
    c.step(lambda t, a: ok([agent("w1"), agent("w2")]))
    r = c.step(lambda t, a: ("update: assignee 'w2' is stalled", True))
    assert bare(c, r) == [("update", {"task": "a", "assignee": "w2"})]  # not w1 again
    r = c.step(lambda t, a: ok([]))
    assert bare(c, r)[0][0] == "shell"  # refused, nothing else to give: a wait
    c.step(lambda t, a: ok([]))
    r = c.step(lambda t, a: ok([task("a", "completed")]))
    assert bare(c, r) == [("list_tasks", {})]
    r = c.send()
    assert not r.calls and "The run is over." in r.text


# ---------------------------------------------------------------- the lead
def test_the_lead_splits_coarse_leaves_then_hands_subtrees_out_biggest_first(serve, tmp_path):
    srv = serve("sim")
    c = Cli(srv, "codex", role_url(srv, "lead", "lead", policy="hybrid", decompose={"over_points": 5, "parts": 2,
                                                                                      "sequential": True}), shell_cwd=tmp_path)
    c.step(lambda t, a: ok({"agent_id": "lead"}))
    graph = [task("X", container=True, ready=False), task("x1", parent="X", points=8), task("x2", parent="X", points=2),
             task("Y", container=True, ready=False), task("y1", parent="Y", points=3)]
    r = c.step(lambda t, a: ok(graph))
    assert bare(c, r) == [("list_tasks", {})]
    r = c.step(lambda t, a: ok({**task("x1", parent="X", points=8), "time_estimate_ms": 80000}))
    assert bare(c, r) == [("get", {"task": "x1"})]
    r = c.step(lambda t, a: ok({"created": ["x1-part1", "x1-part2"], "root": "x1-part1", "count": 2}))
    (name, args), = bare(c, r)
    assert name == "create_tree" and args["parent"] == "x1" and [n["id"] for n in args["tree"]] == ["x1-part1", "x1-part2"]
    assert all(n["tags"] == ["part"] and n["points"] == 4 for n in args["tree"])
    r = c.step(lambda t, a: ok({"success": True}))
    assert bare(c, r) == [("link", {"from": "x1-part1", "to": "x1-part2", "type": "blocks"})]
    graph = [task("X", container=True, ready=False), task("x1", parent="X", container=True), task("x1-part1", parent="x1", points=4, tags=["part"]),
             task("x1-part2", parent="x1", points=4, tags=["part"]), task("x2", parent="X", points=2),
             task("Y", container=True, ready=False), task("y1", parent="Y", points=3)]
    r = c.step(lambda t, a: ok(graph))
    assert bare(c, r) == [("list_tasks", {})]
    workers = [agent("lead", "lead"), agent("w1"), agent("w2")]
    r = c.step(lambda t, a: ok(workers))
    assert bare(c, r) == [("list_agents", {})]
    r = c.step(lambda t, a: ("Exit code: 0", False))
    assert bare(c, r)[0][0] == "shell"  # the first sight of the workers: wait until the set holds
    c.step(lambda t, a: ok(graph))
    r = c.step(lambda t, a: ok(workers))
    assert bare(c, r) == [("list_agents", {})]
    r = c.step(lambda t, a: ok({"success": True}))
    assert bare(c, r) == [("update", {"task": "X", "assignee": "w1"})]  # 10 points of work left
    r = c.step(lambda t, a: ok({"success": True}))
    assert bare(c, r) == [("update", {"task": "Y", "assignee": "w2"})]  # the least loaded
    assert bare(c, c.send()) == [("list_tasks", {})]


# ---------------------------------------------------------------- the decomposer
def test_a_decomposer_gives_a_coarse_task_back_splits_it_and_works_parts_whole(serve, worktree):
    srv = serve("sim", worktrees=[worktree])
    c = Cli(srv, "opencode", role_url(srv, "w1", "decomposer", worktree=worktree, policy="pull",
                                      decompose={"over_points": 5, "parts": [3, 3]}), shell_cwd=worktree)
    c.step(lambda t, a: ok({"agent_id": "w1"}))
    c.step(lambda t, a: ok([task("big", points=9)]))
    c.step(lambda t, a: ok({"success": True, "task": {"id": "big", "attempt": 1}}))
    r = c.step(lambda t, a: ok({**task("big", "working", points=9), "time_estimate_ms": 90000, "attempt": 1}))
    assert bare(c, r) == [("get", {"task": "big"})]
    r = c.step(lambda t, a: ok({"success": True, "task": {"id": "big", "status": "pending"}}))
    assert bare(c, r) == [("update", {"task": "big", "status": "pending", "reason": "decomposing into subtasks"})]
    r = c.step(lambda t, a: ok({"created": ["big-part1", "big-part2", "big-part3"]}))
    (name, args), = bare(c, r)
    assert name == "create_tree" and args["parent"] == "big" and len(args["tree"]) == 3
    assert all(n["time_estimate_ms"] == 30000 for n in args["tree"])
    part = task("big-part1", parent="big", points=3, tags=["part"])
    r = c.step(lambda t, a: ok([part]))
    assert bare(c, r) == [("list_tasks", {"ready": True})]
    c.step(lambda t, a: ok({"success": True, "task": {"id": "big-part1", "attempt": 1}}))
    r = c.step(lambda t, a: ok({**part, "status": "working", "attempt": 1, "time_estimate_ms": 30000}))
    assert bare(c, r) == [("get", {"task": "big-part1"})]
    assert bare(c, c.send())[0][0] == "shell"  # a part is worked whole, never split again


# ---------------------------------------------------------------- faults on demand
def test_a_hang_at_turn_n_silences_the_agent_once_over_all_its_sessions(serve):
    srv = serve("sim")
    faults = [{"turn": 1, "kind": "hang"}]
    first = Cli(srv, "claude", role_url(srv, "coordinator", "coordinator", spawn=1, faults=faults))
    first.step(lambda t, a: ok({"agent_id": "coordinator"}))
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        first.send(timeout=1)  # the coordinator goes silent
    respawned = Cli(srv, "claude", role_url(srv, "coordinator", "coordinator", spawn=2, faults=faults))
    respawned.step(lambda t, a: ok({"agent_id": "coordinator"}))
    assert bare(respawned, respawned.send()) == [("list_tasks", {"status": "pending", "ready": True})]
    assert [(x["session"], x["turn"], x["fault"]) for x in srv.requests] == [
        ("coordinator.1", 0, None), ("coordinator.1", 1, "hang"), ("coordinator.2", 0, None), ("coordinator.2", 1, None)]


def test_a_429_on_demand_then_the_turn_itself(serve):
    srv = serve("sim")
    c = Cli(srv, "gemini", role_url(srv, "w1", "worker", faults=[{"turn": 1, "kind": "rate_limit", "retry_after": 0.5}]))
    c.step(lambda t, a: ok({"agent_id": "w1"}))
    r = c.send()
    assert r.status == 429 and "RESOURCE_EXHAUSTED" in r.text and r.headers["retry-after"] == "0.5"
    assert bare(c, c.send()) == [("list_tasks", {"ready": True})]


@pytest.mark.parametrize("loops,second_loops", [(True, True), (1, False)])
def test_a_worker_looping_on_claim_repeats_the_identical_call(serve, worktree, loops, second_loops):
    srv = serve("sim", worktrees=[worktree])
    for spawn, looping in ((1, True), (2, second_loops)):
        c = Cli(srv, "codex", role_url(srv, "w1", "worker", spawn=spawn, worktree=worktree, loop_on_claim=loops),
                shell_cwd=worktree)
        c.step(lambda t, a: ok({"agent_id": "w1"}))
        c.step(lambda t, a: ok([task("a")]))
        claims = [c.step(lambda t, a: ok({"success": True, "task": {"id": "a"}, "already": True})) for _ in range(4)]
        said = [bare(c, r) for r in claims]
        if looping:
            assert said == [[("claim", {"task": "a"})]] * 4
        else:
            assert said[:2] == [[("claim", {"task": "a"})], [("get", {"task": "a"})]]


def test_a_role_turn_streams_and_a_task_line_in_the_role_prompt_does_not_make_it_a_task_session(serve):
    from modelserver_helpers import anth

    srv = serve("sim")
    url = role_url(srv, "w1", "worker", policy="pull")
    tools = [{"name": f"mcp__orch__{t}", "description": t, "input_schema": {"type": "object", "properties": {}}} for t in ORCH]
    with anth(srv, base=url).messages.stream(model="m", max_tokens=100, tools=tools, messages=[
            {"role": "user", "content": "Task a: do a\nYou are w1; claim tasks until the run is over."}]) as s:
        m = s.get_final_message()
    assert [(b.name, b.input) for b in m.content if b.type == "tool_use"] == [("mcp__orch__connect", {"worker_id": "w1"})]
    assert [(x["session"], x["task"], x["agent"], x["stream"]) for x in srv.requests] == [("w1.1", None, "w1", True)]


def test_coordination_turns_report_the_sims_turn_tokens_and_work_turns_their_plans(serve, worktree):
    srv = serve("sim", worktrees=[worktree])
    c = Cli(srv, "claude", role_url(srv, "w1", "worker", worktree=worktree, turn_tokens={"in": 900, "out": 50}),
            shell_cwd=worktree)
    c.step(lambda t, a: ok({"agent_id": "w1"}))
    c.step(lambda t, a: ok([task("a")]))
    c.step(lambda t, a: ok({"success": True, "task": {"id": "a"}}))
    c.step(lambda t, a: ok({**task("a", "working"), "attempt": 1, "time_estimate_ms": 60000}))
    c.send()
    used = [(x["usage"]["in"], x["usage"]["out"]) for x in srv.requests]
    assert used[:4] == [(900, 50)] * 4 and used[4] != (900, 50)  # connect, list, claim, get; then the sim's first step


def test_a_look_the_cli_keeps_refusing_ends_the_session_saying_why(serve, tmp_path):
    srv = serve("sim")
    c = Cli(srv, "claude", role_url(srv, "coordinator", "coordinator"), shell_cwd=tmp_path)
    c.step(lambda t, a: ok({"agent_id": "coordinator"}))
    refused = "Claude requested permissions to use mcp__orch__list_agents, but you haven't granted it yet."
    said = [bare(c, c.step(lambda t, a: (refused, True) if t == "list_agents" else ok([task("a")])))[0][0] for _ in range(8)]
    assert said == ["list_tasks", "list_agents", "shell"] * 2 + ["list_tasks", "list_agents"]  # refused: nobody idle, a wait
    r = c.send()
    assert not r.calls and "list_agents failed 3 times in a row" in r.text and "requested permissions" in r.text
