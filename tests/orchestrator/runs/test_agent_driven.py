"""Agent-driven variants end to end (``coordination: agents``): `orch run`'s own launch path, the
coordination server process, one runner process per agent playing its role with the sim kind over
HTTP (the official SDK), a sqlite store, the demo git repository. What the agents decided is read
back from the history: the tool rows of their calls, the tasks' rows, the merged branch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from cliruns import cli, completed, git
from conftest import wait_for
from coordstore import open_store
from orchestrator.rundir import RunPaths
from orchestrator.runs.launch import RunRequest, plan_runs, run_one
from orchestrator.supervision.procs import process_alive

pytestmark = pytest.mark.usefixtures("no_git_identity")

TIME_SCALE = 0.0001  # an estimated hour of work runs in 0.36 s; a model turn of 8 s in 0.8 ms
FAILURES = {"looping", "stalled", "dead", "killed"}


def experiment(tmp_path: Path, variant: dict, template: str = "browser-parallel", scale: float = TIME_SCALE,
               **execution) -> Path:
    exp = {"experiment": {"id": "driven"}, "template": template,
           "execution": {"runs": 1, "seed": 7, "time_scale": scale, "timeout_s": 120, **execution},
           "variants": [{"name": "v", "coordination": "agents", **variant}]}
    f = tmp_path / "exp.yaml"
    f.write_text(yaml.safe_dump(exp))
    return f


def run(tmp_path: Path, variant: dict, template: str = "browser-parallel", **execution):
    exp = experiment(tmp_path, variant, template, **execution)
    [plan] = plan_runs(RunRequest(variant="v", experiment=exp, results=tmp_path / "results"))
    out = run_one(*plan)
    with open_store(out.spec.store_url) as s:
        dump = s.dump_run(out.spec.run_id)
    return out, dump


def work_tasks(dump) -> set[str]:
    parents = {d.from_id for d in dump.dependencies if d.type == "contains"}
    return {t.id for t in dump.tasks if t.id not in parents}


def check_done_once(dump, failures: set[str] = frozenset()) -> None:
    """The run finished; every work task completed exactly once; no agent was judged failing but
    for ``failures``."""
    assert dump.run.status == "finished"
    done = Counter(r.entity_id for r in dump.history if r.entity == "task" and r.to_state == "completed")
    assert {t: done[t] for t in work_tasks(dump)} == {t: 1 for t in work_tasks(dump)}
    judged = [(r.entity_id, r.to_state) for r in dump.history if r.entity == "agent" and r.to_state in FAILURES - failures]
    assert judged == []  # waiting agents poll: that is neither a loop nor a stall


def tool_rows(dump, agent: str | None = None, tool: str | None = None):
    return [r for r in dump.history if r.entity == "tool" and (agent is None or r.agent == agent)
            and (tool is None or r.entity_id == tool)]


@pytest.mark.parametrize("template", ["browser-parallel", "browser-phased"])
@pytest.mark.parametrize("policy,dispatcher", [("push", "coordinator"), ("pull", None), ("hybrid", "lead")])
def test_agent_driven_push_pull_and_hybrid_complete_the_browser_graphs(tmp_path, capsys, policy, dispatcher, template):
    out, dump = run(tmp_path, {"policy": policy, "agents": 4}, template)
    check_done_once(dump)
    agents = {a.id: a.role for a in out.spec.agents}
    assert sum(r == "worker" for r in agents.values()) == 4 and len(agents) == 4 + bool(dispatcher)
    completed_by = {t.completed_by for t in dump.tasks if t.id in work_tasks(dump)}
    assert completed_by <= {a for a, r in agents.items() if r == "worker"} and len(completed_by) > 1
    for a in agents:  # every agent connected, and said goodbye at the end
        assert [r.entity_id for r in tool_rows(dump, a)][0] == "connect" and tool_rows(dump, a)[-1].entity_id == "disconnect"
    if dispatcher is None:
        assert all(r.data.get("by") in (None, r.agent) for r in dump.history if r.entity == "task" and r.to_state == "assigned")
        return
    # the dispatcher's decisions are its calls: it assigned what the workers ran
    assigns = [r for r in tool_rows(dump, dispatcher, "update") if r.to_state == "ok" and "assignee" in r.data]
    given = {r.data["task"] for r in assigns}
    if policy == "push":
        assert given == work_tasks(dump)
        assert all(r.data.get("by") == "coordinator" for r in dump.history if r.entity == "task" and r.to_state == "assigned")
    else:  # the lead hands out the top-level containers
        assert given and given <= {d.from_id for d in dump.dependencies if d.type == "contains"}
    code, text, _ = cli(capsys, "history", out.run_dir, "--agent", dispatcher, "--entity", "tool")
    lines = text.splitlines()
    assert code == 0 and len(lines) == len(tool_rows(dump, dispatcher))
    assert sum(" tool   update " in ln and "-> ok" in ln for ln in lines) >= len(given)
    assert any(" tool   list_tasks " in ln for ln in lines)
    # what coordinating cost the dispatcher: a token event per call, none of them for work
    metrics = json.loads(out.run_dir.joinpath("metrics.json").read_text())
    assert metrics["tokens"]["in"] > 0
    # coordinator overhead comes from the calls it made, not from a constant
    assert metrics["coordinator_calls"] == len(tool_rows(dump, dispatcher))
    assert metrics["coordinator_busy_ms"] > 0 and metrics["coordinator_tokens"] > 0
    with open_store(out.spec.store_url) as s:
        spent = [e for e in s.read_events(out.spec.run_id, agent=dispatcher) if e.type == "tokens"]
    assert len(spent) >= len(tool_rows(dump, dispatcher)) - len(tool_rows(dump, dispatcher, "log_metrics"))


def test_the_push_coordinator_gives_a_task_whose_worker_crashed_to_another_worker(tmp_path):
    # the sim's crash fault is drawn per (seed, task, attempt): seed 3 crashes some first attempts
    ladder = {"kill_grace_s": 0.5, "respawn_backoff_ms": 100, "respawn_backoff_max_ms": 400}
    out, dump = run(tmp_path, {"policy": "push", "agents": 4, "kind_options": {"p_crash": 0.15}}, seed=3,
                    allow_failures=True, supervision=ladder)
    assert out.status == "finished"
    crashed = [r.entity_id for r in dump.history if r.entity == "agent" and r.to_state == "dead"]
    assert crashed
    given: dict[str, list[str]] = {}
    for r in tool_rows(dump, "coordinator", "update"):
        if r.to_state == "ok":
            given.setdefault(r.data["task"], []).append(r.data["assignee"])
    again = {t: to for t, to in given.items() if len(to) > 1}
    assert again and all(a != b for to in again.values() for a, b in zip(to, to[1:]))  # each time to another worker
    for t in again:  # it came back because its worker died: the supervisor requeued it in between
        requeued = [r for r in dump.history if r.entity == "task" and r.entity_id == t and r.is_requeue]
        assert len(requeued) >= len(again[t]) - 1


def test_eight_swarm_agents_claim_over_http_on_a_wide_graph_and_lost_claims_are_recorded(tmp_path):
    out, dump = run(tmp_path, {"policy": "pull", "agents": 8}, "independent-batch")
    check_done_once(dump)
    assert len(work_tasks(dump)) == 20
    claims = tool_rows(dump, tool="claim")
    lost = [r for r in claims if r.to_state == "lost"]
    assert lost and all(r.reason and "no longer available" in r.reason for r in lost)
    assert {r.to_state for r in claims} == {"ok", "lost"} and sum(r.to_state == "ok" for r in claims) == 20
    # the store's own claim rows tell the same story as the agents' calls
    store_claims = [r for r in dump.history if r.entity == "claim"]
    assert Counter(r.to_state for r in store_claims) == {"won": 20, "lost": len(lost)}
    metrics = json.loads(out.run_dir.joinpath("metrics.json").read_text())
    assert metrics["claim_contention"] == round(len(lost) / len(store_claims), 4) > 0
    assert len({r.agent for r in claims if r.to_state == "ok"}) > 4  # the work was spread


def test_self_decomposing_workers_split_coarse_tasks_mid_run_and_their_parts_are_merged(tmp_path):
    variant = {"policy": "pull", "agents": [{"id": "swarm-{n}", "count": 4}],
               "kind_options": {"decompose": {"over_points": 5, "parts": [2, 3]}}}
    out, dump = run(tmp_path, variant)
    check_done_once(dump)
    coarse = {"html-tokenizer", "html-tree", "css-cascade", "layout-block", "js-interp"}  # the 8-point tasks
    trees = [r for r in tool_rows(dump, tool="create_tree") if r.to_state == "ok"]
    made = {p: r.agent for r in trees for p in r.data["created"]}
    parent = {d.to_id: d.from_id for d in dump.dependencies if d.type == "contains"}
    assert len(trees) == len(coarse) and {parent[p] for p in made} == coarse  # each split once
    # each part's first row names the agent that created it; it was worked and its commit merged
    for r in dump.history:
        if r.entity == "task" and r.from_state is None and r.entity_id in made:
            assert r.agent == made[r.entity_id] == r.data["created_by"] and r.reason == "added"
    tasks = {t.id: t for t in dump.tasks}
    merged = out.spec.merged_branch
    log = git(Path(out.spec.repo), "log", "--format=%an|%s", merged).splitlines()
    for part in made:
        assert tasks[part].status == "completed"
        assert sum(1 for ln in log if ln.startswith(f"{tasks[part].completed_by}|task {part}: ")) == 1
    for c in coarse:  # the split task became a container: completed with its parts, never worked itself
        assert tasks[c].status == "completed" and not any(f"|task {c}: " in ln for ln in log)


def test_a_resume_stops_the_dead_orchestrators_server_and_the_agents_finish_through_a_new_one(tmp_path, capsys):
    exp = experiment(tmp_path, {"policy": "pull", "agents": 2}, scale=0.0003)
    results = tmp_path / "results"
    orch = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", "--variant", "v", "--experiment", str(exp),
                             "--results", str(results), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        run_dir = wait_for(lambda: next((p.parent for p in results.glob("driven/v/*/run.json")), None), timeout=60)
        spec = RunPaths(run_dir).read_spec()
        wait_for(lambda: completed(run_dir)[0] >= 3, timeout=60)
        old = json.loads((run_dir / "orch-mcp.pid").read_text())
        os.kill(orch.pid, signal.SIGKILL)  # the orchestrator alone: its runners and its server live on
        orch.wait(10)
        assert process_alive(old["pid"], old["create_time"])
        code, text, err = cli(capsys, "resume", run_dir)
    finally:
        if orch.poll() is None:
            orch.kill()
        orch.wait(10)
        for f in (orch.stdout, orch.stderr):
            f.close()
    assert code == 0 and "finished" in text, err
    assert not process_alive(old["pid"], old["create_time"]) and not (run_dir / "orch-mcp.pid").exists()
    with open_store(spec.store_url) as s:
        dump = s.dump_run(spec.run_id)
    check_done_once(dump, failures={"dead", "killed"})  # a runner re-attached before its server went: it died
    # the agents that were talking to the old server ended when it went; new runners connected anew
    assert len(tool_rows(dump, tool="connect")) > 2


def test_per_task_sim_options_reach_agent_driven_sims_through_get(tmp_path):
    """A template's ``meta.sim`` (here: this task always fails) is what an agent-driven sim sees of
    the task: ``get`` shows the task's meta, as the runner's own sim would read it."""
    template = tmp_path / "t.json"
    template.write_text(json.dumps({"tasks": [
        {"id": "ok1", "title": "fine", "time_estimate_ms": 60_000},
        {"id": "bad", "title": "doomed", "time_estimate_ms": 60_000, "meta": {"sim": {"p_fail": 1.0}}},
        {"id": "ok2", "title": "fine too", "time_estimate_ms": 60_000}]}))
    out, dump = run(tmp_path, {"policy": "pull", "agents": 2}, str(template), allow_failures=True)
    status = {t.id: t.status for t in dump.tasks}
    assert status == {"ok1": "completed", "bad": "failed", "ok2": "completed"}
    [failed] = [r for r in tool_rows(dump, tool="update") if r.data.get("task") == "bad" and r.data.get("status") == "failed"]
    assert failed.to_state == "ok"  # the agent itself reported the failure its sim drew
