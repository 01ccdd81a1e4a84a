"""`orch run`, `orch resume`, `orch metrics`: start runs, pick one up again, read its metrics."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from coordstore.errors import UsageError
from coordstore.models import UNSUCCESSFUL

from orchestrator.cli.app import app, interrupt_exits, print_json
from orchestrator.views.bestofmetrics import BESTOF_KEYS
from orchestrator.views.coordmetrics import COORDINATION_KEYS
from orchestrator.views.custommetrics import DEFINED, run_metrics
from orchestrator.views.forecastmetrics import forecast_line
from orchestrator.views.overhead import overhead_line
from orchestrator.views.runinfo import open_run
from orchestrator.views.verified import FINAL, verifications, verify_line


def _fmt_s(ms) -> str:
    return "-" if ms is None else f"{ms / 1000:.2f}s"


def _unfinished(outcome) -> list[tuple[str, str, str | None]]:
    """(id, status, reason on one line) of the run's failed and cancelled tasks, from its store."""
    from coordstore import open_store  # lazy: `orch`'s start-up
    from orchestrator.runs.exports import one_line  # lazy: as above

    with open_store(outcome.spec.store_url, readonly=True) as s:
        return [(t.id, t.status, one_line(t.reason)) for t in s.list_tasks(outcome.run_id, status=sorted(UNSUCCESSFUL))]


def _verified(metrics: dict, spec) -> str | None:
    """The run's merged_verified line (``verify:``), its failure reason read from its store."""
    if metrics.get("merged_verified") is None and not metrics.get("merges_verified"):
        return None
    from coordstore import open_store  # lazy: `orch`'s start-up
    from orchestrator.runs.exports import one_line  # lazy: as above

    with open_store(spec.store_url, readonly=True) as s:
        finals = verifications(s.history(spec.run_id, entity="run"), FINAL)
    return verify_line(metrics, one_line(finals[-1]["reason"]) if finals and finals[-1]["reason"] else None)


def _render_outcomes(outcomes, quiet: bool) -> None:
    # lazy: `orch`'s start-up; rich only when a table is printed
    from rich.console import Console
    from rich.table import Table

    table = Table(title="orch run", show_lines=False)
    several = len({o.spec.variant for o in outcomes}) > 1  # `--all`: say which variant each run is
    for col in ("variant",) * several + ("run", "status", "done", "wall", "bound", "eff", "cont.", "disp.", "confl."):
        table.add_column(col, no_wrap=True)
    for o in outcomes:
        m = o.metrics
        table.add_row(
            *(o.spec.variant,) * several, o.run_id.rsplit("-", 2)[-2] + "-" + o.run_id.rsplit("-", 1)[-1], o.status, f"{m['tasks_completed']}/{m['tasks_total']}", _fmt_s(m["wall_clock_ms"]),
            _fmt_s(m["lower_bound_ms"]), f"{m['efficiency']:.3f}", f"{m['claim_contention']:.3f}",
            "-" if m["dispatch_latency_ms"] is None else f"{m['dispatch_latency_ms']:.0f}ms", str(m["merge_conflicts"]),
        )
    Console().print(table)
    for o in outcomes:  # plain lines: paths must stay copyable, never wrapped
        m = o.metrics
        if len(outcomes) == 1:
            typer.echo(overhead_line(m))
        if len(outcomes) == 1 or m["merge_conflicts"] or m.get("conflict_forecasts"):
            typer.echo(forecast_line(m))
        verified = _verified(m, o.spec)
        if verified:
            typer.echo(verified)
        if m["tasks_failed"] or m["tasks_cancelled"]:
            typer.echo(f"tasks: {m['tasks_failed']} failed, {m['tasks_cancelled']} cancelled"
                       + ("; the experiment allows failures" if o.spec.allow_failures else f"; run {o.status}"))
            for tid, status, reason in _unfinished(o):
                typer.echo(f"  {status} {tid}: {reason}")
        failed = [c for c in o.criteria if not c["passed"]]
        if o.criteria and (failed or len(outcomes) == 1):
            typer.echo(f"success criteria: {len(o.criteria) - len(failed)}/{len(o.criteria)} passed"
                       + "".join(f"; FAIL {c['metric']} {c['op']} {c['value']} (got {c['got']})" for c in failed))
        typer.echo(f"results: {o.run_dir}")
        typer.echo(f"branches: {o.spec.merged_branch} (merged), {o.spec.branch_prefix}/<agent> in {o.spec.repo}")
    if len(outcomes) > 1:  # one line each for what every run shares, not ten
        typer.echo(f"mean of {len(outcomes)} runs: " + overhead_line(_mean_overhead([o.metrics for o in outcomes])))
        if all(o.criteria and all(c["passed"] for c in o.criteria) for o in outcomes):
            typer.echo(f"success criteria: {len(outcomes[0].criteria)}/{len(outcomes[0].criteria)} passed in every run")


