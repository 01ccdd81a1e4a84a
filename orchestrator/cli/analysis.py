"""`orch compare`, `orch report` and `orch plan`: variants side by side with honest statistics,
and whether an experiment's design can reach an answer."""

from __future__ import annotations

from pathlib import Path

import typer

from coordstore.errors import InputError, UsageError

from orchestrator.cli.app import app, print_json
from orchestrator.views.runinfo import DEFAULT_RESULTS

BASELINE_HELP = "The variant the others are measured against (default: the experiment's comparison.baseline, else its first variant)."


@app.command("compare")
def compare_cmd(
    dirs: list[Path] = typer.Argument(..., help="Run directories, or variant/experiment directories holding runs."),
    baseline: str | None = typer.Option(None, "--baseline", help=BASELINE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the full comparison as JSON."),
    html_out: Path | None = typer.Option(None, "--html", help="Also write the comparison as an HTML file."),
) -> None:
    """Compare variants: n, mean ± sd, median, 95% CI, Δ vs the baseline; Mann–Whitney U with A12,
    Holm-corrected; hypotheses' claims judged."""
    # lazy: `orch`'s start-up (yaml, the statistics and the documents only for comparisons)
    from orchestrator.views.compare import compare
    from orchestrator.views.comparedoc import html_body, html_page, markdown

    result = compare(dirs, baseline=baseline)
    if html_out is not None:
        html_out.write_text(html_page("orch compare", html_body(result)))
    if as_json:
        print_json(result)
    else:
        typer.echo(markdown(result), nl=False)


@app.command("report")
def report_cmd(
    experiment_dir: Path = typer.Argument(..., help="A results directory holding the runs of one experiment."),
    baseline: str | None = typer.Option(None, "--baseline", help=BASELINE_HELP),
) -> None:
    """Write report.md and report.html (the comparison, success criteria, charts: Gantt per run,
    completion curves, per-agent, box plots, scaling curves) and comparison.md/.json/.html."""
    from orchestrator.views.report import write_report  # lazy: `orch`'s start-up; matplotlib only for reports

    md, page = write_report(experiment_dir, baseline=baseline)
    typer.echo(f"wrote {md} and {page} (and comparison.md, .json, .html beside them)")


@app.command("plan")
def plan_cmd(
    experiment_file: Path = typer.Argument(..., help="An experiment file."),
    effect: float = typer.Option(0.71, "--a12", help="The A12 effect to detect (0.71: a large effect)."),
    alpha: float | None = typer.Option(None, "--alpha", help="Significance level (default: the experiment's comparison.alpha, else 0.05)."),
    results: Path | None = typer.Option(None, "--results", help="Pilot runs of this experiment (default: experiments/results/<experiment id>)."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Per pair of variants (and per claim): the smallest p reachable with the experiment's runs,
    before and after Holm, and the runs per variant needed for an A12 (from pilot runs if any)."""
    # lazy: `orch`'s start-up (the experiment loader, the comparison's runs and the plan only here)
    from orchestrator.runs.experiment import load_experiment
    from orchestrator.views.compare import DEFAULT_COMPARED, find_runs, values_of
    from orchestrator.views.plan import plan, plan_text

    if not 0 <= effect <= 1 or effect == 0.5:
        raise UsageError(f"--a12 {effect}: an effect is an A12 in [0, 1] other than 0.5 (no effect)")
    if alpha is not None and not 0 < alpha < 1:
        raise UsageError(f"--alpha {alpha}: must lie between 0 and 1")
    exp = load_experiment(experiment_file)
    alpha = alpha if alpha is not None else exp.comparison.alpha
    runs = {v.name: exp.execution_for(v).runs for v in exp.variants}
    if results is not None and not results.is_dir():
        raise InputError(f"--results {results}: not a directory")
    where = results if results is not None else DEFAULT_RESULTS / exp.experiment.id
    try:
        found = find_runs([where]) if where.is_dir() else {}
    except InputError:  # a directory with no finished runs: no pilot
        found = {}
    metrics = [m.name for m in exp.metrics] or list(DEFAULT_COMPARED)
    hypotheses = [h.model_dump() for h in exp.experiment.hypotheses]
    p = plan(runs, alpha, effect, metrics, values_of(found) if found else None, hypotheses)
    p.update(experiment=exp.experiment.id, pilot_runs=str(where) if found else None)
    if as_json:
        print_json(p)
        return
    typer.echo(plan_text(p, f"{exp.experiment.id} ({experiment_file})"), nl=False)
    typer.echo(f"pilot runs: {where}" if found else f"no pilot runs under {where}")
