"""`orch report`: an experiment's report.md and report.html with PNG charts.

The report holds the experiment's comparison (``compare.write_comparison`` writes comparison.md,
.json and .html beside it, with the scaling curves), the success criteria from the frozen
experiment file evaluated per run, and the charts: an agent x time Gantt per run, the completion
curve per variant, tasks and busy time per agent, and metric box plots.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from orchestrator.views.budgetview import budget_table
from orchestrator.views.compare import COORDINATION_COMPARED, comparison_files, coordinated, find_runs, values
from orchestrator.views.comparedoc import html_body, html_page, markdown
from orchestrator.views.criteria import from_experiment_file
from orchestrator.views.plotting import pyplot
from orchestrator.views.verified import FINAL, VERIFY_ACTION, verify_line


def _periods(run_dir: Path) -> list[tuple[str, str, int, int, str]]:
    rows = [json.loads(line) for line in (run_dir / "transitions.jsonl").read_text().splitlines() if line]
    open_, out = {}, []
    for r in rows:
        if r["entity"] != "task":
            continue
        if r["to_state"] == "working":
            open_[r["entity_id"]] = (r["agent"], r["ts_ms"])
        elif r["from_state"] == "working" and r["entity_id"] in open_:
            agent, t0 = open_.pop(r["entity_id"])
            out.append((agent, r["entity_id"], t0, r["ts_ms"], r["to_state"]))
    return out


def gantt(run_dir: Path, out: Path) -> Path:
    plt = pyplot()
    periods = _periods(run_dir)
    agents = sorted({p[0] for p in periods})
    t0 = min((p[2] for p in periods), default=0)
    fig, ax = plt.subplots(figsize=(9, 0.5 + 0.45 * max(1, len(agents))))
    colors = {"completed": "tab:green", "failed": "tab:red", "pending": "tab:orange"}
    for agent, task, a, b, outcome in periods:
        y = agents.index(agent)
        ax.barh(y, (b - a) / 1000, left=(a - t0) / 1000, color=colors.get(outcome, "tab:gray"), edgecolor="black", linewidth=0.3)
    ax.set_yticks(range(len(agents)), agents)
    ax.set_xlabel("seconds since first start")
    ax.set_title(run_dir.name, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def completion_curves(by_variant: dict[str, list[dict]], out: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for variant, runs in sorted(by_variant.items()):
        for i, r in enumerate(runs):
            ends = sorted(p[3] for p in _periods(Path(r["run_dir"])) if p[4] == "completed")
            starts = [p[2] for p in _periods(Path(r["run_dir"]))]
            if not ends:
                continue
            t0 = min(starts)
            ax.step([(e - t0) / 1000 for e in ends], range(1, len(ends) + 1), where="post", alpha=0.7,
                    label=variant if i == 0 else None)
    ax.set_xlabel("seconds since first start")
    ax.set_ylabel("tasks completed")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def per_agent(by_variant: dict[str, list[dict]], out: Path) -> Path:
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for variant, runs in sorted(by_variant.items()):
        m = runs[0]["metrics"]
        agents = sorted(m.get("tasks_per_agent", {}))
        labels = [f"{variant}:{a}" for a in agents]
        a1.bar(labels, [m["tasks_per_agent"][a] for a in agents])
        a2.bar(labels, [m["busy_ms"][a] / 1000 for a in agents])
    a1.set_title("tasks per agent (first run)")
    a2.set_title("busy seconds per agent (first run)")
    for ax in (a1, a2):
        ax.tick_params(axis="x", rotation=70, labelsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


BOXES_PER_ROW = 5


def boxplots(by_variant: dict[str, list[dict]], metrics: tuple[str, ...], out: Path) -> Path:
    plt = pyplot()
    cols = min(len(metrics), BOXES_PER_ROW)
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.5 * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[len(metrics):]:
        ax.set_visible(False)
    for ax, m in zip(flat, metrics):
        names = sorted(by_variant)
        # a metric a run has no sample of (None: no pushed assignment, no decomposition) is left out, not 0
        data = [values(by_variant[n], m) for n in names]
        ax.boxplot(data)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=45, fontsize=7)
        ax.set_title(m, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def criteria_results(run: dict, run_dir: Path) -> list[tuple[str, bool]]:
    return [(f"{c['metric']} {c['op']} {c['value']} (got {c['got']})", c["passed"])
            for c in from_experiment_file(run_dir / "experiment.yaml", run["metrics"])]


def _final_reason(run_dir: Path) -> str | None:
    """The last final verification's failure reason, from the run's transitions.jsonl."""
    reason = None
    for line in (run_dir / "transitions.jsonl").read_text().splitlines():
        r = json.loads(line) if line else {}
        data = r.get("data") or {}
        if r.get("entity") == "run" and data.get("action") == VERIFY_ACTION and data.get("scope") == FINAL:
            reason = r.get("reason")
    return " ".join(reason.split())[:300] if reason else None


def verified_lines(by_variant: dict[str, list[dict]]) -> list[str]:
    """Per variant, how many runs' merged trees passed their ``verify:``, then each run's line;
    none when no run verified anything."""
    out = []
    for variant, runs in sorted(by_variant.items()):
        lines = [(Path(r["run_dir"]), verify_line(r["metrics"], _final_reason(Path(r["run_dir"])))) for r in runs]
        lines = [(d, line) for d, line in lines if line]
        if not lines:
            continue
        passed = sum(r["metrics"].get("merged_verified") is True for r in runs)
        out.append(f"{variant}: {passed}/{len(runs)} runs' merged trees verified")
        out += [f"{variant} {d.name}: {line}" for d, line in lines]
    return out


def write_report(experiment_dir: Path, baseline: str | None = None) -> tuple[Path, Path]:
    """report.md and report.html, and beside them comparison.md, .json and .html."""
    experiment_dir = Path(experiment_dir)
    by_variant = find_runs([experiment_dir])
    result, _ = comparison_files(experiment_dir, baseline)
    charts = experiment_dir / "charts"
    charts.mkdir(exist_ok=True)
    shown = tuple(m["name"] for m in result["metrics"] if m["name"] not in COORDINATION_COMPARED) or ("wall_clock_ms",)
    images = [completion_curves(by_variant, charts / "completion.png"),
              per_agent(by_variant, charts / "agents.png"),
              boxplots(by_variant, shown, charts / "metrics.png")]
    if coordinated(result):  # the agent-coordination group gets its own box plots
        images.append(boxplots(by_variant, COORDINATION_COMPARED, charts / "coordination.png"))
    for runs in by_variant.values():
        for r in runs:
            images.append(gantt(Path(r["run_dir"]), charts / f"gantt-{Path(r['run_dir']).name}.png"))
    criteria = []
    for runs in by_variant.values():
        for r in runs:
            for text, ok in criteria_results(r, Path(r["run_dir"])):
                criteria.append(f"{'PASS' if ok else 'FAIL'} {Path(r['run_dir']).name}: {text}")
    verified = verified_lines(by_variant)
    budget = budget_table(by_variant)  # cost and tokens against each budgeted run's budget
    md = [f"# Report: {experiment_dir.name}", "", markdown(result, level=2), *budget, "## Success criteria", ""]
    md += [f"- {c}" for c in criteria] + [""]
    if verified:
        md += ["## Merged tree verified", ""] + [f"- {v}" for v in verified] + [""]
    md += ["## Charts", ""] + [f"![{p.stem}](charts/{p.name})" for p in images]
    md_path = experiment_dir / "report.md"
    md_path.write_text("\n".join(md) + "\n")
    body = f"<h1>Report: {html.escape(experiment_dir.name)}</h1>" + html_body(result, level=2)
    if budget:
        body += "<h2>Cost against budget</h2><pre>" + html.escape("\n".join(budget[2:])) + "</pre>"
    body += "<h2>Success criteria</h2><ul>" + "".join(f"<li>{html.escape(c)}</li>" for c in criteria) + "</ul>"
    if verified:
        body += "<h2>Merged tree verified</h2><ul>" + "".join(f"<li>{html.escape(v)}</li>" for v in verified) + "</ul>"
    body += "<h2>Charts</h2>" + "".join(f'<h3>{p.stem}</h3><img src="charts/{p.name}">' for p in images)
    html_path = experiment_dir / "report.html"
    html_path.write_text(html_page("orch report", body))
    return md_path, html_path
