"""The scripted model server playing the dispatching roles (coordinator, lead), the decomposer, and
role faults on demand, each test a conversation over real HTTP in a CLI's own format (``roleclis.Cli``)."""

from __future__ import annotations

import urllib.error

import pytest

from roleclis import ORCH, Cli, agent, bare, ok, role_url, task, worktree  # noqa: F401 (worktree: a fixture)

# ---------------------------------------------------------------- the coordinator
def test_the_coordinator_assigns_ready_tasks_to_idle_workers_whose_tags_fit(serve):
    srv = serve("sim")
    c = Cli(srv, "claude", role_url(srv, "coordinator", "coordinator"))
    c.step(lambda t, a: ok({"agent_id": "coordinator"}))
    r = c.step(lambda t, a: ok([task("a", needed_tags=["py"]), task("b", priority=3), task("c"), task("box", container=True)]))
    assert bare(c, r) == [("list_tasks", {"status": "pending", "ready": True})]
    agents = [agent("coordinator", "coordinator"), agent("w1", tags=["py"]), agent("w2", tags=["js"]), agent("w3", tasks=["z"])]
    assert bare(c, c.step(lambda t, a: ok(agents))) == [("list_agents", {})]
    made = []
    for _ in range(2):
        r = c.step(lambda t, a: ok({"success": True, "assignee": a["assignee"]}))
        made += [i for _, i in bare(c, r)]
    # b first (priority); w1 and w2 both fit it, neither had one: the first; a needs py and w1 is taken: c
    assert made == [{"task": "b", "assignee": "w1"}, {"task": "c", "assignee": "w2"}]
    r = c.send()
    assert bare(c, r) == [("list_tasks", {"status": "pending", "ready": True})]  # every idle worker served: look again


def test_the_coordinator_gives_a_task_that_came_back_to_another_worker_and_stops_when_all_is_terminal(serve, tmp_path):
    srv = serve("sim")
    c = Cli(srv, "gemini", role_url(srv, "coordinator", "coordinator"), shell_cwd=tmp_path)
    c.step(lambda t, a: ok({"agent_id": "coordinator"}))
    c.step(lambda t, a: ok([task("a")]))
    c.step(lambda t, a: ok([agent("w1"), agent("w2")]))
    r = c.step(lambda t, a: ok({"success": True}))
    assert bare(c, r) == [("update", {"task": "a", "assignee": "w1"})]
    c.step(lambda t, a: ok([task("a")]))  # a came back pending
    c.step(lambda t, a: ok([agent("w1"), agent("w2")]))
    r = c.step(lambda t, a: ("update: assignee 'w2' is stalled", True))
    assert bare(c, r) == [("update", {"task": "a", "assignee": "w2"})]  # not w1 again
    r = c.step(lambda t, a: ok([]))
    assert bare(c, r)[0][0] == "shell"  # refused, nothing else to give: a wait
    c.step(lambda t, a: ok([]))
    r = c.step(lambda t, a: ok([task("a", "completed")]))
    assert bare(c, r) == [("list_tasks", {})]
    r = c.send()
    assert not r.calls and "The run is over." in r.text


