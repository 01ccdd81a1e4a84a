"""The agent-coordination metrics where users read metrics: `orch metrics` (a group of its own),
`orch compare` and `orch report` (a table, and box plots, when a variant used the tools; an
orch-coordinated variant shows its zeros there as the baseline). Run directories are real: a
frozen run.json, a SQLite store with the scripted history, metrics.json and transitions.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

from coordstore import open_store
from coordstore.models import Agent, Run
from orchestrator.rundir import AgentSpec, RunPaths, RunSpec
from orchestrator.views.coordmetrics import COORDINATION_KEYS
from orchestrator.views.metrics import compute_metrics

from cliruns import cli
from conftest import FakeClock, make_graph
from coordhistory import R, ROLES, scripted_run

ORCH_ROLES = {"coordinator": "coordinator", "w1": "worker", "w2": "worker"}


def orch_pushed_run(store, clock) -> None:
    """orch's own coordinator pushes two tasks: no tool calls at all."""
    store.create_run(Run(id=R))
    store.add_graph(R, make_graph(["a", "b"]))
    for aid, role in ORCH_ROLES.items():
        store.register_agent(R, Agent(id=aid, role=role), lease_ms=60_000)
    for tid, w in (("a", "w1"), ("b", "w2")):
        t = store.assign(R, tid, w, by="coordinator")
        clock.advance(40)
        store.complete(R, tid, w, store.start(R, tid, w, t.attempt).attempt)


def make_run_dir(root: Path, variant: str, policy: str, coordination: str, i: int, script, roles) -> Path:
    d = root / variant / f"{variant}-r{i}"
    d.mkdir(parents=True)
    url = f"sqlite://{d / 'orch.db'}"
    clock = FakeClock()
    with open_store(url, clock=clock) as store:
        script(store, clock)
        dump = store.dump_run(R)
    RunPaths(d).write_spec(RunSpec(
        run_id=R, experiment_id="exp", variant=variant, policy=policy, coordination=coordination,
        agents=[AgentSpec(id=a, role=r) for a, r in roles.items()], template="template.json", repo=str(d),
        base="0" * 40, store_url=url, seed=i, time_scale=0.001, timeout_s=60))
    (d / "metrics.json").write_text(json.dumps(compute_metrics(dump)))
    (d / "transitions.jsonl").write_text("".join(t.model_dump_json() + "\n" for t in dump.history))
    return d


def agents_run(root, i):
    return make_run_dir(root, "push-agents", "push", "agents", i, lambda s, c: scripted_run(s, c), ROLES)


def orch_run(root, i):
    return make_run_dir(root, "push-orch", "push", "orch", i, orch_pushed_run, ORCH_ROLES)


def test_orch_metrics_prints_the_coordination_group(tmp_path, capsys):
    d = agents_run(tmp_path, 1)
    code, out, err = cli(capsys, "metrics", d)
    assert code == 0, err
    lines = out.splitlines()
    head = lines.index("# agent coordination")
    group = [line.split()[0] for line in lines[head + 1:]]
    assert group == list(COORDINATION_KEYS)
    assert lines[head + 1 + group.index("coordination_calls")].split()[1] == "38"
    assert "claim_attempts" not in [line.split()[0] for line in lines[:head]]
    code, out, err = cli(capsys, "metrics", d, "--json")
    assert code == 0, err
    m = json.loads(out)
    assert m["coordinator_busy_ms"] == 139.0 and m["decomposition_ms"] == 89.0 and m["duplicated_work"] == 1


def test_compare_shows_coordination_beside_the_orch_baseline(tmp_path, capsys):
    for i in (1, 2):
        agents_run(tmp_path, i)
        orch_run(tmp_path, i)
    code, out, err = cli(capsys, "compare", tmp_path)
    assert code == 0, err
    head, group = out.split("## Agent coordination", 1)
    assert "### coordination_calls (lower is better)" in group and "coordination_calls" not in head

    def means(metric: str) -> dict[str, str]:  # variant -> its "mean ± sd" cell in the metric's table
        table = group.split(f"### {metric} (", 1)[1].split("\n\n#", 1)[0]
        return {line.split("|")[1].strip().split()[0]: line.split("|")[3].strip() for line in table.splitlines() if line.startswith("| push-")}

    assert means("coordination_calls") == {"push-agents": "38 ± 0", "push-orch": "0 ± 0"}
    # orch's pushed tasks waited 40 ms for their workers; the orch run decomposed nothing: no sample
    assert means("assignment_latency_ms")["push-orch"] == "40 ± 0"
    assert means("subtasks_per_decomposed_task")["push-orch"] == "-"
    code, out, err = cli(capsys, "compare", tmp_path, "--json")
    assert json.loads(out)["variants"]["push-agents"]["metrics"]["coordinator_tokens"]["mean"] == 1386


def test_compare_of_orch_variants_only_has_no_coordination_table(tmp_path, capsys):
    orch_run(tmp_path, 1)
    code, out, err = cli(capsys, "compare", tmp_path)
    assert code == 0, err
    assert "Agent coordination" not in out and "| push-orch (baseline) | 1 |" in out


def test_report_lists_and_charts_coordination(tmp_path, capsys):
    for i in (1, 2):
        agents_run(tmp_path, i)
    orch_run(tmp_path, 1)
    code, out, err = cli(capsys, "report", tmp_path)
    assert code == 0, err
    md = (tmp_path / "report.md").read_text()
    assert "### Agent coordination" in md and "coordinator_busy_ms" in md and "![coordination](charts/coordination.png)" in md
    assert (tmp_path / "charts" / "coordination.png").stat().st_size > 1000
    assert "coordination" in (tmp_path / "report.html").read_text()
