"""The coordination tools as an MCP server (the official SDK's ``MCPServer``), over streamable HTTP
on 127.0.0.1 or over stdio.

Who calls: over HTTP, every request carries ``Authorization: Bearer <token>``; ``BearerAuth``
(a Starlette middleware) answers 401 to a missing, forged or foreign-run token before the MCP
layer sees the request, and the tool then acts as the token's agent only. Over stdio the token is
checked once, before serving (the process is the agent's own).

Answers: a tool's result is JSON text (and structured content: the object itself, or
``{"result": [...]}`` for a list); a refusal is an ``is_error`` result whose text names the tool
and the argument, with ``{"error": text, "outcome": ok|error|lost|denied}`` as structured
content, so a client tells a lost claim from a bad argument. Arguments the SDK's type check
refuses are answered (and recorded) the same way.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent
from pydantic import ValidationError
from starlette.responses import JSONResponse

from orchestrator.coordination.args import ToolRefused
from orchestrator.coordination.runctx import RunContext
from orchestrator.coordination.schemas import TOOL_PARAMS
from orchestrator.coordination.tokens import TokenBook, TokenRefused, bearer
from orchestrator.coordination.tools import CoordinationTools, args_digest

HOST = "127.0.0.1"
PATH = "/mcp"
AGENT_KEY = "orch_agent"  # where BearerAuth leaves the caller in the ASGI scope's state


class BearerAuth:
    """ASGI middleware: a request without a token of this run's agents gets 401 and goes no further."""

    def __init__(self, app, book: TokenBook):
        self.app = app
        self.book = book

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        try:
            agent = self.book.agent_of(bearer(header.decode("latin-1") if header else None))
        except TokenRefused as e:
            hint = "" if header else " (send 'Authorization: Bearer <token>', the agent's ORCH_MCP_TOKEN)"
            reply = JSONResponse({"error": f"unauthorized: {e}{hint}"}, status_code=401,
                                 headers={"WWW-Authenticate": 'Bearer realm="orch"'})
            return await reply(scope, receive, send)
        scope.setdefault("state", {})[AGENT_KEY] = agent
        await self.app(scope, receive, send)


def _answer(result: Any) -> CallToolResult:
    structured = result if isinstance(result, dict) else {"result": result}
    return CallToolResult(content=[TextContent(type="text", text=json.dumps(result, default=str))],
                          structured_content=structured)


def _refusal(text: str, outcome: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True,
                          structured_content={"error": text, "outcome": outcome})


def _bad_arguments(tool: str, err: ValidationError) -> str:
    """The SDK's type check refusal in the tools' own words; of a union's errors, the most specific."""
    worst = max(err.errors(), key=lambda e: len(e["loc"]))
    name = str(worst["loc"][0]) if worst["loc"] else "?"
    if worst["type"] == "missing":
        return f"{tool}: argument '{name}' is required"
    if worst["type"] == "literal_error":
        choices = worst["ctx"]["expected"].replace("'", "").replace(" or ", ", ")
        return f"{tool}: {name} {worst['input']!r} is not one of {choices}"
    return f"{tool}: argument '{name}' is invalid: {worst['msg']}"


class CoordinationServer(MCPServer):
    """``MCPServer`` with orch's tools; ``identify(ctx)`` says which agent the request acts as."""

    def __init__(self, tools: CoordinationTools, identify: Callable[[Context], str]):
        super().__init__("orch", instructions=f"orch coordination tools for run {tools.run_id}", log_level="WARNING",
                         warn_on_duplicate_tools=False)
        self.tools = tools
        self.identify = identify
        for name, (doc, params) in TOOL_PARAMS.items():
            self.add_tool(self._tool_function(name, params), name=name, description=doc)

    def _tool_function(self, name: str, params: list[inspect.Parameter]):
        tools, identify = self.tools, self.identify

        def run(ctx: Context, **kw: Any) -> CallToolResult:  # a sync tool: the SDK runs it in a worker thread
            kw = {("from" if k == "from_" else k): v for k, v in kw.items()}
            try:
                return _answer(tools.call(name, identify(ctx), kw))
            except ToolRefused as e:
                return _refusal(e.text, e.outcome)

        run.__name__ = name
        ctx_param = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context)
        run.__signature__ = inspect.Signature([*params, ctx_param], return_annotation=CallToolResult)
        return run

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Context | None = None) -> Any:
        """The SDK's call, with the calls it refuses before any tool runs (an unknown tool, arguments
        of the wrong type) answered and recorded like every other refusal."""
        t0 = time.perf_counter()
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as e:
            if name in TOOL_PARAMS and not isinstance(e.__cause__, ValidationError):
                raise
            agent = self.identify(context)
            text = _bad_arguments(name, e.__cause__) if name in TOOL_PARAMS else f"unknown tool {name!r}"
            data = {"args": args_digest(arguments), "latency_ms": round((time.perf_counter() - t0) * 1000.0, 3)}
            await anyio.to_thread.run_sync(self.tools.record, name, agent, "error", text, data)
            return _refusal(text, "error")


# ---------------------------------------------------------------------------- serving
def http_identity(ctx: Context) -> str:
    """The agent BearerAuth found for this request."""
    return ctx.request_context.request.scope["state"][AGENT_KEY]


def bind(port: int = 0) -> socket.socket:
    """A listening socket on 127.0.0.1. Made with IPPROTO_TCP so asyncio sets TCP_NODELAY on every
    connection (it checks the protocol number): without it small answers wait ~40 ms for
    delayed ACKs."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    sock.listen(512)
    return sock


def http_app(ctx: RunContext):
    server = CoordinationServer(CoordinationTools(ctx), http_identity)
    app = server.streamable_http_app(streamable_http_path=PATH, json_response=True, host=HOST)
    app.add_middleware(BearerAuth, book=ctx.tokens)
    return app


class Stopped(Exception):
    """SIGTERM or SIGINT: the server is asked to stop (a normal end, exit 0)."""


def _stop(signum, frame) -> None:
    raise Stopped(signum)


def _until_stopped(main) -> None:
    """Run ``main`` (a coroutine) until it ends or a stop signal comes. uvicorn handles the signal
    itself while it serves (a graceful shutdown), then raises it again: here, not a death by signal."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    try:
        asyncio.run(main)
    except Stopped:
        pass


def serve_http(ctx: RunContext, sock: socket.socket) -> None:
    """Serve until SIGTERM or SIGINT."""
    import uvicorn  # lazy: only the HTTP transport needs it

    config = uvicorn.Config(http_app(ctx), log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
    _until_stopped(uvicorn.Server(config).serve(sockets=[sock]))


def serve_stdio(ctx: RunContext, agent: str) -> None:
    """Serve on stdin/stdout until stdin ends or a stop signal comes."""
    server = CoordinationServer(CoordinationTools(ctx), lambda _ctx: agent)
    _until_stopped(server.run_stdio_async())
