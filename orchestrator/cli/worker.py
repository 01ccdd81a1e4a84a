"""`orch worker` (run agents of external runs on this host) and `orch workers` (who runs them)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from coordstore.errors import UsageError

from orchestrator.cli.app import app, print_json

STORE_ENV = "ORCH_STORE_URL"


@app.command("worker")
def worker_cmd(
    store: str = typer.Option(..., "--store", help="The store URL the coordinator uses (postgresql://...), as this host reaches it."),
    tags: str | None = typer.Option(None, "--tags", help="Comma-separated tags of this host: only agents whose tags are all among them (default: any agent)."),
    slots: int = typer.Option(1, "--slots", min=1, help="Agents run here at once."),
    dir: Path = typer.Option(Path("orch-worker"), "--dir", help="This worker's own directory: clones, worktrees, events, logs."),
    once: bool = typer.Option(False, "--once", help="Exit once the agents it took have all stopped."),
    idle_exit: float | None = typer.Option(None, "--idle-exit", min=0, help="Exit after this many seconds holding no agent with none to take."),
) -> None:
    """Take agent slots of runs started with --workers external, run their agents in worktrees of
    this host, push each task's commit to the run's remote before reporting it done."""
    from orchestrator.runs.worker import Worker, WorkerOptions  # lazy: `orch`'s start-up; watchdog

    tag_list = [t.strip() for t in tags.split(",") if t.strip()] if tags is not None else None
    w = Worker(WorkerOptions(store_url=store, dir=dir, tags=tag_list, slots=slots, once=once, idle_exit_s=idle_exit,
                             log=lambda m: typer.echo(f"orch worker: {m}", err=True)))
    typer.echo(f"orch worker {w.info['worker']}: {slots} slot(s), directory {w.dir}", err=True)
    raise typer.Exit(w.run())


@app.command("workers")
def workers_cmd(
    store: str | None = typer.Option(None, "--store", help=f"The store URL (default: ${STORE_ENV})."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """The workers that took agents of external runs: host, pid, agents held now, runs, last seen."""
    from orchestrator.views.workers import list_workers  # lazy: `orch`'s start-up

    url = store or os.environ.get(STORE_ENV)
    if not url:
        raise UsageError(f"give --store URL (or set {STORE_ENV})")
    rows = list_workers(url)
    if as_json:
        print_json({"version": 1, "workers": rows})
        return
    if not rows:
        typer.echo("no workers have taken an agent in this store")
        return
    typer.echo(f"{'worker':<34} {'host':<16} {'pid':>7} {'held':>5} {'slots':>5} {'runs':>4}  last seen")
    for r in rows:
        typer.echo(f"{r['worker']:<34} {r['host']:<16} {r['pid']:>7} {len(r['held']):>5} {r['slots']:>5} {len(r['runs']):>4}  "
                   f"{r['last_seen_s_ago']:.1f}s ago")
