"""Operator commands: `orch runs`, `status`, `watch`, `branches`, `diff`, `log`, `logs`, `clean`,
`history`. Each parses, calls one function of ``runinfo``/``runinfo_git``/``watchview``, renders."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import typer

from coordstore.errors import UsageError

from orchestrator.cli.app import app, print_json
from orchestrator.views.overhead import PHASE_ACTION
from orchestrator.views.history import history_summary_view, history_view
from orchestrator.views.runinfo import DEFAULT_RESULTS, is_running, list_runs, log_files, open_run, status_view

RUN_DIR_HELP = "A run directory (or a run id, looked up below experiments/results)."
JSON_HELP = "Print one JSON object (stable shape, \"version\": 1) instead of text."
FOLLOW_POLL_S = 0.5  # `logs --follow`: how often to look for new output


def _console():
    from rich.console import Console  # lazy: `orch`'s start-up; rich only when something is drawn

    return Console()


def _secs(ms) -> str:
    if ms is None:
        return "-"
    s = ms / 1000
    return f"{s:.2f}s" if s < 60 else f"{int(s // 60)}m{s % 60:04.1f}s"


def _open(run_dir: Path):
    return open_run(run_dir)


@app.command("runs")
def runs_cmd(
    results: Path = typer.Option(DEFAULT_RESULTS, "--results", help="Directory searched (at any depth) for run directories."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List the runs found below a results directory, newest first, with their status; exits 1,
    naming each on stderr, when a run's store is damaged."""
    view = list_runs(results)
    if as_json:
        print_json(view)
    elif not view["runs"]:
        typer.echo(f"no runs below {results}")
    else:
        _print_runs(view["runs"])
    damaged = [r["evidence"] for r in view["runs"] if r["status"] == "damaged"]
    for why in damaged:
        typer.echo(f"orch: error: {why}", err=True)
    if damaged:
        raise typer.Exit(1)


def _print_runs(runs: list[dict]) -> None:
    from rich.table import Table  # lazy: `orch`'s start-up; rich only when a table is printed

    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("run", "experiment", "variant", "status", "done", "wall"):
        table.add_column(col, no_wrap=col == "run")
    for r in runs:
        done = "-" if r["tasks_total"] is None else f"{r['tasks_completed']}/{r['tasks_total']}"
        table.add_row(r["run_id"], r["experiment"] or "-", r["variant"] or "-", r["status"], done, _secs(r["wall_clock_ms"]))
    _console().print(table)


