"""What every command of the `orch` command line shares: ``app`` (commands register on it, one
module per command group beside this one), ``print_json`` for ``--json``, and the interrupt exit.
``orchestrator.cli.main`` runs the app and owns the error conventions."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer

from orchestrator import __version__
from orchestrator.supervision.interrupts import Interrupted

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
    try:
        yield
    except Interrupted as e:
        print(f"orch: {e}", file=sys.stderr)
        raise typer.Exit(e.exit_code) from None
