"""What the three APIs share: a Turn made concrete for one request (``Rendered``: ids, resolved
tool calls, token counts) and the SSE / text helpers."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from orchestrator.modelserver.scripts import RequestView
from orchestrator.modelserver.tasksource import TASK_LINE
from orchestrator.modelserver.tools import resolve
from orchestrator.modelserver.turns import Turn

CHUNK_CHARS = 48  # size of one streamed delta: several per block, like the real APIs
CHARS_PER_TOKEN = 4  # the usual rule of thumb, for token counts a script did not give
ID_PREFIX = {"anthropic": "msg", "chat": "chatcmpl", "responses": "resp", "gemini": "gen"}


def estimate_tokens(chars: int) -> int:
    return max(1, chars // CHARS_PER_TOKEN)


@dataclass
class RenderedCall:
    id: str
    name: str
    input: dict[str, Any]


@dataclass
class Rendered:
    id: str
    model: str
    text: str
    calls: list[RenderedCall] = field(default_factory=list)
    tokens_in: int = 0  # the whole prompt, cached part included
    tokens_out: int = 0  # visible output (thinking apart)
    cached: int = 0
    thinking: int = 0
    namespaces: dict[str, tuple[str, str]] = field(default_factory=dict)  # responses: a namespaced tool's (namespace, name)

    def usage(self) -> dict[str, int]:
        return {"in": self.tokens_in, "out": self.tokens_out, "cached": self.cached, "thinking": self.thinking}


def render(turn: Turn, view: RequestView, seq: int) -> Rendered:
    """Resolve portable tool calls against the offered tools, give ids, settle the token counts."""
    calls = [resolve(c, view.tools) for c in turn.tool_calls]
    prefix = {"anthropic": "toolu_orch"}.get(view.api, "call_orch")
    rcalls = [RenderedCall(f"{prefix}_{seq:06d}_{k}", c.name, c.input) for k, c in enumerate(calls)]
    u = turn.usage
    out_chars = len(turn.text) + sum(len(json.dumps(c.input)) for c in calls)
    tokens_in = u.input if u.input is not None else estimate_tokens(view.prompt_chars)
    return Rendered(
        id=f"{ID_PREFIX[view.api]}_orch_{seq:06d}",
        model=view.model, text=turn.text, calls=rcalls, tokens_in=tokens_in,
        tokens_out=u.output if u.output is not None else estimate_tokens(out_chars),
        cached=min(u.cached, tokens_in), thinking=u.thinking, namespaces=view.extra.get("namespaces") or {},
    )


def task_prompt(messages: list[tuple[str, str]]) -> tuple[str, int]:
    """(text, number of assistant turns after it) of the user message that names the task
    (``Task <id>: ...``) in a conversation of (role, text) pairs, ``role`` being ``user`` or
    ``assistant``. The last such message counts: a client may send canned example exchanges or
    file contents before it (aider). With none, the first user message and every assistant turn."""
    users = [i for i, (role, _) in enumerate(messages) if role == "user"]
    at = next((i for i in reversed(users) if TASK_LINE.search(messages[i][1])), users[0] if users else -1)
    turns = sum(1 for role, _ in messages[at + 1:] if role == "assistant")
    return (messages[at][1] if at >= 0 else ""), turns


def sse(event: str | None, data: Any) -> bytes:
    """One server-sent event frame."""
    head = f"event: {event}\n" if event else ""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"{head}data: {payload}\n\n".encode()


def chunks(text: str, size: int = CHUNK_CHARS) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def text_of(content: Any) -> str:
    """The text of a message content in any of the APIs' shapes (string, blocks, parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(text_of(c) for c in content)
    if isinstance(content, dict):
        for key in ("text", "content", "output"):
            if key in content:
                return text_of(content[key])
    return ""
