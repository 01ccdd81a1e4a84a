"""Scaling curves: a metric against the number of working agents, for variants that differ in
nothing else.

Two variants belong to one curve when their runs' frozen specs (``run.json``) agree on everything
but the number of working agents: policy and its options, coordination, kind options, template,
time scale, merge mode, supervision, and the agents themselves (each working agent's role, kind,
tags, options and instruction; the dispatching agents one for one). Run ids, seeds, stores and
agent ids are not part of a variant's design.
"""

from __future__ import annotations

import json
from pathlib import Path

from coordstore.models import works

from orchestrator.views.plotting import pyplot

SCALED = ("wall_clock_ms", "efficiency", "throughput_tasks_per_h")
# a run's own, not its variant's design
PER_RUN = frozenset({"run_id", "experiment_id", "variant", "agents", "repo", "base", "store_url", "seed"})


def _agent(a: dict) -> str:
    return json.dumps({k: a.get(k) for k in ("role", "kind", "tags", "options", "instruction")}, sort_keys=True)


def workers(spec: dict) -> int:
    return sum(1 for a in spec.get("agents", []) if works(a.get("role", "worker")))


def design_without_agent_count(spec: dict) -> str:
    """A variant's design with the number of its working agents left out."""
    agents = spec.get("agents", [])
    dispatchers = sorted(_agent(a) for a in agents if not works(a.get("role", "worker")))
    working = sorted({_agent(a) for a in agents if works(a.get("role", "worker"))})
    rest = {k: v for k, v in spec.items() if k not in PER_RUN}
    return json.dumps({"spec": rest, "dispatchers": dispatchers, "workers": working}, sort_keys=True, default=str)


def scaling_groups(specs: dict[str, dict], order: list[str]) -> list[dict]:
    """Groups of variants (``{variant: working agents}``, fewest first) that differ only in the
    number of working agents, with at least two different numbers; ``specs`` one run.json per variant."""
    by_design: dict[str, list[str]] = {}
    for v in order:
        if v in specs:
            by_design.setdefault(design_without_agent_count(specs[v]), []).append(v)
    groups, labels = [], []
    for names in by_design.values():
        counts = {v: workers(specs[v]) for v in names}
        if len(set(counts.values())) < 2:
            continue
        label = str(specs[names[0]].get("policy", "variants"))
        label = label if label not in labels else f"{label}-{labels.count(label) + 1}"
        labels.append(label)
        groups.append({"label": label, "variants": dict(sorted(counts.items(), key=lambda kv: kv[1])), "chart": None})
    return groups


def scaling_chart(group: dict, summaries: dict[str, dict[str, dict]], out: Path) -> Path | None:
    """Mean and 95 % CI of each SCALED metric against working agents; ``summaries`` variant ->
    metric -> summary. None when no SCALED metric has values."""
    metrics = [m for m in SCALED if any(summaries.get(v, {}).get(m, {}).get("n") for v in group["variants"])]
    if not metrics:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        points = [(n, summaries[v][m]) for v, n in group["variants"].items() if summaries.get(v, {}).get(m, {}).get("n")]
        xs = [n for n, _ in points]
        ys = [s["mean"] for _, s in points]
        err = [[s["mean"] - s["ci95"][0] if s.get("ci95") else 0 for _, s in points],
               [s["ci95"][1] - s["mean"] if s.get("ci95") else 0 for _, s in points]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=4)
        ax.set_xticks(sorted(set(xs)))
        ax.set_xlabel("working agents")
        ax.set_title(m, fontsize=9)
    fig.suptitle(f"{group['label']}: mean and 95% CI by working agents", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
