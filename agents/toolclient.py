"""A synchronous client of orch's coordination tools: the official MCP SDK (``mcp.Client`` over
streamable HTTP) driven from an anyio blocking portal, so role code stays plain and synchronous.

``ToolClient(url, token).call(name, **args)`` returns the JSON the tool returned (a dict or a
list); a tool error (``is_error``) raises ``ToolRefused`` with the tool's text and its outcome
(``lost``: a claim that lost its race, look again; ``error``; ``denied``). Anything
that keeps the call from reaching a tool -- the server is gone, the token is refused (HTTP 401),
a protocol error -- is an ``AgentError`` naming the server: the agent cannot coordinate, so its
runner ends and the supervisor takes over.

The SDK's session lives in one task of the portal's event loop for the client's whole life
(anyio scopes must be left in the task that entered them); each call runs as its own task on
that loop and waits for its answer there.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import anyio.from_thread
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from coordstore.errors import AgentError

CONNECT_TIMEOUT_S = 10.0  # the server is on this host: a connection that takes longer is not coming
CALL_TIMEOUT_S = 120.0  # completing a task merges and runs its verify command on the server's side


class ToolRefused(Exception):
    """A tool answered with an error: a bad argument or a refused rule (``outcome`` error), a claim
    that lost its race (``lost``), a call as another agent (``denied``)."""

    def __init__(self, text: str, outcome: str = "error"):
        super().__init__(text)
        self.text = text
        self.outcome = outcome

    @property
    def lost(self) -> bool:
        return self.outcome == "lost"


def parse_result(result: Any) -> Any:
    """The JSON a tool returned: its structured content (unwrapped from the SDK's ``{"result":
    ...}`` for non-object returns), else its text blocks read as JSON (several blocks: a list)."""
    structured = result.structured_content
    if structured is not None:
        if isinstance(structured, dict) and set(structured) == {"result"}:
            return structured["result"]
        return structured
    texts = [getattr(block, "text", None) for block in result.content]
    values = [_json_or_text(t) for t in texts if t is not None]
    if not values:
        return []
    return values[0] if len(values) == 1 else values


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def refusal(result: Any) -> ToolRefused:
    """An ``is_error`` result as ``ToolRefused``: orch's server says the outcome in its structured
    content (``{"error", "outcome"}``); any other server's error counts as ``error``."""
    text = " ".join(getattr(b, "text", "") for b in result.content).strip() or "tool error (no text)"
    structured = result.structured_content if isinstance(result.structured_content, dict) else {}
    outcome = structured.get("outcome")
    return ToolRefused(text, outcome if isinstance(outcome, str) else "error")


class ToolClient:
    """One agent's connection to the run's coordination server. Use ``close()`` (or ``with``)."""

    def __init__(self, url: str, token: str, connect_timeout_s: float = CONNECT_TIMEOUT_S,
                 call_timeout_s: float = CALL_TIMEOUT_S):
        if not url or not token:
            raise AgentError("coordination tools: ORCH_MCP_URL and ORCH_MCP_TOKEN must both be set")
        self.url = url
        self._token = token
        self._timeouts = (connect_timeout_s, call_timeout_s)
        self._portal_cm = anyio.from_thread.start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        self._closed: anyio.Event | None = None
        self._client: Client | None = None
        try:
            self._session_future, self._client = self._portal.start_task(self._session)
        except BaseException as e:
            self._portal_cm.__exit__(None, None, None)
            if isinstance(e, AgentError):
                raise
            raise AgentError(f"coordination server {url}: cannot connect ({_why(e)})") from e

    async def _session(self, task_status=anyio.TASK_STATUS_IGNORED) -> None:
        connect_s, call_s = self._timeouts
        timeout = httpx2.Timeout(connect_s, read=call_s)
        headers = {"Authorization": f"Bearer {self._token}"}
        async with httpx2.AsyncClient(headers=headers, timeout=timeout) as http:
            async with Client(streamable_http_client(self.url, http_client=http), read_timeout_seconds=call_s) as client:
                self._closed = anyio.Event()
                task_status.started(client)
                await self._closed.wait()

    def call(self, name: str, /, **args: Any) -> Any:
        """Call tool ``name`` with ``args`` (None values left out); its JSON, or ``ToolRefused``."""
        if self._client is None:
            raise AgentError(f"coordination server {self.url}: the client is closed")
        arguments = {k: v for k, v in args.items() if v is not None}
        try:
            result = self._portal.call(self._client.call_tool, name, arguments)
        except MCPError as e:
            raise AgentError(f"coordination server {self.url}: {name} failed ({e})") from e
        except (httpx2.HTTPError, OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as e:
            raise AgentError(f"coordination server {self.url}: {name} failed ({_why(e)})") from e
        if result.is_error:
            raise refusal(result)
        return parse_result(result)

    @property
    def token(self) -> str:
        """The agent's token (a CLI the runner starts is configured with the same server)."""
        return self._token

    def tool_names(self) -> frozenset[str]:
        """The names of the tools the server offers."""
        if self._client is None:
            raise AgentError(f"coordination server {self.url}: the client is closed")
        try:
            listed = self._portal.call(self._client.list_tools)
        except (MCPError, httpx2.HTTPError, OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as e:
            raise AgentError(f"coordination server {self.url}: list_tools failed ({_why(e)})") from e
        return frozenset(t.name for t in listed.tools)

    def close(self) -> None:
        """End the session (the server forgets it) and stop the portal. Idempotent."""
        if self._client is None:
            return
        self._client = None
        try:
            if self._closed is not None:
                self._portal.call(self._closed.set)
            self._session_future.result(timeout=self._timeouts[0])
        except Exception:  # a server already gone cannot be told goodbye: nothing is lost
            pass
        finally:
            self._portal_cm.__exit__(None, None, None)

    def __enter__(self) -> "ToolClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _why(e: BaseException) -> str:
    """One line for an error the SDK may have wrapped in exception groups."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
