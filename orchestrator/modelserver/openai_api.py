"""OpenAI's Chat Completions (``POST /v1/chat/completions``) and Responses (``POST /v1/responses``)
APIs: reading a request, writing a Turn as JSON or as the SSE sequence of the real API.

Chat streams ``chat.completion.chunk`` objects (role, text deltas, tool-call deltas by index, the
finish reason, a usage chunk when ``stream_options.include_usage``) and ends with ``[DONE]``.
Responses streams typed events (``response.created`` ... ``response.completed``) with a
``sequence_number``; a conversation continued by ``previous_response_id`` is followed by the
server (``Server.response_turns``), one sent in full is counted from its items.
"""

from __future__ import annotations

import json
import time
from typing import Any

from agents.clis.serverurl import ROLE_SCRIPTS

from orchestrator.modelserver.apicommon import Rendered, chunks, sse, task_prompt, text_of
from orchestrator.modelserver.history import CallLog, ToolUse
from orchestrator.modelserver.scripts import RequestView
from orchestrator.modelserver.turns import Turn

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
               429: "rate_limit_exceeded", 500: "server_error", 503: "server_error", 529: "server_error"}
_ASSISTANT_ITEMS = {"function_call", "reasoning", "custom_tool_call", "local_shell_call", "shell_call",
                    "apply_patch_call", "web_search_call"}
_RESULT_ITEMS = {"function_call_output", "custom_tool_call_output", "local_shell_call_output", "shell_call_output",
                 "apply_patch_call_output"}


def error(status: int, message: str) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": kind if status == 429 else None}}


# ---------------------------------------------------------------- chat completions
def chat_calls(msgs: list[dict[str, Any]]) -> CallLog:
    """The assistant messages' ``tool_calls`` (and legacy ``function_call``) and the ``tool`` messages answering them."""
    log, turn = CallLog(), 0
    for m in msgs:
        if m.get("role") == "assistant":
            for c in m.get("tool_calls") or []:
                if isinstance(c, dict):
                    fn = c.get("function") or {}
                    log.call(fn.get("name"), fn.get("arguments"), turn, c.get("id"))
            if isinstance(m.get("function_call"), dict):
                log.call(m["function_call"].get("name"), m["function_call"].get("arguments"), turn)
            turn += 1
        elif m.get("role") in ("tool", "function"):
            log.answer(m.get("tool_call_id"), text_of(m.get("content")), name=m.get("name") if m.get("role") == "function" else None)
    return log


def chat_view(body: dict[str, Any], ctx) -> RequestView:
    msgs = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    tools = [((t.get("function") or {}).get("name") or t.get("name")) for t in body.get("tools") or [] if isinstance(t, dict)]
    tools += [f.get("name") for f in body.get("functions") or [] if isinstance(f, dict)]
    tail = []
    for m in reversed(msgs):
        if m.get("role") != "tool":
            break
        tail.append(text_of(m.get("content")))
    fmt = body.get("response_format") or {}
    prompt, turn = task_prompt([(m.get("role"), text_of(m.get("content"))) for m in msgs if m.get("role") in ("user", "assistant")])
    if ctx is not None and ctx.script in ROLE_SCRIPTS:  # a role's session is one conversation: every turn counts
        turn = sum(1 for m in msgs if m.get("role") == "assistant")
    return RequestView(
        api="chat", model=str(body.get("model") or "gpt-scripted"), ctx=ctx, tools=[t for t in tools if t],
        turn=turn, messages=len(msgs), stream=bool(body.get("stream")),
        system="\n".join(text_of(m.get("content")) for m in msgs if m.get("role") in ("system", "developer")),
        last_result="\n".join(reversed(tail)) if tail else None,
        json_schema=(fmt.get("json_schema") or {}).get("schema") if fmt.get("type") == "json_schema" else None,
        prompt_chars=len(json.dumps(body)),
        prompt=prompt,
        extra={"include_usage": bool((body.get("stream_options") or {}).get("include_usage"))},
        calls=chat_calls(msgs).calls,
    )


