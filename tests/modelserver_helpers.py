"""What the model server tests share: tool definitions as each API declares them, SDK clients
pointed at a server, file scripts, canned conversations. The ``serve`` fixture is in conftest."""

from __future__ import annotations

import json
from pathlib import Path

import anthropic
import openai

from orchestrator.modelserver import ModelServer

BASH = [{"name": "Bash", "description": "run a command", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}}]
CHAT_TOOLS = [{"type": "function", "function": {"name": "shell", "parameters": {
    "type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}}}}}]
RESP_TOOLS = [{"type": "function", "name": "exec_command", "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}}]


def script_file(tmp_path: Path, turns, name: str = "script.yaml") -> Path:
    import yaml

    p = tmp_path / name
    p.write_text(yaml.safe_dump(turns) if name.endswith(".yaml") else json.dumps(turns))
    return p


def anth(srv: ModelServer, base: str | None = None, **kw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base or srv.url, api_key=srv.key, max_retries=kw.pop("max_retries", 0), **kw)


def oai(srv: ModelServer, base: str | None = None, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=(base or srv.url) + "/v1", api_key=srv.key, max_retries=kw.pop("max_retries", 0), **kw)


def after_tools(n: int) -> list[dict]:
    """An Anthropic conversation that has had ``n`` tool-call turns."""
    msgs: list[dict] = [{"role": "user", "content": "go"}]
    for i in range(n):
        msgs += [{"role": "assistant", "content": [{"type": "tool_use", "id": f"t{i}", "name": "Bash", "input": {"command": "x"}}]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t{i}", "content": "ok"}]}]
    return msgs


def is_transport_error(e: BaseException) -> bool:
    """A broken or timed-out connection, as either SDK (or its HTTP library underneath) reports it."""
    names = {c.__name__ for c in type(e).__mro__}
    return bool(names & {"APIConnectionError", "APITimeoutError", "TransportError"})


TWO_TURNS = [{"text": "Looking.", "bash": "echo hi > a.txt", "usage": {"input": 1200, "output": 80, "cached": 500, "thinking": 30}},
             "All done."]
