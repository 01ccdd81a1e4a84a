"""Role scripts against the real coordination server: each agent is a conversation in a CLI's own
API format (``roleclis.Cli``) whose every orch call is made for real through the
agent's token (the official MCP SDK over streamable HTTP) and whose shell calls run in the agent's
worktree -- what a real CLI does with the script's answers. The run must end with every task
completed and merged, each agent having said "The run is over."."""

from __future__ import annotations

import json

import pytest

from coordfixtures import ServerProcess, agent_run, tokens
from coordstore import open_store
from coordstore.models import Task, TaskGraph
from gitfixtures import git
from roleclis import Cli, role_url

from agents.toolclient import ToolClient, ToolRefused
from orchestrator.modelserver import ModelServer

pytestmark = pytest.mark.usefixtures("no_git_identity")
ROUNDS = 400  # turns per agent at most: a run that needs more is stuck


def orch_through(client: ToolClient):
    """A CLI's MCP client: the tool's JSON as text, a refusal as an error text."""
    def call(tool: str, args: dict) -> tuple[str, bool]:
        try:
            return json.dumps(client.call(tool, **args)), False
        except ToolRefused as e:
            return e.text, True
    return call


def play(spec, paths, server_url: str, players: dict[str, tuple[str, str, dict]]):
    """Drive every agent of ``players`` (agent -> (cli, role script, options)) one turn at a time,
    round robin, until each has said that the run is over; the run's dump and the model server's record."""
    book = tokens(paths)
    srv = ModelServer("sim", worktrees=[paths.worktrees]).start()
    clients = {a: ToolClient(server_url, book[a]) for a in players}
    try:
        clis = {}
        for a, (cli, script, options) in players.items():
            wt = paths.worktree_of(a) if paths.worktree_of(a).is_dir() else None
            url = role_url(srv, a, script, worktree=wt, seed=spec.seed, **options)
            clis[a] = Cli(srv, cli, url, shell_cwd=wt or paths.root)
        last: dict[str, str] = {}
        for _ in range(ROUNDS):
            for a in [a for a in clis if a not in last]:
                r = clis[a].step(orch_through(clients[a]))
                if not r.calls:
                    last[a] = r.text
            if len(last) == len(clis):
                break
        assert len(last) == len(clis), f"still playing after {ROUNDS} turns each: {sorted(set(clis) - set(last))}"
        assert all("The run is over." in t for t in last.values()), last
        record = srv.requests
    finally:
        for c in clients.values():
            c.close()
        srv.stop()
    with open_store(spec.store_url) as s:
        return s.dump_run(spec.run_id), record


def merged_log(spec) -> list[str]:
    return git(spec.repo, "log", "--format=%an|%s", f"refs/heads/{spec.merged_branch}").splitlines()


def test_pulling_workers_as_claude_and_gemini_complete_every_task_through_the_real_tools(tmp_path):
    spec, paths = agent_run(tmp_path, workers=2)
    server = ServerProcess(paths.root)
    try:
        dump, record = play(spec, paths, server.url, {"w1": ("claude", "worker", {"policy": "pull"}),
                                                       "w2": ("gemini", "worker", {"policy": "pull"})})
    finally:
        server.stop()
    tasks = {t.id: t for t in dump.tasks}
    assert {t.status for t in tasks.values()} == {"completed"}
    leaves = ("a", "b", "c", "box.1", "box.2")
    log = merged_log(spec)
    for tid in leaves:  # each completed once, committed and merged by the agent that worked it
        assert sum(1 for ln in log if f"|task {tid}: " in ln) == 1, log
        assert any(ln.startswith(f"{tasks[tid].completed_by}|task {tid}: ") for ln in log)
    tools = [r for r in dump.history if r.entity == "tool"]
    assert {r.entity_id for r in tools} >= {"connect", "list_tasks", "claim", "get", "update"}
    completed = [r for r in tools if r.entity_id == "update" and r.to_state == "ok"]
    assert len(completed) == len(leaves)
    assert {x["agent"] for x in record} == {"w1", "w2"} and {x["api"] for x in record} == {"anthropic", "gemini"}


def test_a_coordinator_pushes_to_codex_and_opencode_workers(tmp_path):
    spec, paths = agent_run(tmp_path, workers=2)
    server = ServerProcess(paths.root)
    try:
        dump, record = play(spec, paths, server.url, {"coordinator": ("gemini", "coordinator", {}),
                                                       "w1": ("codex", "worker", {"policy": "push"}),
                                                       "w2": ("opencode", "worker", {"policy": "push"})})
    finally:
        server.stop()
    tasks = {t.id: t for t in dump.tasks}
    assert {t.status for t in tasks.values()} == {"completed"}
    assigned = [r for r in dump.history if r.entity == "tool" and r.entity_id == "update" and r.agent == "coordinator"]
    assert assigned and all(r.to_state == "ok" for r in assigned)
    leaves = ("a", "b", "c", "box.1", "box.2")
    assert {tasks[t].assigned_by for t in leaves} == {"coordinator"}
    log = merged_log(spec)
    assert all(sum(1 for ln in log if f"|task {t}: " in ln) == 1 for t in leaves), log
    coord = [m for x in record if x["agent"] == "coordinator" for m in x["mcp"] if m["tool"] == "update"]
    assert {m["task"] for m in coord} == set(leaves)


def test_a_decomposer_splits_a_coarse_task_and_the_parts_are_completed_and_merged(tmp_path):
    graph = TaskGraph(tasks=[Task(id="big", title="do big", points=9, time_estimate_ms=90_000, file_scope=["big.txt"]),
                             Task(id="small", title="do small", points=1, file_scope=["small.txt"])])
    spec, paths = agent_run(tmp_path, workers=2, graph=graph)
    server = ServerProcess(paths.root)
    try:
        dump, record = play(spec, paths, server.url, {
            "w1": ("claude", "decomposer", {"policy": "pull", "decompose": {"over_points": 5, "parts": [3, 3]}}),
            "w2": ("claude", "worker", {"policy": "pull"})})
    finally:
        server.stop()
    tasks = {t.id: t for t in dump.tasks}
    assert set(tasks) == {"big", "small", "big-part1", "big-part2", "big-part3"}
    assert {t.status for t in tasks.values()} == {"completed"}
    made = [r for r in dump.history if r.entity == "tool" and r.entity_id == "create_tree"]
    assert [(r.agent, r.to_state) for r in made] == [("w1", "ok")]
    log = merged_log(spec)
    for p in ("big-part1", "big-part2", "big-part3", "small"):
        assert sum(1 for ln in log if f"|task {p}: " in ln) == 1, log