# ---------------------------------------------------------------- the lead
def test_the_lead_splits_coarse_leaves_then_hands_subtrees_out_biggest_first(serve, tmp_path):
    srv = serve("sim")
    c = Cli(srv, "codex", role_url(srv, "lead", "lead", policy="hybrid", decompose={"over_points": 5, "parts": 2,
                                                                                      "sequential": True}), shell_cwd=tmp_path)
    c.step(lambda t, a: ok({"agent_id": "lead"}))
    graph = [task("X", container=True, ready=False), task("x1", parent="X", points=8), task("x2", parent="X", points=2),
             task("Y", container=True, ready=False), task("y1", parent="Y", points=3)]
    r = c.step(lambda t, a: ok(graph))
    assert bare(c, r) == [("list_tasks", {})]
    r = c.step(lambda t, a: ok({**task("x1", parent="X", points=8), "time_estimate_ms": 80000}))
    assert bare(c, r) == [("get", {"task": "x1"})]
    r = c.step(lambda t, a: ok({"created": ["x1-part1", "x1-part2"], "root": "x1-part1", "count": 2}))
    (name, args), = bare(c, r)
    assert name == "create_tree" and args["parent"] == "x1" and [n["id"] for n in args["tree"]] == ["x1-part1", "x1-part2"]
    assert all(n["tags"] == ["part"] and n["points"] == 4 for n in args["tree"])
    r = c.step(lambda t, a: ok({"success": True}))
    assert bare(c, r) == [("link", {"from": "x1-part1", "to": "x1-part2", "type": "blocks"})]
    graph = [task("X", container=True, ready=False), task("x1", parent="X", container=True), task("x1-part1", parent="x1", points=4, tags=["part"]),
             task("x1-part2", parent="x1", points=4, tags=["part"]), task("x2", parent="X", points=2),
             task("Y", container=True, ready=False), task("y1", parent="Y", points=3)]
    r = c.step(lambda t, a: ok(graph))
    assert bare(c, r) == [("list_tasks", {})]
    workers = [agent("lead", "lead"), agent("w1"), agent("w2")]
    r = c.step(lambda t, a: ok(workers))
    assert bare(c, r) == [("list_agents", {})]
    r = c.step(lambda t, a: ("Exit code: 0", False))
    assert bare(c, r)[0][0] == "shell"  # the first sight of the workers: wait until the set holds
    c.step(lambda t, a: ok(graph))
    r = c.step(lambda t, a: ok(workers))
    assert bare(c, r) == [("list_agents", {})]
    r = c.step(lambda t, a: ok({"success": True}))
    assert bare(c, r) == [("update", {"task": "X", "assignee": "w1"})]  # 10 points of work left
    r = c.step(lambda t, a: ok({"success": True}))
    assert bare(c, r) == [("update", {"task": "Y", "assignee": "w2"})]  # the least loaded
    assert bare(c, c.send()) == [("list_tasks", {})]


# ---------------------------------------------------------------- the decomposer
def test_a_decomposer_gives_a_coarse_task_back_splits_it_and_works_parts_whole(serve, worktree):
    srv = serve("sim", worktrees=[worktree])
    c = Cli(srv, "opencode", role_url(srv, "w1", "decomposer", worktree=worktree, policy="pull",
                                      decompose={"over_points": 5, "parts": [3, 3]}), shell_cwd=worktree)
    c.step(lambda t, a: ok({"agent_id": "w1"}))
    c.step(lambda t, a: ok([task("big", points=9)]))
    c.step(lambda t, a: ok({"success": True, "task": {"id": "big", "attempt": 1}}))
    r = c.step(lambda t, a: ok({**task("big", "working", points=9), "time_estimate_ms": 90000, "attempt": 1}))
    assert bare(c, r) == [("get", {"task": "big"})]
    r = c.step(lambda t, a: ok({"success": True, "task": {"id": "big", "status": "pending"}}))
    assert bare(c, r) == [("update", {"task": "big", "status": "pending", "reason": "decomposing into subtasks"})]
    r = c.step(lambda t, a: ok({"created": ["big-part1", "big-part2", "big-part3"]}))
    (name, args), = bare(c, r)
    assert name == "create_tree" and args["parent"] == "big" and len(args["tree"]) == 3
    assert all(n["time_estimate_ms"] == 30000 for n in args["tree"])
    part = task("big-part1", parent="big", points=3, tags=["part"])
    r = c.step(lambda t, a: ok([part]))
    assert bare(c, r) == [("list_tasks", {"ready": True})]
    c.step(lambda t, a: ok({"success": True, "task": {"id": "big-part1", "attempt": 1}}))
    r = c.step(lambda t, a: ok({**part, "status": "working", "attempt": 1, "time_estimate_ms": 30000}))
    assert bare(c, r) == [("get", {"task": "big-part1"})]
    assert bare(c, c.send())[0][0] == "shell"  # a part is worked whole, never split again


# ---------------------------------------------------------------- faults on demand
def test_a_hang_at_turn_n_silences_the_agent_once_over_all_its_sessions(serve):
    srv = serve("sim")
    faults = [{"turn": 1, "kind": "hang"}]
    first = Cli(srv, "claude", role_url(srv, "coordinator", "coordinator", spawn=1, faults=faults))
    first.step(lambda t, a: ok({"agent_id": "coordinator"}))
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        first.send(timeout=1)  # the coordinator goes silent
    respawned = Cli(srv, "claude", role_url(srv, "coordinator", "coordinator", spawn=2, faults=faults))
    respawned.step(lambda t, a: ok({"agent_id": "coordinator"}))
    assert bare(respawned, respawned.send()) == [("list_tasks", {"status": "pending", "ready": True})]
    assert [(x["session"], x["turn"], x["fault"]) for x in srv.requests] == [
        ("coordinator.1", 0, None), ("coordinator.1", 1, "hang"), ("coordinator.2", 0, None), ("coordinator.2", 1, None)]


