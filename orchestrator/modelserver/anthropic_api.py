"""The Anthropic Messages API (``POST /v1/messages``): reading a request, writing a Turn as a
message, as JSON or as the SSE event sequence of the real API (``message_start``, ``ping``,
``content_block_start/delta/stop`` with ``text_delta`` / ``input_json_delta``, ``message_delta``
carrying the stop reason and the usage, ``message_stop``).
"""

from __future__ import annotations

import json
from typing import Any

from orchestrator.modelserver.apicommon import Rendered, chunks, estimate_tokens, sse, text_of
from orchestrator.modelserver.history import CallLog
from orchestrator.modelserver.scripts import RequestView
from orchestrator.modelserver.turns import Turn

NAME = "anthropic"
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
               429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}


def calls(msgs: list[dict[str, Any]]) -> CallLog:
    """The conversation's ``tool_use`` blocks and the ``tool_result`` blocks answering them."""
    log, turn = CallLog(), 0
    for m in msgs:
        blocks = [b for b in m.get("content") or [] if isinstance(b, dict)] if isinstance(m.get("content"), list) else []
        if m.get("role") == "assistant":
            for b in blocks:
                if b.get("type") == "tool_use":
                    log.call(b.get("name"), b.get("input"), turn, b.get("id"))
            turn += 1
        else:
            for b in blocks:
                if b.get("type") == "tool_result":
                    log.answer(b.get("tool_use_id"), text_of(b.get("content")), bool(b.get("is_error")))
    return log


def view(body: dict[str, Any], ctx) -> RequestView:
    msgs = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    last_result, last_error = None, False
    if msgs and msgs[-1].get("role") == "user" and isinstance(msgs[-1].get("content"), list):
        results = [b for b in msgs[-1]["content"] if isinstance(b, dict) and b.get("type") == "tool_result"]
        if results:
            last_result = "\n".join(text_of(b.get("content")) for b in results)
            last_error = any(b.get("is_error") for b in results)
    fmt = ((body.get("output_config") or {}).get("format") or body.get("output_format") or {})
    return RequestView(
        api=NAME, model=str(body.get("model") or "claude-scripted"), ctx=ctx,
        tools=[t.get("name") for t in body.get("tools") or [] if isinstance(t, dict) and t.get("name")],
        turn=sum(1 for m in msgs if m.get("role") == "assistant"), messages=len(msgs), stream=bool(body.get("stream")),
        system=text_of(body.get("system")), last_result=last_result, last_error=last_error,
        json_schema=fmt.get("schema") if fmt.get("type") == "json_schema" else None,
        prompt_chars=len(json.dumps(body)),
        prompt=next((text_of(m.get("content")) for m in msgs if m.get("role") == "user"), ""),
        calls=calls(msgs).calls,
    )


def _blocks(r: Rendered) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if r.text:
        out.append({"type": "text", "text": r.text})
    for c in r.calls:
        out.append({"type": "tool_use", "id": c.id, "name": c.name, "input": c.input})
    return out


def _usage(r: Rendered, final: bool = True) -> dict[str, Any]:
    # Anthropic counts cache reads apart from input_tokens; thinking is part of the output
    return {"input_tokens": r.tokens_in - r.cached, "cache_creation_input_tokens": 0, "cache_read_input_tokens": r.cached,
            "output_tokens": (r.tokens_out + r.thinking) if final else 1, "service_tier": "standard"}


def body(turn: Turn, r: Rendered) -> dict[str, Any]:
    return {"id": r.id, "type": "message", "role": "assistant", "model": r.model, "content": _blocks(r),
            "stop_reason": "tool_use" if r.calls else "end_turn", "stop_sequence": None, "usage": _usage(r)}


def events(turn: Turn, r: Rendered) -> list[bytes]:
    start = {**body(turn, r), "content": [], "stop_reason": None, "usage": _usage(r, final=False)}
    out = [sse("message_start", {"type": "message_start", "message": start}), sse("ping", {"type": "ping"})]
    for i, block in enumerate(_blocks(r)):
        if block["type"] == "text":
            out.append(sse("content_block_start", {"type": "content_block_start", "index": i,
                                                   "content_block": {"type": "text", "text": ""}}))
            out += [sse("content_block_delta", {"type": "content_block_delta", "index": i,
                                                "delta": {"type": "text_delta", "text": piece}}) for piece in chunks(block["text"])]
        else:
            out.append(sse("content_block_start", {"type": "content_block_start", "index": i, "content_block": {
                "type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}}))
            out += [sse("content_block_delta", {"type": "content_block_delta", "index": i,
                                                "delta": {"type": "input_json_delta", "partial_json": piece}})
                    for piece in chunks(json.dumps(block["input"]))]
        out.append(sse("content_block_stop", {"type": "content_block_stop", "index": i}))
    out.append(sse("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": "tool_use" if r.calls else "end_turn", "stop_sequence": None},
                                     "usage": _usage(r)}))
    out.append(sse("message_stop", {"type": "message_stop"}))
    return out


def error(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message}}


def count_tokens(body: dict[str, Any]) -> dict[str, Any]:
    """``POST /v1/messages/count_tokens``: the same estimate the usage of a response uses."""
    return {"input_tokens": estimate_tokens(len(json.dumps(body)))}
