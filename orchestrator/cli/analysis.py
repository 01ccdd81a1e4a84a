"""`orch compare`: variants side by side with honest statistics."""

from __future__ import annotations

import html
from pathlib import Path

import typer

from orchestrator.cli.app import app, print_json
from orchestrator.views.compare import compare, markdown


@app.command("compare")
def compare_cmd(
    dirs: list[Path] = typer.Argument(..., help="Run directories, or variant/experiment directories holding runs."),
    as_json: bool = typer.Option(False, "--json", help="Print the full comparison as JSON."),
    html_out: Path | None = typer.Option(None, "--html", help="Also write the tables as an HTML file."),
) -> None:
    """Compare variants: n, mean ± sd, median, 95% CI; Mann–Whitney U with A12, Holm-corrected."""
    result = compare(dirs)
    md = markdown(result)
    if html_out is not None:
        body = "".join(f"<pre>{html.escape(md)}</pre>")
        html_out.write_text(f"<!doctype html><meta charset=utf-8><title>orch compare</title>{body}\n")
    if as_json:
        print_json(result)
    else:
        typer.echo(md, nl=False)


@app.command("report")
def report_cmd(
    experiment_dir: Path = typer.Argument(..., help="A results directory holding the runs of one experiment."),
) -> None:
    """Write report.md and report.html with charts (Gantt per run, completion curves, per-agent, box plots)."""
    from orchestrator.views.report import write_report  # lazy: `orch`'s start-up; yaml only for reports

    md, page = write_report(experiment_dir)
    typer.echo(f"wrote {md} and {page}")