def test_a_429_on_demand_then_the_turn_itself(serve):
    srv = serve("sim")
    c = Cli(srv, "gemini", role_url(srv, "w1", "worker", faults=[{"turn": 1, "kind": "rate_limit", "retry_after": 0.5}]))
    c.step(lambda t, a: ok({"agent_id": "w1"}))
    r = c.send()
    assert r.status == 429 and "RESOURCE_EXHAUSTED" in r.text and r.headers["retry-after"] == "0.5"
    assert bare(c, c.send()) == [("list_tasks", {"ready": True})]


@pytest.mark.parametrize("loops,second_loops", [(True, True), (1, False)])
def test_a_worker_looping_on_claim_repeats_the_identical_call(serve, worktree, loops, second_loops):
    srv = serve("sim", worktrees=[worktree])
    for spawn, looping in ((1, True), (2, second_loops)):
        c = Cli(srv, "codex", role_url(srv, "w1", "worker", spawn=spawn, worktree=worktree, loop_on_claim=loops),
                shell_cwd=worktree)
        c.step(lambda t, a: ok({"agent_id": "w1"}))
        c.step(lambda t, a: ok([task("a")]))
        claims = [c.step(lambda t, a: ok({"success": True, "task": {"id": "a"}, "already": True})) for _ in range(4)]
        said = [bare(c, r) for r in claims]
        if looping:
            assert said == [[("claim", {"task": "a"})]] * 4
        else:
            assert said[:2] == [[("claim", {"task": "a"})], [("get", {"task": "a"})]]


def test_a_role_turn_streams_and_a_task_line_in_the_role_prompt_does_not_make_it_a_task_session(serve):
    from modelserver_helpers import anth

    srv = serve("sim")
    url = role_url(srv, "w1", "worker", policy="pull")
    tools = [{"name": f"mcp__orch__{t}", "description": t, "input_schema": {"type": "object", "properties": {}}} for t in ORCH]
    with anth(srv, base=url).messages.stream(model="m", max_tokens=100, tools=tools, messages=[
            {"role": "user", "content": "Task a: do a\nYou are w1; claim tasks until the run is over."}]) as s:
        m = s.get_final_message()
    assert [(b.name, b.input) for b in m.content if b.type == "tool_use"] == [("mcp__orch__connect", {"worker_id": "w1"})]
    assert [(x["session"], x["task"], x["agent"], x["stream"]) for x in srv.requests] == [("w1.1", None, "w1", True)]


def test_coordination_turns_report_the_sims_turn_tokens_and_work_turns_their_plans(serve, worktree):
    srv = serve("sim", worktrees=[worktree])
    c = Cli(srv, "claude", role_url(srv, "w1", "worker", worktree=worktree, turn_tokens={"in": 900, "out": 50}),
            shell_cwd=worktree)
    c.step(lambda t, a: ok({"agent_id": "w1"}))
    c.step(lambda t, a: ok([task("a")]))
    c.step(lambda t, a: ok({"success": True, "task": {"id": "a"}}))
    c.step(lambda t, a: ok({**task("a", "working"), "attempt": 1, "time_estimate_ms": 60000}))
    c.send()
    used = [(x["usage"]["in"], x["usage"]["out"]) for x in srv.requests]
    assert used[:4] == [(900, 50)] * 4 and used[4] != (900, 50)  # connect, list, claim, get; then the sim's first step


def test_a_look_the_cli_keeps_refusing_ends_the_session_saying_why(serve, tmp_path):
    srv = serve("sim")
    c = Cli(srv, "claude", role_url(srv, "coordinator", "coordinator"), shell_cwd=tmp_path)
    c.step(lambda t, a: ok({"agent_id": "coordinator"}))
    refused = "Claude requested permissions to use mcp__orch__list_agents, but you haven't granted it yet."
    said = [bare(c, c.step(lambda t, a: (refused, True) if t == "list_agents" else ok([task("a")])))[0][0] for _ in range(8)]
    assert said == ["list_tasks", "list_agents", "shell"] * 2 + ["list_tasks", "list_agents"]  # refused: nobody idle, a wait
    r = c.send()
    assert not r.calls and "list_agents failed 3 times in a row" in r.text and "requested permissions" in r.text
