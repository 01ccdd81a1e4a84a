"""`orch import` and `orch export`: move a template or a whole run between a file and a store."""

from __future__ import annotations

from pathlib import Path

import typer

from coordstore import open_store
from coordstore.templates import EXPORT_FORMATS, export_run, import_file, read_for_import

from orchestrator.cli.app import app, print_json


def _counts(by_type: dict[str, int]) -> str:
    parts = [f"{n} {t}" for t, n in by_type.items() if n]
    return f" ({', '.join(parts)})" if parts else ""


@app.command("import")
def import_cmd(
    file: Path = typer.Argument(..., help="Template or snapshot file: orch-snapshot, orch-graph or task-graph-mcp JSON (.gz ok)."),
    store: str = typer.Option(..., "--store", help="Store URL, e.g. sqlite:///abs/orch.db or file:///abs/dir."),
    run: str | None = typer.Option(None, "--run", help="Run id to create (default: the file name plus a short unique suffix; snapshots keep their own)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON: run, tasks, dependencies, by_type."),
) -> None:
    """Validate a template or snapshot completely, then load it into the store as one new run."""
    loaded = read_for_import(file)  # validate completely before the store is even opened
    with open_store(store) as s:
        result = import_file(s, loaded, run)
    if json_out:
        print_json(result)
    else:
        typer.echo(
            f"imported {result['tasks']} tasks, {result['dependencies']} dependencies{_counts(result['by_type'])} "
            f"from {file} into run {result['run']}"
        )


@app.command("export")
def export_cmd(
    store: str = typer.Option(..., "--store", help="Store URL to read the run from."),
    output: Path = typer.Option(..., "-o", "--output", help="File to write (atomically; gzip-compressed when it ends in .gz)."),
    run: str | None = typer.Option(None, "--run", help="Run to export (default: the store's only run)."),
    fmt: str = typer.Option("orch", "--format", help=f"File format: {' or '.join(EXPORT_FORMATS)} (orch = byte-stable orch-snapshot)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Write one run of the store to a file, in orch's snapshot format or task-graph-mcp's."""
    with open_store(store, readonly=True) as s:
        result = export_run(s, output, run, fmt)
    if json_out:
        print_json(result)
    else:
        typer.echo(f"exported run {result['run']} ({result['tasks']} tasks, {result['dependencies']} dependencies) to {output} as {result['format']}")
