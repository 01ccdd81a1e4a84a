"""Real agent CLIs coordinating themselves through orch's tools, offline: ``orch run`` with
``coordination: agents`` -> one long-lived real CLI process per agent, configured with orch's
coordination server (MCP over HTTP, the agent's token) -> orch's scripted model server playing the
agent's role (coordinator, worker, lead, decomposer) -> real MCP tool calls -> the store, commits
and merges made by the coordination server.

These tests need the real CLIs; where one is missing they fail and say how to install it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from coordstore import open_store
from orchestrator.runs.launch import RunRequest, plan_runs, run_one

from realclis import finished, git, module_tasks, need, served_experiment, slot_repo, write_graph

pytestmark = [pytest.mark.usefixtures("no_git_identity"), pytest.mark.real_cli]

DRIVEN = {"coordination": "agents", "model_server": "sim"}


def run_variant(tmp_path: Path, repo: Path, tasks: list[dict], variant: dict, **supervision):
    exp = served_experiment(tmp_path, write_graph(tmp_path, tasks), {**DRIVEN, **variant}, **{"stall_after_ms": 30_000, **supervision})
    [plan] = plan_runs(RunRequest(variant=variant["name"], experiment=exp, repo=repo, results=tmp_path / "results"))
    return run_one(*plan)


def history(out):
    with open_store(out.spec.store_url) as s:
        return s.dump_run(out.spec.run_id).history


def completed_once(dump) -> dict[str, int]:
    """task -> how many times it became completed (each must be exactly once)."""
    counts: dict[str, int] = {}
    for r in dump.history:
        if r.entity == "task" and r.to_state == "completed":
            counts[r.entity_id] = counts.get(r.entity_id, 0) + 1
    return counts


def tool_rows(dump, tool: str, outcome: str = "ok"):
    return [r for r in dump.history if r.entity == "tool" and r.entity_id == tool and r.to_state == outcome]


def sessions_by_agent(out) -> dict[str, int]:
    """agent -> how many model-server sessions it had (one per CLI process)."""
    recorded = [json.loads(r) for r in (out.run_dir / "model-requests.jsonl").read_text().splitlines()]
    sessions: dict[str, set[str]] = {}
    for r in recorded:
        if r.get("agent"):
            sessions.setdefault(r["agent"], set()).add(r["session"])
    return {a: len(s) for a, s in sessions.items()}


def assert_merged(repo: Path, out, n: int) -> None:
    for i in range(n):
        text = git(repo, "show", f"{out.spec.merged_branch}:m{i}.py")
        assert f"task t{i}: change module {i} [sim " in text and "orch-slot" not in text, text
    assert git(repo, "status", "--porcelain") == ""  # nothing written outside the worktrees


@pytest.mark.parametrize("cli", ["claude", "codex", "gemini", "opencode"])
def test_each_cli_pulls_and_completes_every_task_through_orchs_tools(tmp_path, cli, monkeypatch):
    """Agent-driven pull-2: two long-lived CLI sessions claim, work and complete every task through
    the coordination tools; every task completed exactly once and merged; the claims are the
    agents' own tool calls."""
    need(cli)
    monkeypatch.setenv("PWD", str(tmp_path))
    repo = slot_repo(tmp_path, 4)
    out = run_variant(tmp_path, repo, module_tasks(4), {"name": f"{cli}-pull-2", "policy": "pull", "agents": 2, "kind": cli})
    dump, events = finished(out)
    assert completed_once(dump) == {f"t{i}": 1 for i in range(4)}
    claims = tool_rows(dump, "claim")
    assert {r.data.get("task") for r in claims} >= {f"t{i}" for i in range(4)} and {r.agent for r in claims} <= {"w1", "w2"}
    assert len(tool_rows(dump, "update")) >= 4
    assert_merged(repo, out, 4)
    # one CLI process per agent for the whole run: one model-server session each, never a second
    assert sessions_by_agent(out) == {"w1": 1, "w2": 1}
    started = [e.agent for e in events if e.type == "log" and f"{cli} session 1 started" in (e.data.get("msg") or "")]
    assert sorted(started) == ["w1", "w2"]


