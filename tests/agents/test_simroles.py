"""The sim kind playing roles through the coordination tools: its options, then a swarm worker (and
a decomposing one) driven in this process against the real server, on a prepared run with a real
git repository and store."""

from __future__ import annotations

import json

import pytest

from coordfixtures import ServerProcess, agent_run, tokens
from coordstore import open_store
from coordstore.errors import AgentError
from coordstore.models import Dependency, Task, TaskGraph
from gitfixtures import git

from agents.config import MCP_TOKEN_ENV, MCP_URL_ENV, RunnerConfig
from agents.driven import drive
from agents.events import EventWriter, highest_seq
from agents.kinds import preflight_player
from agents.kinds.simroles import RoleOptions
from agents.pulse import Pulse

pytestmark = pytest.mark.usefixtures("no_git_identity")


@pytest.mark.parametrize("options,words", [
    ({"turn_s": -1}, "turn_s=-1"),
    ({"turn_tokens": {"in": 1.5}}, "turn_tokens"),
    ({"turn_tokens": {"input": 3}}, "turn_tokens"),
    ({"choose_among": 0}, "choose_among=0"),
    ({"poll_s": 10, "poll_max_s": 5}, "poll_max_s=5"),
    ({"decompose": {"parts": [1, 3]}}, "decompose.parts"),
    ({"decompose": {"over": 3}}, "decompose="),
    ({"decompose": {"sequential": "yes"}}, "decompose.sequential"),
])
def test_bad_role_options_are_one_error_naming_the_option(options, words):
    with pytest.raises(AgentError) as e:
        RoleOptions.build(options)
    assert words in str(e.value)


def test_role_options_defaults_and_the_plan_time_check():
    o = RoleOptions.build({})
    assert (o.turn_s, o.turn_tokens["in"], o.turn_tokens["out"], o.choose_among, o.decompose) == (8.0, 1200, 120, 2, None)
    assert RoleOptions.build({"decompose": True}).decompose.parts == (2, 4)
    preflight_player("sim", "push", "coordinator", {"turn_s": 2, "p_fail": 0.1})
    with pytest.raises(AgentError, match="plays no lead under policy push"):
        preflight_player("sim", "push", "lead", {})
    with pytest.raises(AgentError, match="cannot play a role in agent-driven variants"):
        preflight_player("script", "pull", "worker", {})
    with pytest.raises(AgentError, match="p_fail"):
        preflight_player("sim", "pull", "worker", {"p_fail": 2})


def worker_config(spec, paths, agent: str, **options) -> RunnerConfig:
    return RunnerConfig(store_url=spec.store_url, run_id=spec.run_id, agent_id=agent, events_dir=str(paths.events_of(agent)),
                        role="worker", kind="sim", kind_options=options, policy="pull", coordination="agents",
                        worktree=str(paths.worktree_of(agent)), repo=spec.repo, merged_ref=f"refs/heads/{spec.merged_branch}",
                        seed=spec.seed, time_scale=0.001)


def play(spec, paths, agent: str, url: str, **options):
    """Drive ``agent`` as a swarm worker until the run is over; its events, in order."""
    cfg = worker_config(spec, paths, agent, **options)
    events = EventWriter(cfg.events_dir, agent)
    with open_store(spec.store_url) as store:
        pulse = Pulse(store, spec.run_id, agent, events, cfg.heartbeat_ms, cfg.lease_ms)
        drive(cfg, store, events, pulse, env={MCP_URL_ENV: url, MCP_TOKEN_ENV: tokens(paths)[agent]})
        dump = store.dump_run(spec.run_id)
    evs = [json.loads((paths.events_of(agent) / f"{i:010d}.json").read_text()) for i in range(highest_seq(paths.events_of(agent)) + 1)]
    return dump, evs


