"""Portable tool calls: a script says ``bash``/``read``/``write``, each client calls its tools differently.

claude offers ``Bash``/``Read``/``Edit``/``Write``, codex ``shell`` or ``exec_command``, opencode
``bash``/``read``/``write``, gemini ``run_shell_command``/``read_file``/``write_file``. ``resolve``
picks the first tool of an action's candidate list that the request offers and builds that
tool's input; a concrete name (anything not an action) passes through unchanged. A request that
offers no candidate gets the first candidate's shape (a client without tools cannot call any).

``mcp:<tool>`` calls orch's coordination tool ``<tool>`` by whatever name the client offers it
under (claude and codex ``mcp__orch__claim``, opencode ``orch_claim``, gemini ``claim``).
"""

from __future__ import annotations

import base64
import posixpath
import shlex
from typing import Any, Callable

from agents.clis.base import MCP_SERVER_NAME, mcp_tool_name

from orchestrator.modelserver.turns import ToolCall

MCP_PREFIX = "mcp:"  # a portable call of a tool of orch's coordination server

Builder = Callable[[dict[str, Any]], dict[str, Any]]


def _bash_claude(a: dict) -> dict:
    return {"command": a["command"], "description": a.get("description") or "Run a scripted shell command"}


def _shell_argv(a: dict) -> dict:
    return {"command": ["bash", "-lc", a["command"]]}


def heredoc(text: str, into: str) -> str:
    """A shell command feeding ``text`` exactly to the command ``into`` on its stdin: a quoted
    here-document when the text allows it (readable in logs), else base64."""
    tag = "ORCH_EOF"
    while tag in text:
        tag += "_"
    if text.endswith("\n") and "\r" not in text and "\0" not in text:
        return f"{into} <<'{tag}'\n{text}{tag}"
    b64 = base64.b64encode(text.encode("utf-8", "surrogateescape")).decode()
    return f"base64 -d <<'{tag}' | {into}\n{b64}\n{tag}"


def write_command(path: str, content: str) -> str:
    """A shell command that writes ``content`` to ``path`` (parents created), byte for byte. No
    command substitution: gemini's shell tool refuses any ``$(...)``."""
    q, parent = shlex.quote(path), posixpath.dirname(path)
    mkdir = f"mkdir -p {shlex.quote(parent)} && " if parent else ""
    return mkdir + heredoc(content, f"cat > {q}")


def _write_as_bash(a: dict) -> dict:
    return {"command": write_command(a["path"], a["content"])}


# action -> [(tool name, how its input is built from the action's arguments)], in preference order
ACTIONS: dict[str, list[tuple[str, Builder]]] = {
    "bash": [
        ("Bash", _bash_claude),
        ("bash", lambda a: {"command": a["command"], "description": a.get("description") or "scripted command"}),
        ("shell", _shell_argv),
        ("exec_command", lambda a: {"cmd": a["command"]}),
        ("run_shell_command", lambda a: {"command": a["command"]}),
        ("shell_command", lambda a: {"command": a["command"]}),
    ],
    "read": [
        ("Read", lambda a: {"file_path": a["path"]}),
        ("read", lambda a: {"filePath": a["path"]}),
        ("read_file", lambda a: {"absolute_path": a["path"]} if a["path"].startswith("/") else {"path": a["path"]}),
        ("Bash", lambda a: _bash_claude({"command": f"cat {shlex.quote(a['path'])}"})),
        ("shell", lambda a: _shell_argv({"command": f"cat {shlex.quote(a['path'])}"})),
    ],
    "write": [
        ("Write", lambda a: {"file_path": a["path"], "content": a["content"]}),
        ("write", lambda a: {"filePath": a["path"], "content": a["content"]}),
        ("write_file", lambda a: {"file_path": a["path"], "content": a["content"]}),
        ("Bash", lambda a: _bash_claude(_write_as_bash(a))),
        ("bash", lambda a: _write_as_bash(a)),
        ("shell", lambda a: _shell_argv(_write_as_bash(a))),
    ],
}


def mcp_name(tool: str, offered: list[str], server: str = MCP_SERVER_NAME) -> str | None:
    """The name under which the request offers ``server``'s tool ``tool``: a prefixed name first,
    else the bare name (gemini); None when it is not offered."""
    prefixed = next((n for n in offered if n != tool and mcp_tool_name(n, server) == tool), None)
    return prefixed or (tool if tool in offered else None)


def resolve(call: ToolCall, offered: list[str]) -> ToolCall:
    """The concrete call for ``call`` given the tool names the request offered."""
    if call.name.startswith(MCP_PREFIX):
        tool = call.name[len(MCP_PREFIX):]
        return ToolCall(mcp_name(tool, offered) or f"mcp__{MCP_SERVER_NAME}__{tool}", dict(call.input))
    candidates = ACTIONS.get(call.name)
    if candidates is None:
        return call
    have = set(offered)
    name, build = next(((n, b) for n, b in candidates if n in have), candidates[0])
    return ToolCall(name, build(call.input))