def test_claude_coordinator_assigns_and_two_workers_execute(tmp_path):
    """Push: one claude coordinator assigns through ``update(assignee=)``, two claude workers take
    what they are given; the assignments are the coordinator's rows in the run's history."""
    need("claude")
    repo = slot_repo(tmp_path, 4)
    out = run_variant(tmp_path, repo, module_tasks(4), {"name": "claude-push-2", "policy": "push", "agents": 2, "kind": "claude"})
    dump, _ = finished(out)
    assert completed_once(dump) == {f"t{i}": 1 for i in range(4)}
    assigned = [r for r in tool_rows(dump, "update") if r.agent == "coordinator"]
    assert {r.data.get("task") for r in assigned} >= {f"t{i}" for i in range(4)}
    # ... and what `orch history` shows a user: each assignment, the task and the worker named
    shown = subprocess.run([sys.executable, "-m", "orchestrator", "history", str(out.run_dir), "--entity", "tool",
                            "--agent", "coordinator"], capture_output=True, text=True, check=True).stdout
    for r in assigned:
        assert f"task={r.data['task']} assignee={r.data['assignee']}" in shown, shown
    owners = {r.entity_id: r.agent for r in dump.history if r.entity == "task" and r.to_state == "completed"}
    assert set(owners.values()) <= {"w1", "w2"}
    assert_merged(repo, out, 4)


def test_claude_workers_decompose_coarse_tasks_and_complete_the_parts(tmp_path):
    """Self-decomposed (seed 004): claude workers split the coarse tasks they claim with
    ``create_tree``; the parts are completed and merged, the coarse tasks complete with them."""
    need("claude")
    repo = slot_repo(tmp_path, 2)
    tasks = module_tasks(2)
    for t in tasks:
        t["points"] = 8
    out = run_variant(tmp_path, repo, tasks, {"name": "claude-self-decomposed", "policy": "pull", "agents": 2, "kind": "claude",
                                              "kind_options": {"decompose": {"over_points": 5, "parts": [2, 2]}}})
    dump, _ = finished(out)
    trees = tool_rows(dump, "create_tree")
    assert {r.data.get("task") for r in trees} == {"t0", "t1"}, [(r.agent, r.data.get("task")) for r in trees]
    parts = [t for t in dump.tasks if "-part" in t.id]
    assert len(parts) == 4 and all(t.status == "completed" for t in parts)
    assert completed_once(dump) == {t.id: 1 for t in dump.tasks}  # the coarse tasks completed with their parts
    merged = set(git(repo, "ls-tree", "-r", "--name-only", out.spec.merged_branch).split())
    assert {f"orch-sim/{t.id}.md" for t in parts} <= merged, merged  # each part's own edit was merged


def test_a_silent_claude_coordinator_is_judged_killed_and_respawned_into_its_role(tmp_path):
    """The coordinator's model goes silent (a stream that never ends) at its third turn: orch judges
    it stalled, kills it and respawns it as the coordinator; the run completes."""
    need("claude")
    repo = slot_repo(tmp_path, 3)
    out = run_variant(tmp_path, repo, module_tasks(3), {
        "name": "claude-push-silent", "policy": "push", "kind": "claude",
        "agents": [{"id": "coordinator", "role": "coordinator", "options": {"faults": [{"turn": 2, "kind": "hang"}]}},
                   {"id": "w{n}", "count": 2}]}, stall_after_ms=6_000)
    dump, _ = finished(out)
    verdicts = [r for r in dump.history if r.entity == "agent" and r.entity_id == "coordinator"]
    assert any(r.to_state == "stalled" for r in verdicts), [(r.to_state, r.reason) for r in verdicts]
    assigned = [r for r in tool_rows(dump, "update") if r.agent == "coordinator"]
    assert {r.data.get("task") for r in assigned} >= {"t0", "t1", "t2"}
    assert sessions_by_agent(out)["coordinator"] >= 2  # the respawned coordinator had a session of its own
    assert_merged(repo, out, 3)
