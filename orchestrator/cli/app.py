"""The `orch` command line: a thin layer that parses, calls one library function, renders.

Commands live in small ``cli_*`` modules that register on ``app``; this module owns the
conventions: one-line errors on stderr, exit 1 on error and 2 on usage, ``--debug`` for a
traceback, ``--json`` on read commands.

A usage error is a command line that is wrong as written: what the parser refuses (unknown
command or option, missing argument, a value of the wrong type or outside its range or choices)
and what orch refuses as ``UsageError`` (a number out of range, a variant, agent or task that
names nothing, options that exclude or need each other). Both print one line and exit 2.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer

from coordstore.errors import OrchError, UsageError

from orchestrator import __version__

app = typer.Typer(
    name="orch",
    help="Run several coding agents at once on one git repository, coordinate them, merge their work, measure it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)
template_app = typer.Typer(help="Inspect and check task-graph templates.", no_args_is_help=True)
app.add_typer(template_app, name="template")

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"orch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show a traceback on errors."),
) -> None:
    _state["debug"] = debug or bool(os.environ.get("ORCH_DEBUG"))


def print_json(obj: Any) -> None:
    """The one way read commands print ``--json``: sorted keys, one object, newline."""
    typer.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


@contextmanager
def interrupt_exits() -> Iterator[None]:
    """Ctrl-C, SIGTERM or SIGHUP inside: one line on what became of the run, exit 128 + signal
    (typer would turn the interrupt into a silent 130)."""
    from orchestrator.supervision.interrupts import Interrupted

    try:
        yield
    except Interrupted as e:
        print(f"orch: {e}", file=sys.stderr)
        raise typer.Exit(e.exit_code) from None


def _one_line(text: str) -> str:
    """A message may carry a tool's multi-line output; stderr gets one line whatever it says."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _parser_message(e: Exception) -> str:
    """The parser's message on one line, with where to read the command's usage."""
    ctx = getattr(e, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return _one_line(e.format_message()) + hint


def main(argv: list[str] | None = None) -> None:
    # commands register on import; kept here so `import orchestrator.cli.app` stays light for tests
    # import order is the order of `orch --help`: running first, then reading, then the store layer
    from orchestrator import cli_run, cli_analysis, cli_ops, cli_store, cli_template, cli_model  # noqa: F401, I001

    try:
        # standalone_mode=False returns (not raises) the code of a command's `raise typer.Exit(n)`
        rc = app(args=argv, prog_name="orch", standalone_mode=False)
    except OrchError as e:
        if _state["debug"]:
            raise
        print(f"orch: error: {_one_line(str(e))}", file=sys.stderr)
        sys.exit(2 if isinstance(e, UsageError) else 1)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        print("orch: aborted", file=sys.stderr)
        sys.exit(1)
    except typer.TyperException as e:  # the parser's own errors (typer's vendored click): usage, exit 2
        if type(e).__name__ == "NoArgsIsHelpError":  # `orch` or a group without a command: its help
            e.show()
        else:
            print(f"orch: error: {_parser_message(e)}", file=sys.stderr)
        sys.exit(getattr(e, "exit_code", 2))
    except Exception as e:  # anything unexpected
        if _state["debug"]:
            raise
        print(f"orch: internal error: {type(e).__name__}: {e} (rerun with --debug for a traceback)", file=sys.stderr)
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)
