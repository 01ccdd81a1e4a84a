"""Google's Gemini API (``POST /v1beta/models/MODEL:generateContent`` and ``:streamGenerateContent``):
reading a request, writing a Turn as a ``GenerateContentResponse``, whole or streamed.

A stream (``?alt=sse``) is a series of whole ``GenerateContentResponse`` objects, one per SSE
``data:`` frame: an opening one, the text in pieces, then one carrying the function calls (Gemini
sends a call whole, never in pieces), the ``finishReason`` and the ``usageMetadata``. Without
``alt=sse`` the same objects come as one JSON array. ``promptTokenCount`` includes the cached
part (``cachedContentTokenCount``); thinking is ``thoughtsTokenCount``, apart from the candidates.
"""

from __future__ import annotations

import json
from typing import Any

from agents.clis.serverurl import ROLE_SCRIPTS

from orchestrator.modelserver.apicommon import Rendered, chunks, estimate_tokens, sse, task_prompt
from orchestrator.modelserver.history import CallLog
from orchestrator.modelserver.scripts import RequestView
from orchestrator.modelserver.turns import Turn

NAME = "gemini"
STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}


def route(path: str) -> tuple[str, str] | None:
    """(model, method) of ``/v1beta/models/MODEL:METHOD`` (or ``/v1/...``), None for other paths."""
    for prefix in ("/v1beta/models/", "/v1/models/", "/v1alpha/models/"):
        if path.startswith(prefix) and ":" in path[len(prefix):]:
            model, method = path[len(prefix):].rsplit(":", 1)
            return model, method
    return None


def _parts(content: Any) -> list[dict[str, Any]]:
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p for p in parts or [] if isinstance(p, dict)]


def _texts(content: Any) -> str:
    return "\n".join(p["text"] for p in _parts(content) if isinstance(p.get("text"), str))


def _answer_text(answer: dict[str, Any]) -> tuple[str, bool]:
    """(text, is it an error) of a ``functionResponse``: gemini-cli sends ``{output: text}`` or ``{error: ...}``."""
    response = answer.get("response") if isinstance(answer.get("response"), dict) else {}
    out = response.get("output", response.get("error", response))
    return (out if isinstance(out, str) else json.dumps(out)), "error" in response


def calls(contents: list[dict[str, Any]]) -> CallLog:
    """The model's ``functionCall`` parts and the ``functionResponse`` parts answering them."""
    log, turn = CallLog(), 0
    for c in contents:
        if c.get("role") == "model":
            for p in _parts(c):
                fc = p.get("functionCall") or p.get("function_call")
                if isinstance(fc, dict):
                    log.call(fc.get("name"), fc.get("args") or {}, turn, fc.get("id"))
            turn += 1
            continue
        for p in _parts(c):
            fr = p.get("functionResponse") or p.get("function_response")
            if isinstance(fr, dict):
                text, error = _answer_text(fr)
                log.answer(fr.get("id"), text, error, fr.get("name"))
    return log


def view(body: dict[str, Any], ctx, model: str, stream: bool) -> RequestView:
    contents = [c for c in body.get("contents") or [] if isinstance(c, dict)]
    tools = [fd.get("name") for t in body.get("tools") or [] if isinstance(t, dict)
             for fd in (t.get("functionDeclarations") or t.get("function_declarations") or []) if isinstance(fd, dict)]
    last_result, last_error = None, False
    if contents and contents[-1].get("role", "user") == "user":
        answers = [p.get("functionResponse") or p.get("function_response") for p in _parts(contents[-1])]
        answers = [a for a in answers if isinstance(a, dict)]
        if answers:
            read = [_answer_text(a) for a in answers]
            last_result = "\n".join(text for text, _ in read)
            last_error = any(error for _, error in read)
    config = body.get("generationConfig") or body.get("generation_config") or {}
    schema = config.get("responseJsonSchema") or config.get("responseSchema") or config.get("response_schema")
    if schema is None and config.get("responseMimeType") == "application/json":
        schema = {}
    said = [("assistant" if c.get("role") == "model" else "user", _texts(c)) for c in contents]
    prompt, turn = task_prompt([(role, text) for role, text in said if role == "assistant" or text])
    if ctx is not None and ctx.script in ROLE_SCRIPTS:  # a role's session is one conversation: every turn counts
        turn = sum(1 for role, _ in said if role == "assistant")
    system = "\n".join([_texts(body.get("systemInstruction") or body.get("system_instruction")),
                        *(text for role, text in said if role == "user")])
    return RequestView(
        api=NAME, model=model, ctx=ctx, tools=[t for t in tools if t], turn=turn, messages=len(contents), stream=stream,
        system=system, last_result=last_result, last_error=last_error, json_schema=schema,
        prompt_chars=len(json.dumps(body)), prompt=prompt, calls=calls(contents).calls,
    )


def _usage(r: Rendered) -> dict[str, int]:
    return {"promptTokenCount": r.tokens_in, "candidatesTokenCount": r.tokens_out, "cachedContentTokenCount": r.cached,
            "thoughtsTokenCount": r.thinking, "totalTokenCount": r.tokens_in + r.tokens_out + r.thinking}


def _calls(r: Rendered) -> list[dict[str, Any]]:
    return [{"functionCall": {"id": c.id, "name": c.name, "args": c.input}} for c in r.calls]


def _response(r: Rendered, parts: list[dict[str, Any]], final: bool) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if final:
        candidate["finishReason"] = "STOP"
    usage = _usage(r) if final else {"promptTokenCount": r.tokens_in, "totalTokenCount": r.tokens_in}
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": r.model, "responseId": r.id}


def body(turn: Turn, r: Rendered) -> dict[str, Any]:
    return _response(r, ([{"text": r.text}] if r.text else []) + _calls(r), final=True)


def stream_objects(turn: Turn, r: Rendered) -> list[dict[str, Any]]:
    pieces = chunks(r.text) if r.text else []
    out = [_response(r, [{"text": p}], final=False) for p in pieces[:-1]]
    last = ([{"text": pieces[-1]}] if pieces else []) + _calls(r)
    return [_response(r, [{"text": ""}], final=False), *out, _response(r, last or [{"text": ""}], final=True)]


def events(turn: Turn, r: Rendered, sse_frames: bool = True) -> list[bytes]:
    """The stream as SSE frames, or (``alt`` other than ``sse``) the pieces of one JSON array."""
    objs = stream_objects(turn, r)
    if sse_frames:
        return [sse(None, o) for o in objs]
    return [(b"[" if i == 0 else b",") + json.dumps(o).encode() + (b"]" if i == len(objs) - 1 else b"")
            for i, o in enumerate(objs)]


def error(status: int, message: str, retry_after_s: float | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": status, "message": message, "status": STATUS_NAMES.get(status, "INTERNAL")}
    if retry_after_s is not None:
        err["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after_s:g}s"}]
    return {"error": err}


def count_tokens(body: dict[str, Any]) -> dict[str, Any]:
    return {"totalTokens": estimate_tokens(len(json.dumps(body)))}
