"""``python -m orchestrator.coordination --run-dir DIR [--port 0] [--stdio [--token T]]``: one run's
coordination server.

HTTP (the default): binds 127.0.0.1, prints ``listening <url>`` as its first line on stdout, and
serves until SIGTERM or SIGINT. ``--stdio``: speaks MCP on stdin/stdout as the agent whose token
is ``--token`` or ``$ORCH_MCP_TOKEN`` (checked before serving).

Exit status: 0 stopped, 1 the run cannot be served (one line on stderr), 2 usage.
"""

from __future__ import annotations

import argparse
import sys

from coordstore.errors import OrchError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m orchestrator.coordination", description="Serve one run's coordination tools (MCP).")
    ap.add_argument("--run-dir", required=True, help="the run directory (holds run.json)")
    ap.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free port)")
    ap.add_argument("--stdio", action="store_true", help="speak MCP on stdin/stdout instead of HTTP")
    ap.add_argument("--token", help="--stdio: the agent's token (default: $ORCH_MCP_TOKEN)")
    ap.add_argument("--parent-pid", type=int, help="the orchestrator that started it: once it is gone and the run is over, stop")
    args = ap.parse_args(argv)
    if not 0 <= args.port <= 65535:
        ap.error(f"--port {args.port}: must be between 0 and 65535")
    if args.token and not args.stdio:
        ap.error("--token goes with --stdio (over HTTP every request carries its own)")
    from orchestrator.coordination.serving import Serving  # lazy: --help and usage errors answer without the SDK

    try:
        serving = Serving.open(args.run_dir, args.port, args.stdio, args.token)
    except OrchError as e:
        print(f"orch mcp: {e}", file=sys.stderr)
        return 1
    if serving.url:
        print(f"listening {serving.url}", flush=True)
    if args.parent_pid is not None:
        from orchestrator.coordination.orphan import watch  # lazy: only servers an orchestrator started

        watch(serving.ctx, args.parent_pid)
    serving.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
