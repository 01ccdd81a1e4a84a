"""``orch model-server``: serve a scripted model on 127.0.0.1 until interrupted.

The first line on stdout is the URL, the second the key every client must send as its API key
(so a script can read both); with ``--verbose`` every request is summarized on stderr as it comes.
The key is random unless ``ORCH_MODEL_SERVER_KEY`` gives one (an environment variable, not an
option: command lines are visible to every user of the machine).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import typer

from coordstore.errors import InputError, OrchError, UsageError

from orchestrator.cli.app import app

KEY_ENV = "ORCH_MODEL_SERVER_KEY"
MIN_KEY = 16  # characters of a key given by the user: shorter ones are guessable
FAULT_HELP = "KIND@TURN, e.g. rate_limit@1 or hang@2 (kinds: rate_limit, overloaded, cut, hang, loop, error); repeatable"


def parse_fault_option(text: str):
    """``KIND@TURN[:times=N][:retry_after=S]`` -> (turn, Fault); UsageError names the option."""
    from orchestrator.modelserver.turns import parse_fault  # lazy: `orch`'s start-up; the model server only for its command

    head, *opts = text.split(":")
    kind, sep, turn = head.partition("@")
    if not sep or not turn.isdigit():
        raise UsageError(f"--fault {text!r}: expected KIND@TURN (e.g. rate_limit@1)")
    raw: dict = {"kind": kind}
    for o in opts:
        k, eq, v = o.partition("=")
        if not eq or k not in ("times", "retry_after", "status"):
            raise UsageError(f"--fault {text!r}: option {o!r} is not times=N, retry_after=S or status=N")
        try:
            raw[k] = None if (k == "times" and v in ("always", "")) else (float(v) if k == "retry_after" else int(v))
        except ValueError as e:
            raise UsageError(f"--fault {text!r}: {k}={v!r} is not a number") from e
    try:
        return int(turn), parse_fault(raw, f"--fault {text!r}")
    except InputError as e:  # an unknown kind, a number out of range: the option is wrong
        raise UsageError(str(e)) from e


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@app.command("model-server")
def model_server(
    script: str = typer.Option("sim", "--script", "-s", help="sim, replay, or a YAML/JSON file of turns"),
    port: int = typer.Option(0, "--port", "-p", help="TCP port on 127.0.0.1 (0: any free port)"),
    fault: list[str] = typer.Option([], "--fault", help=FAULT_HELP),
    repo: Path | None = typer.Option(None, "--repo", help="replay: the repository holding the commits, when a session names no worktree"),
    tasks: Path | None = typer.Option(None, "--tasks", help="a template or snapshot: the tasks named in prompts ('Task ID: ...')"),
    store: str | None = typer.Option(None, "--store", help="with --run: look the tasks up in this run's store instead"),
    run: str | None = typer.Option(None, "--run", help="the run whose tasks --store holds"),
    record: Path | None = typer.Option(None, "--record", help="append one JSON line per request to this file"),
    worktree: list[Path] = typer.Option([], "--worktree", "-w", help="a directory below which requests may have files read "
                                        "(the agents' worktrees); repeatable; default: the current directory"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="print one line per request on stderr"),
) -> None:
    """Serve the Anthropic and OpenAI APIs on 127.0.0.1, answered by a script (for real agent CLIs, offline)."""
    from orchestrator.modelserver import ModelServer  # lazy: `orch`'s start-up; the model server only for its command

    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port}: must be between 0 and 65535")
    faults = dict(parse_fault_option(f) for f in fault)
    if (store is None) != (run is None):
        raise UsageError("--store and --run go together (the run whose tasks the server looks up)")
    if tasks is not None and store is not None:
        raise UsageError("--tasks and --store are alternatives: give one")
    source = None
    if tasks is not None:
        from orchestrator.modelserver.tasksource import GraphTasks  # lazy: `orch`'s start-up (the model server package)

        if not tasks.is_file():
            raise InputError(f"--tasks {tasks}: no such file")
        source = GraphTasks(tasks)
    elif store is not None:
        from orchestrator.modelserver.tasksource import StoreTasks  # lazy: `orch`'s start-up (the model server package)

        source = StoreTasks(store, run)
        try:
            source.check()
        except OrchError as e:
            raise InputError(f"--store {store} --run {run}: {e}") from e
    if repo is not None and script != "replay":
        raise UsageError(f"--repo {repo}: only the replay script reads a repository")
    options = {"repo": str(repo)} if repo else {}
    for w in worktree:
        if not w.is_dir():
            raise InputError(f"--worktree {w}: no such directory")
    key = os.environ.get(KEY_ENV) or None
    if key is not None and len(key) < MIN_KEY:
        raise InputError(f"{KEY_ENV}: at least {MIN_KEY} characters (or unset it for a random key)")

    def log(entry: dict) -> None:
        what = entry.get("fault") or ("side" if entry.get("side") else ",".join(entry.get("tool_calls") or []) or "text")
        print(f"{entry['seq']:>5} {entry['api']:<9} {entry['session']:<20} turn {entry['turn']:<3} {entry['status']} {what}",
              file=sys.stderr, flush=True)

    srv = ModelServer(script, port=port, script_options=options, faults=faults, record=record, tasks=source,
                      log=log if verbose else None, key=key, worktrees=worktree or [Path.cwd()])
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it as cleanly as Ctrl-C
    typer.echo(srv.url)
    typer.echo(srv.key)
    print(f"orch model-server: script {getattr(srv.script, 'name', script)}, "
          f"ANTHROPIC_BASE_URL={srv.url} OPENAI_BASE_URL={srv.url}/v1 GOOGLE_GEMINI_BASE_URL={srv.url}, "
          f"API key: the second line on stdout (ANTHROPIC_API_KEY, OPENAI_API_KEY, GEMINI_API_KEY); "
          f"files read only below {', '.join(map(str, srv.worktrees.roots))}; Ctrl-C stops", file=sys.stderr, flush=True)
    sys.stdout.flush()
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.httpd.server_close()
        print(f"orch model-server: stopped; usage {json.dumps(srv.usage(), sort_keys=True)}", file=sys.stderr)