def _mean_overhead(ms: list[dict]) -> dict:
    """The overhead line's inputs averaged over runs (a break-even only when every run has one)."""
    if any("orchestration_overhead_ms" not in m for m in ms):
        return {}
    keys = ("setup_ms", "spawn_ms", "drain_ms", "final_merge_ms", "overhead_share", "speedup_vs_solo", "solo_estimate_ms")
    out = {k: sum(m[k] for m in ms) / len(ms) for k in keys}
    evens = [m["break_even_task_ms"] for m in ms]
    out["break_even_task_ms"] = None if None in evens else sum(evens) / len(evens)
    out["orchestration_overhead_ms"] = sum(m["orchestration_overhead_ms"] for m in ms) / len(ms)
    return out


def _write_comparison(experiment_dir: Path) -> list[Path]:
    """The experiment's comparison.md/json/html and metrics.parquet over every run in its results
    directory."""
    from orchestrator.views.compare import write_comparison  # lazy: scipy only when comparing
    from orchestrator.views.tables import write_experiment_metrics  # lazy: pyarrow only when writing tables

    table = write_experiment_metrics(experiment_dir)
    return write_comparison(experiment_dir) + ([table] if table else [])


@app.command("run")
@interrupt_exits()
def run_cmd(
    variant: str | None = typer.Option(None, "--variant", "-v", help="Variant name (or EXPERIMENT/VARIANT), searched across experiments/*.yaml."),
    experiment: Path | None = typer.Option(None, "--experiment", "-e", help="Experiment YAML file to take the variant from."),
    every: bool = typer.Option(False, "--all", help="Run every variant of --experiment, replications interleaved (A B C A B C ...) with paired seeds, then write the experiment's comparison."),
    template: str | None = typer.Option(None, "--template", help="Template file or shipped template name (overrides the experiment's)."),
    repo: Path | None = typer.Option(None, "--repo", help="Target git repository (default: a demo repo built from the template)."),
    base: str | None = typer.Option(None, "--base", help="Base commit or ref in --repo for every agent branch (default HEAD; with --history, the range's start)."),
    history: str | None = typer.Option(None, "--history", help="A..B: replay this range of --repo's history: the template is built from it (one task per commit, as `orch template from-history`), the run based on A. Use a replay variant, e.g. --set kind=replay."),
    history_deps: str = typer.Option("files", "--history-deps", help="With --history: how tasks depend on each other: files (each on the last earlier commit touching its paths), linear, none."),
    sets: list[str] = typer.Option([], "--set", help="KEY=VALUE: set any variant or experiment key, dotted, VALUE read as YAML (repeatable): --set kind=replay --set agents=8 (8 workers of the variant's kind) --set policy_options.order=fifo --set sim.p_fail=0.1 --set seed=7."),
    runs: int | None = typer.Option(None, "--runs", "-n", help="Replications (default: the experiment's)."),
    seed: int | None = typer.Option(None, "--seed", help="Base seed; replication i uses seed + i - 1."),
    time_scale: float | None = typer.Option(None, "--time-scale", help="Simulated ms per estimated ms (sim agents)."),
    store: str | None = typer.Option(None, "--store", help="Store URL, or 'sqlite'/'file' for one inside the run directory."),
    results: Path = typer.Option(Path("experiments/results"), "--results", help="Directory that receives the run directories."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object with the run directories and headline metrics."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No live progress."),
    workers: str = typer.Option("local", "--workers", help="local: orch runs the agents here; external: `orch worker`s on any host take them (needs --remote and a store they reach)."),
    remote: str | None = typer.Option(None, "--remote", help="Git URL of the bare repository coordinator and workers share (a local path is created if missing)."),
) -> None:
    """Run a variant of an experiment (or, with --all, every variant): set up worktrees, run the
    agents, merge, export metrics."""
    # lazy: `orch`'s start-up; yaml, watchdog
    from orchestrator.runs.launch import HEADLINE, RunRequest, plan_runs, run_one
    from orchestrator.runs.schedule import plan_experiment, record_start

    if (variant is None) == (not every):
        raise UsageError("give --variant NAME, or --all with --experiment FILE (not both)")
    req = RunRequest(variant=variant or "", experiment=experiment, template=template, repo=repo, runs=runs, seed=seed,
                     time_scale=time_scale, store=store, results=results, base=base,
                     workers=workers, remote=remote, sets=list(sets), history=history, history_deps=history_deps)
    schedule = plan_experiment(req, plan_runs) if every else None
    plans = [s.plan for s in schedule] if every else plan_runs(req)
    outcomes = []
    live = not (quiet or as_json) and sys.stderr.isatty()
    for i, plan in enumerate(plans, 1):
        if every:
            record_start(results, schedule[i - 1])
        if live:
            from rich.progress import Progress  # lazy: `orch`'s start-up; rich only for live progress

            with Progress(transient=True) as bar:
                job = bar.add_task(f"run {i}/{len(plans)} {plan[0].variant}", total=None)
                outcomes.append(run_one(*plan, progress=lambda d, t: bar.update(job, completed=d, total=t)))
        else:
            outcomes.append(run_one(*plan))
            if not as_json and not quiet:
                typer.echo(f"run {i}/{len(plans)} {outcomes[-1].run_id}: {outcomes[-1].status}", err=True)
    written = _write_comparison(results / plans[0][0].experiment_id) if every else []
    if as_json:
        print_json({
            "version": 1,
            "variant": None if every else plans[0][0].variant,
            "experiment": plans[0][0].experiment_id,
            "runs": [{"run_id": o.run_id, "run_dir": str(o.run_dir), "status": o.status, "variant": o.spec.variant,
                      "seed": o.spec.seed, "merged_branch": o.spec.merged_branch, "repo": o.spec.repo,
                      "metrics": {k: o.metrics.get(k) for k in HEADLINE},
                      "criteria": o.criteria} for o in outcomes],
            "comparison": [str(p) for p in written],
        })
    else:
        _render_outcomes(outcomes, quiet)
        for p in written:
            typer.echo(f"comparison: {p}")
    if any(o.status != "finished" for o in outcomes):
        raise typer.Exit(1)