@app.command("status")
def status_cmd(
    run_dir: Path = typer.Argument(..., help=RUN_DIR_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Tasks by status, each agent's verdict, current task and last event, and the merge state."""
    from rich.table import Table  # lazy: `orch`'s start-up; rich only when a table is printed

    v = status_view(_open(run_dir))
    if as_json:
        print_json(v)
        return
    con = _console()
    t = v["tasks"]
    counts = ", ".join(f"{k} {n}" for k, n in t["by_status"].items() if n)
    con.print(f"run {v['run_id']} ({v['experiment']}/{v['variant']}, {v['policy']}): [bold]{v['status']}[/] ({v['evidence']})",
              highlight=False, soft_wrap=True)
    con.print(f"tasks {t['by_status']['completed']}/{t['total']} completed: {counts or 'none'}; wall clock {_secs(v['wall_clock_ms'])}",
              highlight=False, soft_wrap=True)
    for p in t["problems"]:
        con.print(f"  {p['status']} {p['id']}: {p['reason'] or '-'}", highlight=False, soft_wrap=True)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("agent", "role", "verdict", "task", "last event", "done", "process"):
        table.add_column(col)
    for a in v["agents"]:
        age = "-" if a["last_event_age_ms"] is None else f"{a['last_event_type']} {_secs(a['last_event_age_ms'])} ago"
        proc = f"{a['pid']} {'alive' if a['alive'] else 'gone'}" if a["pid"] else "-"
        table.add_row(a["id"], a["role"], a["verdict"], a["current_task"] or "-", age, str(a["tasks_done"]), proc)
    con.print(table)
    m = v["merge"]
    con.print(f"merge ({m['mode']}) into {m['merged_branch']}: {m['merged']} merged, {len(m['conflicts'])} conflicts",
              highlight=False, soft_wrap=True)
    for c in m["conflicts"]:
        con.print(f"  conflict {c['entity_id']} ({c['agent']}): {', '.join(c['paths']) or '-'}", highlight=False, soft_wrap=True)


@app.command("watch")
def watch_cmd(
    run_dir: Path = typer.Argument(..., help=RUN_DIR_HELP),
    interval: float = typer.Option(1.0, "--interval", min=0.05, max=3600, help="Seconds between refreshes from the store."),
    exit_status: bool = typer.Option(False, "--exit-status", help="Exit 1 when the run ends other than finished."),
) -> None:
    """Live view of a run (from its store, so it works from another terminal); exits when the run ends."""
    from orchestrator.views.watchview import watch_run  # lazy: `orch`'s start-up; rich and rich.live only for watch

    view = watch_run(_open(run_dir), interval, _console())
    typer.echo(f"run {view['run_id']}: {view['status']} ({view['evidence']}), {view['done']}/{view['total']} tasks ended")
    if exit_status and view["status"] != "finished":
        raise typer.Exit(1)


def _diffstat(d) -> str:
    return "-" if not d else f"{d['files']} files +{d['insertions']} -{d['deletions']}"


@app.command("branches")
def branches_cmd(
    run_dir: Path = typer.Argument(..., help=RUN_DIR_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Each agent's branch: commits and tasks since the base, diffstat, merged or not, conflicts."""
    # lazy: `orch`'s start-up; rich only for a table, the git layer and filelock only for git views
    from rich.table import Table
    from orchestrator.views.branches import branches_view

    v = branches_view(_open(run_dir))
    if as_json:
        print_json(v)
        return
    con = _console()
    con.print(f"run {v['run_id']}: agent branches orch/{v['run_id']}/<agent> in {v['repo']}, base {v['base'][:12]}",
              highlight=False, soft_wrap=True)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("agent", "commits", "tasks", "diff vs base", "merged", "conflicts"):
        table.add_column(col)
    for a in v["agents"]:
        if not a["exists"]:
            merged = "branch gone"
        elif a["merged"]:
            merged = "yes"
        else:
            merged = f"no ({a['unmerged_commits']} commits)" if a["unmerged_commits"] else "no (merge commits only)"
        conflicts = "; ".join(f"{c['entity_id']}: {', '.join(c['paths'])}" for c in a["conflicts"]) or "-"
        table.add_row(a["agent"], str(a["commits"]), ", ".join(a["tasks"]) or "-", _diffstat(a["diffstat"]),
                      merged, conflicts)
    con.print(table)
    m = v["merged"]
    if m["exists"]:
        con.print(f"merged branch {m['branch']} at {m['sha'][:12]}: {m['commits']} commits in {m['merges']} merges, "
                  f"{_diffstat(m['diffstat'])} vs base {v['base'][:12]}", highlight=False, soft_wrap=True)
    else:
        con.print(f"merged branch {m['branch']}: does not exist", highlight=False, soft_wrap=True)


@app.command("diff")
def diff_cmd(
    run_dir: Path = typer.Argument(..., help=RUN_DIR_HELP),
    agent: str = typer.Argument(..., help="Agent id, e.g. w1."),
    stat: bool = typer.Option(False, "--stat", help="Only the diffstat."),
) -> None:
    """An agent's changes: git diff from the run's base to the agent's branch."""
    from orchestrator.views.branches import agent_diff  # lazy: `orch`'s start-up; git, filelock only for git views

    out = agent_diff(_open(run_dir), agent, stat)
    typer.echo(out, nl=bool(out) and not out.endswith("\n"))


@app.command("log")
def log_cmd(
    run_dir: Path = typer.Argument(..., help=RUN_DIR_HELP),
    agent: str = typer.Argument(..., help="Agent id, e.g. w1."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """An agent's commits since the base, newest first, with the task id of each."""
    from orchestrator.views.branches import agent_log  # lazy: `orch`'s start-up; git, filelock only for git views

    v = agent_log(_open(run_dir), agent)
    if as_json:
        print_json(v)
        return
    for c in v["commits"]:
        tag = "merge" if c["merge"] else (c["task"] or "-")
        typer.echo(f"{c['sha'][:12]}  {tag:12}  {c['subject']}  ({c['author']})")
    if not v["commits"]:
        typer.echo(f"no commits on {v['branch']} since the base {v['base'][:12]}")


@app.command("logs")
def logs_cmd(
    run_dir: Path = typer.Argument(..., help=RUN_DIR_HELP),
    agent: str = typer.Argument(..., help="Agent id, e.g. w1."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new output until the run ends (Ctrl-C stops)."),
) -> None:
    """An agent's process output (stdout and stderr logs of its runner)."""
    ref = _open(run_dir)
    offsets: dict[Path, int] = {}
    last: list[Path | None] = [None]

    def drain() -> None:
        for path in log_files(ref, agent):
            with open(path, "rb") as f:
                f.seek(offsets.get(path, 0))
                chunk = f.read()
            offsets[path] = offsets.get(path, 0) + len(chunk)
            if chunk:
                if last[0] != path:
                    typer.echo(f"==> {path} <==")
                    last[0] = path
                typer.echo(chunk.decode("utf-8", "replace"), nl=False)
                sys.stdout.flush()

    drain()
    if not offsets:
        typer.echo(f"no log files for {agent} in {ref.paths.logs}", err=True)
    elif last[0] is None and not follow:
        typer.echo(f"no output from {agent} ({', '.join(p.name for p in offsets)} are empty)", err=True)
    try:
        while follow and is_running(ref):
            time.sleep(FOLLOW_POLL_S)
            drain()
        drain() if follow else None
    except KeyboardInterrupt:
        pass


@app.command("clean")
def clean_cmd(
    run_dir: Path = typer.Argument(..., help=RUN_DIR_HELP),
    branches: bool = typer.Option(False, "--branches", help="Also delete the run's branches that hold no unmerged work."),
    ignored: bool = typer.Option(False, "--ignored", help="Also remove worktrees holding git-ignored files (build output, caches), deleting those files."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do it without asking (otherwise: ask on a terminal, else a dry run)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Remove a run's worktrees (and with --branches its branches), never unmerged work or (without --ignored)
    git-ignored files; says what it keeps and why. Refused while any process of the run is alive."""
    from orchestrator.views.branches import clean_run  # lazy: `orch`'s start-up; git, filelock only for git views

    ref = _open(run_dir)
    apply = yes
    if not yes and not as_json and sys.stdin.isatty():
        _print_clean(clean_run(ref, branches, apply=False, remove_ignored=ignored))
        apply = typer.confirm("Proceed?", default=False)
        if not apply:
            typer.echo("nothing removed")
            return
    v = clean_run(ref, branches, apply=apply, remove_ignored=ignored)
    if as_json:
        print_json(v)
        return
    _print_clean(v)
    if v["dry_run"]:
        typer.echo("dry run: nothing removed; pass --yes to do it")


def _short(name: str) -> str:
    """A branch without ``refs/heads/``; a path relative to the current directory when inside it."""
    if name.startswith("refs/heads/"):
        return name.removeprefix("refs/heads/")
    rel = os.path.relpath(name)
    return name if rel.startswith("..") else rel


def _print_clean(v: dict) -> None:
    verb = "would remove" if v["dry_run"] else "removed"
    for i in v["removed"]:
        typer.echo(f"{verb} {i['kind']} {_short(i['name'])} ({i['reason'].replace('refs/heads/', '')})")
    for i in v["kept"]:
        typer.echo(f"kept {i['kind']} {_short(i['name'])}: {i['reason']}")
    if not v["removed"] and not v["kept"]:
        typer.echo("nothing to clean")


TOOL_SHOWN = ("task", "assignee", "status")  # of a coordination call's row, shown beside it


@app.command("history")
def history_cmd(
    run_dir: Path = typer.Argument(..., help=RUN_DIR_HELP),
    task: str | None = typer.Option(None, "--task", help="Only this task's transitions, claims, merges and the tool calls naming it."),
    agent: str | None = typer.Option(None, "--agent", help="Only rows by or about this agent."),
    entity: str | None = typer.Option(None, "--entity", help="Only rows of this kind: task, agent, merge, run, claim, tool (coordination calls) or provider (rate limiters)."),
    summary: bool = typer.Option(False, "--summary", help="Time per status and per agent instead of the rows: the run's work tasks, or --task's, or --agent's share."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """The run's transitions, readable: time offset, entity, id, from -> to, agent, reason; with
    --summary, the time tasks spent in each status and with each agent."""
    if summary:
        if entity is not None:
            raise UsageError("--summary and --entity: the summary adds up task rows only; leave --entity out")
        sv = history_summary_view(_open(run_dir), task=task, agent=agent)
        if as_json:
            print_json(sv)
        else:
            _print_time_summary(sv)
        return
    v = history_view(_open(run_dir), task=task, agent=agent, entity=entity)
    if as_json:
        print_json(v)
        return
    for r in v["transitions"]:
        who = r["agent"] or "-"
        why = f"  {r['reason']}" if r["reason"] else ""
        if r["entity"] == "tool":  # what the call was about: a coordinator's assignment reads "task=t1 assignee=w2"
            about = " ".join(f"{k}={r['data'][k]}" for k in TOOL_SHOWN if r["data"].get(k) is not None)
            why = f"  {about}{why}" if about else why
        elif r["from"] == r["to"] and r["data"].get("action"):  # a note: the action it records
            d = r["data"]
            about = f"phase {d['phase']} {_secs(d['end_ms'] - d['start_ms'])}" if d["action"] == PHASE_ACTION else d["action"]
            why = f"  {about}{why}"
        typer.echo(f"+{r['offset_ms'] / 1000:8.3f}s  {r['entity']:6} {r['id']:14} {r['from'] or '-':>10} -> {r['to']:10} {who:8}{why}")


def _share(ms: int, total: int) -> str:
    return f"{ms / total:.0%}" if total else "-"


def _print_time_summary(v: dict) -> None:
    """The summary as tables: status x time, agent x status, and (unless one task) task x status."""
    from rich.table import Table  # lazy: `orch`'s start-up; rich only when a table is printed

    con = _console()
    f = v["filter"]
    scope = (f"task {f['task']}" if f["task"] else f"{len(v['tasks'])} tasks, periods owned by {f['agent']}" if f["agent"]
             else f"{v['work_tasks']} work tasks")
    con.print(f"run {v['run_id']} ({v['status']}): time per status, {scope}", highlight=False, soft_wrap=True)
    statuses = [s for s, ms in v["time_in_status_ms"].items() if ms or s != "failed"]
    total = sum(v["time_in_status_ms"].values())
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("status", "time", "share"):
        table.add_column(col, justify="left" if col == "status" else "right")
    for s in statuses:
        table.add_row(s, _secs(v["time_in_status_ms"][s]), _share(v["time_in_status_ms"][s], total))
    con.print(table)
    if v["time_by_agent_ms"]:
        table = Table(box=None, header_style="bold", pad_edge=False)
        owned = list(next(iter(v["time_by_agent_ms"].values())))
        for col in ("agent", *owned):
            table.add_column(col, justify="left" if col == "agent" else "right")
        for a, by in v["time_by_agent_ms"].items():
            table.add_row(a, *(_secs(by[s]) for s in owned))
        con.print(table)
    if not f["task"] and v["tasks"]:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for col in ("task", "status", *statuses, "agents"):
            table.add_column(col, justify="right" if col in statuses else "left")
        for t in v["tasks"]:
            table.add_row(t["id"] + ("" if t["work"] else " (container)"), t["status"],
                          *(_secs(t["time_in_status_ms"].get(s, 0)) for s in statuses), ", ".join(t["time_by_agent_ms"]) or "-")
        con.print(table)
