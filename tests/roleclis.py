"""A real CLI's side of a conversation with the model server's role scripts, for the tests: each
turn sent over real HTTP in the CLI's own API format and tool names, tool results given back as
that CLI shapes them (as the installed CLIs were seen to): claude (Anthropic messages,
``mcp__orch__*``, a list result as its structured content ``{"result": [...]}``), codex (OpenAI
responses, orch's tools inside a ``mcp__orch`` namespace, results after ``Wall time: ...\nOutput:\n``),
opencode (OpenAI chat, ``orch_*``, the tool's text), gemini (generateContent, ``mcp_orch_*`` -- bare
names in older versions --, results inside ``<untrusted_context>``). Shell calls run for real."""

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


@pytest.fixture
def worktree(tmp_path):
    """A git worktree for a conversation's shell calls (never the test's own directory); a test
    module imports it to use it."""
    return make_repo(tmp_path / "wt", {"README.md": "demo\n"})
