"""The `orch` command line: a thin layer that parses, calls one library function, renders.

Commands live in one module per command group that registers on ``app``; this module owns the
conventions: one-line errors on stderr, exit 1 on error and 2 on usage, ``--debug`` for a
traceback, ``--json`` on read commands.

A usage error is a command line that is wrong as written: what the parser refuses (unknown
command or option, missing argument, a value of the wrong type or outside its range or choices)
and what orch refuses as ``UsageError`` (a number out of range, a variant, agent or task that
names nothing, options that exclude or need each other). Both print one line and exit 2.
"""

from __future__ import annotations

import sys

import typer

from coordstore.errors import OrchError, UsageError
from orchestrator.cli.app import _state, app


def _one_line(text: str) -> str:
    """A message may carry a tool's multi-line output; stderr gets one line whatever it says."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _parser_message(e: Exception) -> str:
    """The parser's message on one line, with where to read the command's usage."""
    ctx = getattr(e, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return _one_line(e.format_message()) + hint


def main(argv: list[str] | None = None) -> None:
    # lazy: commands register on import; here, not at the top, so importing one command module stays light (tests)
    # import order is the order of `orch --help`: running first, then reading, then the store layer
    from orchestrator.cli import run, worker, analysis, ops, store, template, model, mcp  # noqa: F401, I001

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