@app.command("resume")
@interrupt_exits()
def resume_cmd(
    run_dir: Path = typer.Argument(..., help="The run directory (or run id) of an interrupted run."),
    as_json: bool = typer.Option(False, "--json", help="Print the outcome as JSON."),
) -> None:
    """Finish an interrupted run: re-attach live runners, respawn the others, requeue their tasks, export.
    Refused while the run's orchestrator is alive, and for a run that already ended."""
    from orchestrator.runs.loop import Orchestrator  # lazy: `orch`'s start-up; watchdog only for running

    orch = Orchestrator.of_run(run_dir)
    try:
        status = orch.conduct(resume=True)
    finally:
        orch.close()
    metrics = json.loads(orch.paths.metrics.read_text())
    if as_json:
        print_json({"version": 1, "run_dir": str(orch.paths.root), "status": status, "metrics": metrics})
    else:
        failures = "".join(f", {metrics[f'tasks_{k}']} {k}" for k in UNSUCCESSFUL if metrics[f"tasks_{k}"])
        typer.echo(f"{orch.spec.run_id}: {status}, {metrics['tasks_completed']}/{metrics['tasks_total']} tasks completed{failures}")
        typer.echo(overhead_line(metrics))  # every session's phases, this resume's included
        verified = _verified(metrics, orch.spec)
        if verified:
            typer.echo(verified)
    if status != "finished":
        raise typer.Exit(1)


@app.command("metrics")
def metrics_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory."),
    as_json: bool = typer.Option(False, "--json", help="Print every metric as one JSON object."),
) -> None:
    """Compute a run's metrics from its recorded history, with those its experiment file defines."""
    ref = open_run(run_dir)
    with ref.open_store() as store:
        m = run_metrics(store.dump_run(ref.run_id), ref.paths.experiment)
    if as_json:
        print_json(m)
        return
    if not m[DEFINED]:  # an experiment that defines none: no empty group
        del m[DEFINED]
    if not m.get(BESTOF_KEYS[0]):  # no best-of rounds: no group of zeros (--json keeps them)
        m = {k: v for k, v in m.items() if k not in BESTOF_KEYS}
    width = max(map(len, m))
    for k, v in m.items():
        if k == COORDINATION_KEYS[0]:
            typer.echo("# agent coordination")
        if k == BESTOF_KEYS[0]:
            typer.echo("# best-of rounds")
        if k == DEFINED:
            typer.echo("# defined in the experiment file")
        typer.echo(f"{k:{width}} {json.dumps(v, sort_keys=True)}")


agent_app = typer.Typer(help="The agent side: run one agent's runner loop by hand.", no_args_is_help=True)
app.add_typer(agent_app, name="agent")


@agent_app.command("run")
def agent_run_cmd(
    config: Path = typer.Option(..., "--config", help="The runner config JSON (orch writes one per agent under <run>/agents/)."),
) -> None:
    """Run one agent's loop (the same as `python -m agents.runner --config FILE`)."""
    from agents.runner import main as runner_main  # lazy: `orch`'s start-up; the agent side only for `orch agent run`

    raise typer.Exit(runner_main(["--config", str(config)]))