def _chat_usage(r: Rendered) -> dict[str, Any]:
    return {"prompt_tokens": r.tokens_in, "completion_tokens": r.tokens_out + r.thinking,
            "total_tokens": r.tokens_in + r.tokens_out + r.thinking,
            "prompt_tokens_details": {"cached_tokens": r.cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": r.thinking, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}


def _chat_calls(r: Rendered) -> list[dict[str, Any]]:
    return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.input)}} for c in r.calls]


def chat_body(turn: Turn, r: Rendered) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": r.text or None, "refusal": None}
    if r.calls:
        msg["tool_calls"] = _chat_calls(r)
    return {"id": r.id, "object": "chat.completion", "created": int(time.time()), "model": r.model,
            "choices": [{"index": 0, "message": msg, "logprobs": None, "finish_reason": "tool_calls" if r.calls else "stop"}],
            "usage": _chat_usage(r), "system_fingerprint": "orch-model-server"}


def chat_events(turn: Turn, r: Rendered, include_usage: bool) -> list[bytes]:
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra) -> bytes:
        return sse(None, {"id": r.id, "object": "chat.completion.chunk", "created": created, "model": r.model,
                          "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                          "system_fingerprint": "orch-model-server", **extra})

    out = [chunk({"role": "assistant", "content": ""})]
    if r.text:
        out += [chunk({"content": piece}) for piece in chunks(r.text)]
    for k, c in enumerate(_chat_calls(r)):
        out.append(chunk({"tool_calls": [{"index": k, "id": c["id"], "type": "function",
                                          "function": {"name": c["function"]["name"], "arguments": ""}}]}))
        out += [chunk({"tool_calls": [{"index": k, "function": {"arguments": piece}}]})
                for piece in chunks(c["function"]["arguments"])]
    out.append(chunk({}, "tool_calls" if r.calls else "stop"))
    if include_usage:
        out.append(sse(None, {"id": r.id, "object": "chat.completion.chunk", "created": created, "model": r.model,
                              "choices": [], "usage": _chat_usage(r)}))
    out.append(sse(None, "[DONE]"))
    return out


# ---------------------------------------------------------------- responses
def namespaced(namespace: str, name: str | None) -> str:
    """The one name a tool of a namespace goes by here: codex's ``mcp__orch`` + ``claim`` is ``mcp__orch__claim``."""
    return f"{namespace}__{name}"


def _response_tools(tools: list) -> tuple[list[str], dict[str, tuple[str, str]]]:
    """(the offered tool names, namespaced name -> (namespace, name in it)): a ``namespace`` tool
    (codex groups an MCP server's tools so) offers each of its tools under its namespaced name."""
    names: list[str] = []
    spaces: dict[str, tuple[str, str]] = {}
    for t in tools:
        if not isinstance(t, dict):
            continue
        if t.get("type") == "namespace" and isinstance(t.get("name"), str):
            for inner in t.get("tools") or []:
                if isinstance(inner, dict) and isinstance(inner.get("name"), str):
                    full = namespaced(t["name"], inner["name"])
                    names.append(full)
                    spaces[full] = (t["name"], inner["name"])
        elif t.get("name") or t.get("type"):
            names.append(t.get("name") or t.get("type"))
    return names, spaces


def responses_view(body: dict[str, Any], ctx, previous_turns: int | None,
                   previous_calls: list[ToolUse] | None = None) -> RequestView:
    """``previous_turns`` / ``previous_calls``: the turn and the calls (its own included) of the
    response named by ``previous_response_id``, as the server remembered them."""
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    items = [it for it in items or [] if isinstance(it, dict)]
    first = 0 if previous_turns is None else previous_turns + 1
    log = CallLog(previous_calls or ())
    turns, in_run = 0, False  # a run of consecutive assistant-side items is one assistant turn
    for it in items:
        mine = it.get("type") in _ASSISTANT_ITEMS or (it.get("type", "message") == "message" and it.get("role") == "assistant")
        turns += mine and not in_run
        in_run = mine
        if it.get("type") in ("function_call", "custom_tool_call"):
            name = namespaced(it["namespace"], it.get("name")) if it.get("namespace") else it.get("name")
            log.call(name, it.get("arguments", it.get("input")), first + turns - 1, it.get("call_id"))
        elif it.get("type") in _RESULT_ITEMS:
            out = it.get("output")
            log.answer(it.get("call_id"), text_of(out), isinstance(out, dict) and out.get("success") is False)
    turns += first
    tail = []
    for it in reversed(items):
        if it.get("type") not in _RESULT_ITEMS:
            break
        tail.append(text_of(it.get("output")))
    tools, namespaces = _response_tools(body.get("tools") or [])
    fmt = (body.get("text") or {}).get("format") or {}
    system = "\n".join([text_of(body.get("instructions")),
                        *(text_of(it.get("content")) for it in items if it.get("role") in ("system", "developer", "user"))])
    return RequestView(
        api="responses", model=str(body.get("model") or "gpt-scripted"), ctx=ctx, tools=[t for t in tools if t],
        turn=turns, messages=len(items), stream=bool(body.get("stream")), system=system,
        last_result="\n".join(reversed(tail)) if tail else None,
        json_schema=fmt.get("schema") if fmt.get("type") == "json_schema" else None, prompt_chars=len(json.dumps(body)),
        prompt="\n".join(text_of(it.get("content")) for it in items if it.get("role") == "user"),
        calls=log.calls, extra={"namespaces": namespaces},
    )


def _output(r: Rendered) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if r.text:
        out.append({"id": f"msg_{r.id}", "type": "message", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": r.text, "annotations": [], "logprobs": []}]})
    for c in r.calls:
        item = {"id": f"fc_{c.id}", "type": "function_call", "status": "completed", "call_id": c.id, "name": c.name,
                "arguments": json.dumps(c.input)}
        if c.name in r.namespaces:  # a tool offered inside a namespace is called by its name there
            item["namespace"], item["name"] = r.namespaces[c.name]
        out.append(item)
    return out


def responses_body(turn: Turn, r: Rendered, status: str = "completed", output: list | None = None) -> dict[str, Any]:
    return {"id": r.id, "object": "response", "created_at": int(time.time()), "status": status, "model": r.model,
            "output": _output(r) if output is None else output, "parallel_tool_calls": True, "tool_choice": "auto",
            "tools": [], "error": None, "incomplete_details": None, "instructions": None, "metadata": {},
            "temperature": 1.0, "top_p": 1.0, "text": {"format": {"type": "text"}},
            "usage": None if status != "completed" else {
                "input_tokens": r.tokens_in, "input_tokens_details": {"cached_tokens": r.cached},
                "output_tokens": r.tokens_out + r.thinking, "output_tokens_details": {"reasoning_tokens": r.thinking},
                "total_tokens": r.tokens_in + r.tokens_out + r.thinking}}


def responses_events(turn: Turn, r: Rendered) -> list[bytes]:
    seq = iter(range(1_000_000))
    out: list[bytes] = []

    def ev(kind: str, **data) -> None:
        out.append(sse(kind, {"type": kind, "sequence_number": next(seq), **data}))

    ev("response.created", response=responses_body(turn, r, "in_progress", []))
    ev("response.in_progress", response=responses_body(turn, r, "in_progress", []))
    for i, item in enumerate(_output(r)):
        if item["type"] == "message":
            ev("response.output_item.added", output_index=i, item={**item, "status": "in_progress", "content": []})
            part = item["content"][0]
            ev("response.content_part.added", item_id=item["id"], output_index=i, content_index=0,
               part={**part, "text": ""})
            for piece in chunks(part["text"]):
                ev("response.output_text.delta", item_id=item["id"], output_index=i, content_index=0, delta=piece, logprobs=[])
            ev("response.output_text.done", item_id=item["id"], output_index=i, content_index=0, text=part["text"], logprobs=[])
            ev("response.content_part.done", item_id=item["id"], output_index=i, content_index=0, part=part)
        else:
            ev("response.output_item.added", output_index=i, item={**item, "status": "in_progress", "arguments": ""})
            for piece in chunks(item["arguments"]):
                ev("response.function_call_arguments.delta", item_id=item["id"], output_index=i, delta=piece)
            ev("response.function_call_arguments.done", item_id=item["id"], output_index=i, name=item["name"],
               arguments=item["arguments"])
        ev("response.output_item.done", output_index=i, item=item)
    ev("response.completed", response=responses_body(turn, r))
    return out
