"""A finished run's exports: snapshot.json.gz, transitions.jsonl, metrics.json (orch's metrics and
those the frozen experiment file defines), summary.md, and Parquet copies of the transitions and
metrics (``views.tables``)."""

from __future__ import annotations

import json
import sys

from coordstore.models import UNSUCCESSFUL
from coordstore.private import write_private
from coordstore.snapshot import write_snapshot

from orchestrator.views.budgetview import against_budget
from orchestrator.views.criteria import from_experiment_file
from orchestrator.views.custommetrics import DEFINED, ERRORS, run_metrics
from orchestrator.views.forecastmetrics import share
from orchestrator.views.tables import metrics_row, write_metrics, write_transitions
from orchestrator.views.overhead import overhead_rows
from orchestrator.views.verified import FINAL, verifications, verify_line
from orchestrator.rundir import RunPaths, RunSpec


def export_run(spec: RunSpec, paths: RunPaths, store) -> dict:
    dump = store.dump_run(spec.run_id)
    write_snapshot(paths.snapshot, dump)
    write_private(paths.transitions, "".join(t.model_dump_json() + "\n" for t in dump.history))
    metrics = run_metrics(dump, paths.experiment)
    for why in metrics.get(ERRORS, {}).values():  # the run stands; the metric is null, and says why
        print(f"orch: warning: {spec.run_id}: {why}", file=sys.stderr)
    write_private(paths.metrics, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    write_transitions(dump.history, paths.root / "transitions.parquet")
    write_metrics([metrics_row(spec.model_dump(), metrics)], paths.root / "metrics.parquet")
    criteria = from_experiment_file(paths.experiment, metrics)
    write_private(paths.criteria, json.dumps(criteria, indent=2, sort_keys=True) + "\n")
    status = f"{dump.run.status} ({dump.run.reason})" if dump.run.reason else dump.run.status
    unfinished = [(t.id, t.status, one_line(t.reason)) for t in dump.tasks if t.status in UNSUCCESSFUL]
    finals = verifications(dump.history, FINAL)
    verified = verify_line(metrics, one_line(finals[-1]["reason"]) if finals and finals[-1]["reason"] else None)
    write_private(paths.summary, summary_markdown(spec, status, metrics, criteria, unfinished, verified))
    return metrics


REASON_SHOWN = 300  # characters of a task's failure reason in the summary (the store keeps it whole)


def one_line(reason: str | None) -> str:
    """A task's failure reason as one short line (a CLI's error may span many)."""
    return " ".join((reason or "no reason recorded").split())[:REASON_SHOWN]


def summary_markdown(spec: RunSpec, status: str, m: dict, criteria: list[dict] = (),
                     unfinished: list[tuple[str, str, str | None]] = (), verified: str | None = None) -> str:
    rows = [
        ("status", status),
        ("tasks completed", f"{m['tasks_completed']}/{m['tasks_total']}"),
        ("tasks failed / cancelled", f"{m['tasks_failed']} / {m['tasks_cancelled']}"),
        ("wall clock", f"{m['wall_clock_ms'] / 1000:.2f} s"),
        ("lower bound", f"{m['lower_bound_ms'] / 1000:.2f} s"),
        ("efficiency", f"{m['efficiency']:.3f}"),
        ("claim contention", f"{m['claim_contention']:.3f}"),
        ("dispatch latency", "-" if m["dispatch_latency_ms"] is None else f"{m['dispatch_latency_ms']:.1f} ms"),
        ("merge conflicts", str(m["merge_conflicts"])),
        ("conflict forecasts", f"{m.get('conflict_forecasts', 0)}, precision {share(m.get('forecast_precision'))}, "
                               f"recall {share(m.get('forecast_recall'))}; {m.get('tasks_held_back', 0)} tasks held back"),
        ("retries / stalls", f"{m['retries']} / {m['stalls']}"),
        ("tokens / cost", f"{m['tokens']['total']} total, {m['billable_tokens']} billable, "
                          f"{m['cache_hit_rate']:.1%} cache hits / ${m['cost_usd']:.4f}"),
        *([("budget", against_budget(spec.budget, m))] if spec.budget else []),
        *overhead_rows(m),
        *([("merged_verified", verified.split(": ", 1)[1].replace("|", "\\|"))] if verified else []),
        *[(name, "-" if m.get(name) is None else str(round(m[name], 4))) for name in m.get(DEFINED, [])],
    ]
    lines = [f"# Run {spec.run_id}", "", f"Experiment `{spec.experiment_id}`, variant `{spec.variant}` ({spec.policy}), seed {spec.seed}.", ""]
    lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    if criteria:
        lines += ["", "Success criteria:", ""]
        lines += [f"- {'PASS' if c['passed'] else 'FAIL'}: {c['metric']} {c['op']} {c['value']} (got {c['got']})" for c in criteria]
    if unfinished:  # why a run failed must be readable here, not only in the store
        lines += ["", "Tasks that did not complete:", ""]
        lines += [f"- `{tid}` {status}: {reason}" for tid, status, reason in unfinished]
    lines += ["", f"Branches: `{spec.merged_branch}` (merged) and `{spec.branch_prefix}/<agent>` in `{spec.repo}`.", ""]
    return "\n".join(lines)