def test_a_swarm_worker_alone_claims_works_and_completes_every_task_through_the_tools(tmp_path):
    spec, paths = agent_run(tmp_path, workers=2)
    server = ServerProcess(paths.root)
    try:
        dump, evs = play(spec, paths, "w2", server.url, p_fial=0.5)  # a typo: said, then ignored
    finally:
        server.stop()
    assert any("option 'p_fial' is not one of its options" in e["data"].get("msg", "") for e in evs if e["type"] == "log")
    assert {t.id: (t.status, t.completed_by) for t in dump.tasks if t.id != "box"} == \
        {tid: ("completed", "w2") for tid in ("a", "b", "c", "box.1", "box.2")}
    tools = [r for r in dump.history if r.entity == "tool"]
    assert {r.agent for r in tools} == {"w2"}
    names = [r.entity_id for r in tools]
    assert names[0] == "connect" and names[-1] == "disconnect"
    assert names.count("claim") == 5 and names.count("log_metrics") == 5
    # every call was a step event named after the tool; its looks are polls
    steps = [e for e in evs if e["type"] == "step" and e["data"].get("tool")]
    assert [e["data"]["name"] for e in steps] == names
    assert all(e["data"].get("poll") is (True if e["data"]["name"] in ("list_tasks", "get") else None) for e in steps)
    # each turn cost tokens (an event per call but log_metrics), and each task's share reached the store
    turns = [e for e in evs if e["type"] == "tokens" and e["data"]["in"] == 1200 and e["data"]["out"] == 120]
    assert len(turns) == len(names) - names.count("log_metrics")
    # and each decision took its time, said as a turn step (wall ms); looks' turns are polls too
    decided = [e["data"] for e in evs if e["type"] == "step" and e["data"]["name"] == "turn"]
    assert len(decided) == len(turns) and all(d["ms"] >= 0 for d in decided)
    assert sum(bool(d.get("poll")) for d in decided) == sum(n in ("list_tasks", "get") for n in names)
    a = next(t for t in dump.tasks if t.id == "a")
    logged = [r for r in tools if r.entity_id == "log_metrics" and r.data["task"] == "a"]
    assert a.tokens_in == logged[0].data["metrics"][0] > 3 * 1200  # its turns (claim, get, update) and its work
    # the server committed and merged each task as the agent's work
    merged = f"refs/heads/{spec.merged_branch}"
    log = git(spec.repo, "log", "--format=%an|%s", merged).splitlines()
    assert sum(1 for ln in log if ln.startswith("w2|task ")) == 5


def test_a_decomposing_worker_splits_a_claimed_task_mid_run_and_works_its_parts(tmp_path):
    # a and c are coarse (more than 5 points), b is not; c waits for a
    graph = TaskGraph(tasks=[Task(id="a", title="do a", points=8, time_estimate_ms=90_000, file_scope=["a.txt"]),
                             Task(id="b", title="do b", points=2, file_scope=["b.txt"]),
                             Task(id="c", title="do c", points=6, file_scope=["a.txt"])],
                      dependencies=[Dependency(from_id="a", to_id="c", type="blocks")])
    spec, paths = agent_run(tmp_path, workers=2, graph=graph)
    server = ServerProcess(paths.root)
    try:
        dump, evs = play(spec, paths, "w2", server.url, decompose={"over_points": 5, "parts": [2, 3]})
    finally:
        server.stop()
    tasks = {t.id: t for t in dump.tasks}
    made = [r for r in dump.history if r.entity == "task" and r.from_state is None and r.reason == "added"]
    assert {r.agent for r in made} == {"w2"} and all(r.data["created_by"] == "w2" for r in made)
    parts = {r.entity_id for r in made}
    assert {p.split("-part")[0] for p in parts} == {"a", "c"}  # b stays whole, and parts are never split again
    assert all(tasks[p].status == "completed" and "part" in tasks[p].tags for p in parts)
    a_parts = sorted(p for p in parts if p.startswith("a-"))
    assert sum(tasks[p].time_estimate_ms for p in a_parts) == 90_000 // len(a_parts) * len(a_parts)  # the work is kept
    # a was claimed, given back, then completed as a container when its parts did (c only then started)
    path = [r.to_state for r in dump.history if r.entity == "task" and r.entity_id == "a"]
    assert path[:4] == ["pending", "assigned", "working", "pending"] and path[-1] == "completed"
    assert tasks["a"].status == tasks["b"].status == tasks["c"].status == "completed"
    # every part's commit is on the merged ref, made by the agent
    merged = f"refs/heads/{spec.merged_branch}"
    log = git(spec.repo, "log", "--format=%an|%s", merged).splitlines()
    for p in parts:
        assert sum(1 for ln in log if ln.startswith(f"w2|task {p}: ")) == 1, log
    assert sum(1 for ln in log if ln.startswith("w2|task b: ")) == 1
    assert [r.entity_id for r in dump.history if r.entity == "tool" and r.entity_id == "create_tree"] == ["create_tree"] * 2
