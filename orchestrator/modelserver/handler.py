"""The HTTP side of the model server: routes, the key check, JSON and chunked SSE responses, and
how each fault looks on the wire (``server.py`` decides what to serve; this module only serves it).
"""

from __future__ import annotations

import hmac
import json
import select
import socket
import time
import traceback
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs

from coordstore.clock import wall_clock_ms
from coordstore.errors import OrchError

from orchestrator.modelserver import anthropic_api, gemini_api, openai_api
from orchestrator.modelserver.apicommon import estimate_tokens, render
from orchestrator.modelserver.confine import PathRefused
from orchestrator.modelserver.history import ToolUse
from agents.clis.serverurl import split_path
from orchestrator.modelserver.scripts import RequestView
from orchestrator.modelserver.tasksource import fill
from orchestrator.modelserver.tools import MCP_PREFIX
from orchestrator.modelserver.turns import Fault, Turn

HANG_MAX_S = 3600.0  # a "never-ending" stream still ends after this, so a forgotten client cannot pin a thread forever
HANG_POLL_S = 0.1  # how often a hanging stream checks whether its client left or the server stops
MAX_BODY = 64 * 1024 * 1024  # a request larger than this is refused (413): no agent sends that much
MODELS = ("claude-scripted", "gpt-scripted")  # what GET /v1/models lists
GEMINI_MODELS = ("gemini-scripted",)  # what GET /v1beta/models lists
OPEN_PATHS = ("/", "/_orch/health")  # readiness probes: no key needed, nothing learned
NO_KEY = ("missing or wrong API key: send the model server's key (x-api-key, Authorization: Bearer, "
          "x-goog-api-key or ?key=)")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streams, as the clients expect
    server_version = "orch-model-server"

    def log_message(self, format: str, *args: Any) -> None:  # requests are recorded, not logged
        pass

    @property
    def model(self):  # -> server.ModelServer
        return self.server.model  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ plumbing
    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _start_stream(self, content_type: str = "text/event-stream; charset=utf-8") -> None:
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

    def _chunk(self, frame: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))

    def _drop(self) -> None:
        """End the connection abruptly: no closing chunk, no more requests on it."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _body(self) -> bytes | None:
        """The request body (``content-length`` or chunked), None when it is too large."""
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers, up to the blank line
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()  # the CRLF after each chunk
                if len(data) > MAX_BODY:
                    return None
        n = int(self.headers.get("content-length") or 0)
        return None if n > MAX_BODY else self.rfile.read(n)

    def _authorized(self) -> bool:
        """Whether the request carries the server's key, in any of the ways the clients send one."""
        given = [self.headers.get("x-api-key"), self.headers.get("x-goog-api-key")]
        scheme, _, value = (self.headers.get("authorization") or "").partition(" ")
        if scheme.lower() == "bearer":
            given.append(value.strip())
        given += parse_qs(self.path.split("?", 1)[1] if "?" in self.path else "").get("key", [])
        key = self.model.key.encode()
        return any(hmac.compare_digest(g.encode(), key) for g in given if g)

    def _refuse(self, api: str) -> None:
        """401 in the API's own error shape; the body is left unread, so the connection closes."""
        self.close_connection = True
        self._json(401, self._error_body(api, 401, NO_KEY))

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _hang(self) -> None:
        end = time.monotonic() + HANG_MAX_S
        while time.monotonic() < end and not self.model.stopping.wait(HANG_POLL_S):
            if self._client_gone():
                break
        self._drop()

    # ------------------------------------------------------------------ routes
    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        try:
            _, path = split_path(self.path.split("?", 1)[0])
        except ValueError:
            path = self.path.split("?", 1)[0]
        m = self.model
        if path in OPEN_PATHS:
            self._json(200, {"ok": True, "server": "orch model-server"})
        elif not self._authorized():
            self._refuse("gemini" if path.startswith(("/v1beta", "/v1alpha")) else "anthropic")
        elif path == "/_orch/requests":
            self._json(200, m.requests)
        elif path == "/_orch/usage":
            self._json(200, m.usage())
        elif path.rstrip("/") in ("/v1/models", "/models"):
            self._json(200, {"object": "list", "data": [{"id": n, "object": "model", "type": "model", "created": 0,
                                                         "owned_by": "orch", "display_name": n} for n in MODELS]})
        elif path.rstrip("/") in ("/v1beta/models", "/v1alpha/models"):
            self._json(200, {"models": [{"name": f"models/{n}", "displayName": n, "supportedGenerationMethods": [
                "generateContent", "streamGenerateContent", "countTokens"]} for n in GEMINI_MODELS]})
        else:
            self._json(404, {"error": {"type": "not_found_error", "message": f"no route GET {path}"}})

    def do_POST(self) -> None:
        bad_ctx = None
        try:
            ctx, path = split_path(self.path.split("?", 1)[0])
        except ValueError as e:
            ctx, path, bad_ctx = None, self.path.split("?", 1)[0], e
        path = path.rstrip("/")
        query = self.path.split("?", 1)[1] if "?" in self.path else ""
        gemini = gemini_api.route(path)
        if gemini is None and not path.startswith("/v1/"):
            path = "/v1" + path  # OpenAI clients may be given a base URL without /v1
        if not self._authorized():
            return self._refuse("gemini" if gemini else "anthropic" if path.startswith("/v1/messages") else "chat")
        if bad_ctx is not None:
            return self._json(400, anthropic_api.error(400, str(bad_ctx)))
        try:
            raw = self._body()
            if raw is None:
                self.close_connection = True
                return self._json(413, anthropic_api.error(400, f"request body over {MAX_BODY} bytes"))
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the body is not a JSON object")
        except ValueError as e:
            return self._json(400, anthropic_api.error(400, f"invalid JSON body: {e}"))
        if gemini is not None:
            model, method = gemini
            if method == "countTokens":
                return self._json(200, gemini_api.count_tokens(body))
            if method not in ("generateContent", "streamGenerateContent"):
                return self._json(404, gemini_api.error(404, f"no method {method!r} (generateContent, streamGenerateContent)"))
            stream = method == "streamGenerateContent"
            view, api = gemini_api.view(body, ctx, model, stream), "gemini"
            view.extra["sse"] = "alt=sse" in query.split("&")
            return self._serve(api, path, view)
        if path == "/v1/messages/count_tokens":
            return self._json(200, anthropic_api.count_tokens(body))
        if path == "/v1/messages":
            view, api = anthropic_api.view(body, ctx), "anthropic"
        elif path == "/v1/chat/completions":
            view, api = openai_api.chat_view(body, ctx), "chat"
        elif path == "/v1/responses":
            view = openai_api.responses_view(body, ctx, *self.model.previous_response(body.get("previous_response_id")))
            api = "responses"
        else:
            return self._json(404, anthropic_api.error(404, f"no route POST {path}"))
        self._serve(api, path, view)

    def _error_body(self, api: str, status: int, message: str, retry_after_s: float | None = None) -> dict[str, Any]:
        if api == "gemini":
            return gemini_api.error(status, message, retry_after_s)
        return anthropic_api.error(status, message) if api == "anthropic" else openai_api.error(status, message)

    def _serve(self, api: str, path: str, view: RequestView) -> None:
        m = self.model
        seq = m.next_seq()
        view.worktrees = m.worktrees
        try:
            view.ctx = fill(view.ctx, view.prompt, m.tasks)
        except OrchError as e:  # the task source cannot be read (a store gone, ...)
            return self._json(500, self._error_body(api, 500, f"task lookup: {e}"))
        entry: dict[str, Any] = {"seq": seq, "ts_ms": wall_clock_ms(), "api": api, "path": path,
                                 "session": view.ctx.session, "task": (view.ctx.task or {}).get("id"),
                                 "script": view.ctx.script or getattr(m.script, "name", "?"), "model": view.model,
                                 "stream": view.stream, "messages": view.messages, "tools": view.tools, "turn": view.turn,
                                 "status": 200, "fault": None, "side": False, "tool_calls": [], "text": "",
                                 "usage": {"in": estimate_tokens(view.prompt_chars), "out": 0, "cached": 0, "thinking": 0}}
        try:
            turn, fault, side = m.decide(view)
        except PathRefused as e:  # a path outside the worktrees: refused, and nothing of it said
            entry.update(status=403, error=str(e))
            m.record(entry)
            return self._json(403, self._error_body(api, 403, str(e)))
        except OrchError as e:  # the script cannot answer this session (no task, bad commit, ...)
            entry.update(status=400, error=str(e))
            m.record(entry)
            return self._json(400, self._error_body(api, 400, str(e)))
        except Exception as e:  # a script's bug: the client sees a 500 naming it, the server goes on
            traceback.print_exc()
            entry.update(status=500, error=f"{type(e).__name__}: {e}")
            m.record(entry)
            return self._json(500, self._error_body(api, 500, f"script error: {type(e).__name__}: {e}"))
        entry["side"] = side
        if fault is not None and fault.kind in ("rate_limit", "overloaded", "error"):
            status = {"rate_limit": 429, "overloaded": 529 if api == "anthropic" else 503}.get(fault.kind, fault.status)
            retry_after = fault.retry_after_s if fault.kind != "error" else None
            msg = fault.message or {"rate_limit": "Rate limited by the orch model server (scripted)",
                                    "overloaded": "Overloaded (scripted)"}.get(fault.kind, "Scripted error")
            entry.update(status=status, fault=fault.kind, retry_after=fault.retry_after_s)
            m.record(entry)
            headers = {}
            if fault.kind != "error":
                ra = fault.retry_after_s
                headers = {"retry-after": str(int(ra)) if float(ra).is_integer() else f"{ra:g}",
                           "retry-after-ms": str(int(ra * 1000)), "x-should-retry": "true"}
            return self._json(status, self._error_body(api, status, msg, retry_after), headers)
        if turn.delay_s and m.stopping.wait(turn.delay_s):
            return self._drop()
        r = render(turn, view, seq)
        if api == "responses":  # a client may continue from this response by its id alone: keep what it said
            m.remember_response(r.id, view.turn, view.calls + [ToolUse(c.name, c.input, turn=view.turn, id=c.id) for c in r.calls])
        entry.update(fault=fault.kind if fault else None, tool_calls=[c.name for c in r.calls], text=r.text[:200],
                     usage=r.usage(), id=r.id)
        if view.ctx.agent:  # a role session: who played, and the coordination calls it made (small inputs)
            entry.update(agent=view.ctx.agent, mcp=[{"tool": c.name[len(MCP_PREFIX):], **c.input} for c in turn.tool_calls
                                                    if c.name.startswith(MCP_PREFIX) and c.name != "mcp:create_tree"]
                         + [{"tool": "create_tree", "parent": c.input.get("parent"), "parts": len(c.input.get("tree") or [])}
                            for c in turn.tool_calls if c.name == "mcp:create_tree"])
        m.record(entry)
        try:
            if view.stream:
                self._stream(api, turn, r, view, fault)
            elif fault is not None:  # cut or hang of a plain response
                data = json.dumps(self._plain(api, turn, r)).encode()
                if fault.kind == "hang":
                    return self._hang()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self._drop()
            else:
                self._json(200, self._plain(api, turn, r))
        except (BrokenPipeError, ConnectionResetError):  # the client left; nothing to tell it
            self.close_connection = True

    @staticmethod
    def _plain(api: str, turn: Turn, r) -> dict[str, Any]:
        if api == "anthropic":
            return anthropic_api.body(turn, r)
        if api == "gemini":
            return gemini_api.body(turn, r)
        return openai_api.chat_body(turn, r) if api == "chat" else openai_api.responses_body(turn, r)

    def _stream(self, api: str, turn: Turn, r, view: RequestView, fault: Fault | None) -> None:
        if api == "anthropic":
            frames = anthropic_api.events(turn, r)
        elif api == "gemini":
            frames = gemini_api.events(turn, r, view.extra.get("sse", True))
        elif api == "chat":
            frames = openai_api.chat_events(turn, r, view.extra.get("include_usage", False))
        else:
            frames = openai_api.responses_events(turn, r)
        self._start_stream("application/json" if api == "gemini" and not view.extra.get("sse", True) else
                           "text/event-stream; charset=utf-8")
        if fault is not None and fault.kind == "hang":
            self._chunk(frames[0])  # the response has begun ... and says nothing more
            return self._hang()
        if fault is not None and fault.kind == "cut":
            for frame in frames[: min(len(frames) - 1, max(2, len(frames) // 2))]:  # never the closing frame
                self._chunk(frame)
            return self._drop()
        for frame in frames:
            self._chunk(frame)
        self.wfile.write(b"0\r\n\r\n")
