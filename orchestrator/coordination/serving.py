"""Opening a run for serving and serving it: what ``python -m orchestrator.coordination`` and
``orch mcp`` share. ``Serving.open`` does every check that can fail (the run directory, its store,
the port, the stdio token) and raises ``OrchError``; ``run`` then serves until stopped."""

from __future__ import annotations

import os

from coordstore.errors import InputError

from orchestrator.coordination.runctx import RunContext
from orchestrator.coordination.server import PATH, bind, serve_http, serve_stdio
from orchestrator.coordination.tokens import TokenRefused

TOKEN_ENV = "ORCH_MCP_TOKEN"  # the agent's token (stdio; agents get it at spawn)
URL_ENV = "ORCH_MCP_URL"  # the server's URL (agents get it at spawn)


class Serving:
    def __init__(self, ctx: RunContext, sock=None, agent: str | None = None):
        self.ctx, self.sock, self.agent = ctx, sock, agent

    @classmethod
    def open(cls, run_dir: str, port: int = 0, stdio: bool = False, token: str | None = None) -> "Serving":
        ctx = RunContext(run_dir)
        try:
            ctx.check()
            if stdio:
                try:
                    return cls(ctx, agent=ctx.tokens.agent_of(token or os.environ.get(TOKEN_ENV)))
                except TokenRefused as e:
                    hint = "" if token or os.environ.get(TOKEN_ENV) else " (set it to the agent's token)"
                    raise InputError(f"{'--token' if token else TOKEN_ENV}: {e}{hint}") from None
            try:
                return cls(ctx, sock=bind(port))
            except OSError as e:
                raise InputError(f"cannot listen on 127.0.0.1:{port} ({e.strerror or e})") from e
        except BaseException:
            ctx.close()
            raise

    @property
    def url(self) -> str | None:
        if self.sock is None:
            return None
        host, port = self.sock.getsockname()[:2]
        return f"http://{host}:{port}{PATH}"

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT (HTTP) or the end of stdin (stdio)."""
        try:
            if self.sock is None:
                serve_stdio(self.ctx, self.agent)
            else:
                serve_http(self.ctx, self.sock)
        except KeyboardInterrupt:
            pass
        finally:
            self.ctx.close()
