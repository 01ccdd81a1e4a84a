"""A conversation's tool calls, whatever its API: each assistant tool call in order with its input,
the result the client sent back (text) and whether the client marked it an error.

The API modules fill a ``CallLog`` while they read a request (``RequestView.calls``); role scripts
decide from it. Results of MCP tools arrive as text, shaped by each CLI: the tool's JSON itself,
its structured content (claude, codex: ``{"result": [...]}`` for a list), an MCP result
(``{"content": [{"type": "text", "text": ...}], "isError": ..}``), after a prefix (codex:
``Wall time: ...\nOutput:\n``; gemini-cli's error text ends with the raw response) or inside a
tag (gemini-cli's ``<untrusted_context>``). ``tool_result`` reads each back to the tool's JSON.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

from orchestrator.modelserver.tools import ACTIONS

SHELL_TOOLS = frozenset(name for name, _ in ACTIONS["bash"])  # the shell tool of every client
_EXIT = re.compile(r"(?i)\bexit(?:[ _]code|ed with code|_code\"?)\s*[:=]?\s*(-?\d+)")
_TAGGED = re.compile(r"^\s*<([A-Za-z_][\w-]*)>\s*(.*?)\s*</\1>\s*$", re.S)
_WRAPPER_KEYS = {"content", "isError", "is_error", "structuredContent", "structured_content", "_meta", "meta"}


@dataclass
class ToolUse:
    name: str  # the name the client offered (``mcp__orch__claim``, ``Bash``, ...)
    input: dict[str, Any] = field(default_factory=dict)
    result: str | None = None  # the text the client sent back; None: not answered (yet)
    is_error: bool = False
    turn: int = 0  # the assistant turn (0-based) that made the call
    id: str = ""


class CallLog:
    """Calls in the order they were made; results matched by call id, else by order (and name)."""

    def __init__(self, calls: Iterable[ToolUse] = ()):
        self.calls = [replace(c) for c in calls]

    def call(self, name: str | None, raw_input: Any, turn: int, call_id: str | None = None) -> None:
        self.calls.append(ToolUse(str(name or ""), arguments(raw_input), turn=turn, id=str(call_id or "")))

    def answer(self, call_id: str | None, text: str, is_error: bool = False, name: str | None = None) -> None:
        open_calls = [c for c in self.calls if c.result is None]
        target = next((c for c in open_calls if call_id and c.id == call_id), None)
        if target is None:
            target = next((c for c in open_calls if not name or c.name == name), None)
        if target is not None:
            target.result, target.is_error = text, bool(is_error)


def arguments(raw: Any) -> dict[str, Any]:
    """A call's input as a dict: the APIs send a dict (Anthropic, Gemini) or a JSON string (OpenAI)."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return {"_raw": raw}
    return raw if isinstance(raw, dict) else {"_raw": raw}


# ---------------------------------------------------------------- MCP results
def _decode(text: str) -> Any:
    """``text`` as JSON; else the JSON value that ends it (after a prefix); else the text itself.
    A text inside one tag (gemini-cli's ``<untrusted_context>...</untrusted_context>``) is read inside."""
    m = _TAGGED.match(text)
    if m:
        text = m.group(2)
    try:
        return json.loads(text)
    except ValueError:
        pass
    dec = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch in "{[":
            try:
                value, end = dec.raw_decode(text, i)
            except ValueError:
                continue
            if not text[end:].strip():
                return value
    return text


def _blocks(v: Any) -> list[dict] | None:
    """The content blocks of an MCP ``CallToolResult`` (a wrapper), or None if ``v`` is not one."""
    if isinstance(v, dict) and isinstance(v.get("content"), list) and set(v) <= _WRAPPER_KEYS:
        blocks = v["content"]
    elif isinstance(v, list) and v and all(isinstance(b, dict) and b.get("type") == "text" and "text" in b for b in v):
        blocks = v
    else:
        return None
    return blocks if all(isinstance(b, dict) and "type" in b for b in blocks) else None


def tool_result(text: str | None, flagged: bool = False) -> tuple[Any, bool]:
    """(the tool's JSON value, is it an error) of a result text. An error is one the client flagged,
    or a wrapper's ``isError``; the value of a refusal is its text."""
    if text is None:
        return None, flagged
    value, error = _decode(text.strip()), flagged
    for _ in range(3):  # a wrapper's text may itself be a wrapper (a CLI re-wrapping a result)
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict) and \
                isinstance((value[0].get("functionResponse") or {}).get("response"), dict):
            value = value[0]["functionResponse"]["response"]  # gemini-cli's raw response, as its error text quotes it
        if isinstance(value, dict) and set(value) == {"result"}:
            return value["result"], error  # structured content of a non-object return (claude sends that)
        blocks = _blocks(value)
        if blocks is None:
            break
        if isinstance(value, dict):
            error = error or bool(value.get("isError") or value.get("is_error"))
            structured = value.get("structuredContent", value.get("structured_content"))
            if isinstance(structured, dict) and not error:
                return (structured["result"] if set(structured) == {"result"} else structured), error
        values = [_decode(b["text"].strip()) for b in blocks if b.get("type") == "text" and isinstance(b.get("text"), str)]
        value = values[0] if len(values) == 1 else values
    return value, error


def mcp_result(text: str | None) -> Any:
    """The JSON value an MCP tool returned, read from the text a client sent back."""
    return tool_result(text)[0]


# ---------------------------------------------------------------- shell calls
def shell_command(use: ToolUse) -> str | None:
    """The command of a shell tool call (each client's shape: a string, an argv, ``cmd``), else None."""
    if use.name not in SHELL_TOOLS:
        return None
    cmd = use.input.get("command", use.input.get("cmd"))
    if isinstance(cmd, list):
        return str(cmd[-1]) if cmd else ""
    return cmd if isinstance(cmd, str) else None


def shell_failed(use: ToolUse) -> bool:
    """Whether a shell call failed: the client flagged it, or its output reports a non-zero exit."""
    if use.is_error:
        return True
    m = _EXIT.search(use.result or "")
    return bool(m) and int(m.group(1)) != 0
