"""``orch mcp RUN_DIR [--http [--port N] | --stdio]``: serve one run's coordination tools (MCP).

HTTP (the default) on 127.0.0.1: the first line on stdout is ``listening <url>``; every request
carries its agent's token (``Authorization: Bearer``). ``--stdio``: MCP on stdin/stdout as the
agent whose token is in ``$ORCH_MCP_TOKEN`` (how an MCP client launches a server per agent).
Tokens are the run's own (``<run dir>/coordination.json``).
"""

from __future__ import annotations

from pathlib import Path

import typer

from coordstore.errors import UsageError

from orchestrator.cli.app import app


@app.command("mcp")
def mcp(
    run_dir: Path = typer.Argument(..., help="the run directory (holds run.json)"),
    http: bool = typer.Option(False, "--http", help="serve streamable HTTP on 127.0.0.1 (the default)"),
    port: int | None = typer.Option(None, "--port", "-p", help="--http: TCP port (0 or unset: any free port)"),
    stdio: bool = typer.Option(False, "--stdio", help="speak MCP on stdin/stdout as the agent of $ORCH_MCP_TOKEN"),
) -> None:
    """Serve a run's coordination tools (MCP) to its agents."""
    if http and stdio:
        raise UsageError("--http and --stdio are alternatives: give one")
    if port is not None and stdio:
        raise UsageError("--port goes with --http (stdio has no port)")
    if port is not None and not 0 <= port <= 65535:
        raise UsageError(f"--port {port}: must be between 0 and 65535")
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such run directory")
    from orchestrator.coordination.serving import Serving  # lazy: `orch`'s start-up; the MCP SDK only for this command

    serving = Serving.open(str(run_dir), port or 0, stdio)
    if serving.url:
        typer.echo(f"listening {serving.url}")
    serving.run()
