"""`orch template lint` and `orch template show`: check a template, and describe its shape."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from coordstore import snapshot
from coordstore.lint import lint_file, show_file
from coordstore.templates import TGMCP, encode_document, save_file

from orchestrator.cli.app import print_json, template_app


@template_app.command("lint")
def lint_cmd(
    file: Path = typer.Argument(..., help="Template or snapshot file to check (any format orch reads; .gz ok)."),
    json_out: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
) -> None:
    """Report errors and warnings in a template; exit 1 when there is an error, 0 otherwise."""
    report = lint_file(file)
    if json_out:
        print_json(report.to_json())
    else:
        for f in report.findings:
            typer.echo(f"{f.severity}: {f.code}: {f.message}")
        fmt = f" ({report.format})" if report.format else ""
        typer.echo(f"{file}{fmt}: {report.errors} errors, {report.warnings} warnings")
    raise typer.Exit(1 if report.errors else 0)


def _ms(ms: float) -> str:
    return f"{ms / 60_000:.1f} min"


@template_app.command("show")
def show_cmd(
    file: Path = typer.Argument(..., help="Template or snapshot file to describe (must be valid; see `orch template lint`)."),
    json_out: bool = typer.Option(False, "--json", help="Print the description as JSON."),
) -> None:
    """Counts, depth, ready-at-start tasks, total estimate, critical path and parallelism ceiling."""
    info = show_file(file)
    if json_out:
        print_json(info)
        return
    by_type = ", ".join(f"{n} {t}" for t, n in info["by_type"].items())
    cp = info["critical_path"]
    ceiling = "n/a" if info["parallelism_ceiling"] is None else f"{info['parallelism_ceiling']:.2f}"
    lines = [
        f"{info['file']} ({info['format']})",
        f"tasks            {info['tasks']} ({info['work_tasks']} work, {info['containers']} containers)",
        f"dependencies     {info['dependencies']} ({by_type})",
        f"depth            {info['depth']} work tasks on the longest chain; nesting {info['nesting']}",
        f"ready at start   {info['ready_at_start']}",
        f"total estimate   {_ms(info['total_estimate_ms'])} ({info['unestimated']} tasks unestimated, default used)",
        f"critical path    {_ms(cp['length_ms'])}: {' -> '.join(cp['tasks'])}",
        f"parallelism      {ceiling} (total estimate / critical path)",
    ]
    typer.echo("\n".join(lines))


@template_app.command("from-history")
def from_history_cmd(
    repo: Path = typer.Argument(..., help="The git repository whose history becomes the template."),
    rev_range: str = typer.Argument(..., metavar="A..B", help="Commits reachable from B and not from A (A..: up to HEAD)."),
    deps: str = typer.Option("files", "--deps", help="Dependencies: none | files (latest earlier commit on each path) | linear."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Write the template here (.gz ok); default: print it to stdout."),
    json_out: bool = typer.Option(False, "--json", help="With -o: print the summary as JSON."),
) -> None:
    """One task per non-merge commit of A..B (task-graph-mcp format) for the replay kind; run it with --base A."""
    from gitwork.history import build, run_hint  # lazy: `orch`'s start-up; light commands never load the git layer

    made = build(repo, rev_range, deps)
    info = made.summary
    if output is None:  # stdout carries the template; the summary goes to stderr
        sys.stdout.buffer.write(snapshot.canonical_json(encode_document(made.graph, TGMCP)))
        sys.stdout.flush()
        typer.echo(f"{info['tasks']} tasks, {info['dependencies']} dependencies ({deps}) from {rev_range}", err=True)
        for w in info["warnings"]:
            typer.echo(f"warning: {w}", err=True)
        return
    save_file(output, made.graph, fmt=TGMCP)
    info = {**info, "file": str(output), "run": run_hint(info, str(output))}
    if json_out:
        print_json(info)
        return
    for w in info["warnings"]:
        typer.echo(f"warning: {w}", err=True)
    typer.echo(f"{output}: {info['tasks']} tasks, {info['dependencies']} dependencies ({deps}), "
               f"{info['total_estimate_ms'] / 3_600_000:.1f} h estimated, from {rev_range} "
               f"({info['base'][:12]}..{info['head'][:12]})")
    typer.echo(f"replay it: {info['run']}")
