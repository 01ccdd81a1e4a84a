"""The coordination tools as plain Python (no MCP in between) on a prepared agent-driven run: a
real run directory, the demo git repository with a worktree per worker, and each store backend."""

from __future__ import annotations

import pytest

from gitfixtures import git, run_git

from coordfixtures import agent_run
from orchestrator.coordination.args import ToolRefused
from orchestrator.coordination.runctx import RunContext
from orchestrator.coordination.tools import TOOLS, CoordinationTools, args_digest

pytestmark = pytest.mark.usefixtures("no_git_identity")


@pytest.fixture
def tools(tmp_path, backend):
    spec, paths = agent_run(tmp_path, backend)
    ctx = RunContext(paths.root)
    yield CoordinationTools(ctx)
    ctx.close()


def refused(t: CoordinationTools, tool: str, caller: str, /, **args) -> ToolRefused:
    with pytest.raises(ToolRefused) as e:
        t.call(tool, caller, args)
    return e.value


def tool_rows(t: CoordinationTools, tool: str | None = None):
    return [r for r in t.store.history(t.run_id, entity="tool") if tool is None or r.entity_id == tool]


def test_a_worker_claims_works_and_completes_a_task_which_lands_on_the_merged_ref(tools):
    t, ctx = tools, tools.ctx
    assert t.call("connect", "w2", {"worker_id": "w2", "workflow": "swarm"})["role"] == "worker"
    ready = [x["id"] for x in t.call("list_tasks", "w2", {"ready": True})]
    assert ready == ["a", "b", "box.1"]  # c waits for a; box is a container; box.2 follows box.1
    claimed = t.call("claim", "w2", {"task": "a"})
    assert claimed["task"]["status"] == "working" and claimed["task"]["worker_id"] == "w2"
    wt = ctx.worktree("w2")
    (wt / "a.txt").write_text("a, done by w2\n")
    (wt / "new.txt").write_text("new\n")
    done = t.call("update", "w2", {"task": "a", "status": "completed"})
    assert sorted((f["path"], f["change"]) for f in done["files"]) == [("a.txt", "modified"), ("new.txt", "added")]
    assert git(wt, "log", "-1", "--format=%s%n%an", done["commit"]).splitlines() == ["task a: do a", "w2"]
    assert done["merge"]["ok"] and run_git(wt, "merge-base", "--is-ancestor", done["commit"], ctx.merged_ref, check=False) == ""
    assert git(wt, "show", f"{ctx.merged_ref}:a.txt") == "a, done by w2"
    task = t.store.get_task(t.run_id, "a")
    assert (task.status, task.completed_by) == ("completed", "w2")
    [complete] = [r for r in t.store.history(t.run_id, entity="task", entity_id="a") if r.to_state == "completed"]
    assert complete.data["commit"] == done["commit"] and complete.data["merge"]["sha"] == done["merge"]["sha"]
    assert [r.to_state for r in t.store.history(t.run_id, entity="merge", entity_id="a")] == ["merged"]
    # c was blocked by a: claiming it catches w1's worktree up with a's work first
    assert t.call("get", "w1", {"task": "c"})["ready"] is True
    t.call("claim", "w1", {"task": "c"})
    assert (ctx.worktree("w1") / "a.txt").read_text() == "a, done by w2\n"


def test_an_agent_works_one_task_at_a_time_in_its_one_worktree(tools):
    t = tools
    t.call("claim", "w1", {"task": "a"})
    e = refused(t, "claim", "w1", task="b")
    assert "working on task 'a'" in str(e) and t.store.get_task(t.run_id, "b").status == "pending"
    t.call("update", "w1", {"task": "a", "status": "pending"})  # given back: free for another
    assert t.call("claim", "w1", {"task": "b"})["task"]["status"] == "working"


def test_a_failing_verify_fails_the_task_and_drops_its_commit(tools):
    t, ctx = tools, tools.ctx
    store = t.store
    # the task's verify command, as a template would carry it
    from coordstore.models import Task  # noqa: PLC0415 - only this test builds a task
    store.add_tasks(t.run_id, [Task(id="v", title="verified", meta={"verify": ["sh", "-c", "test -f ok.txt"]})], by="test")
    base = git(ctx.worktree("w2"), "rev-parse", "HEAD")
    t.call("claim", "w2", {"task": "v"})
    (ctx.worktree("w2") / "other.txt").write_text("no ok file\n")
    e = refused(t, "update", "w2", task="v", status="completed")
    assert e.text.startswith("update: task 'v' failed: verify exited 1") and e.outcome == "error"
    assert store.get_task(t.run_id, "v").status == "failed"
    assert git(ctx.worktree("w2"), "rev-parse", "HEAD") == base and not (ctx.worktree("w2") / "other.txt").exists()
    assert tool_rows(t, "update")[-1].data["status"] == "failed"


@pytest.mark.parametrize("tool, args, text", [
    ("claim", {"task": "nope"}, "claim: task 'nope' does not exist in run r1"),
    ("claim", {}, "claim: argument 'task' is required"),
    ("claim", {"task": 3}, "claim: argument 'task' must be a string, got int"),
    ("claim", {"task": "box"}, "claim: task 'box' is a container: claim its children"),
    ("get", {"task": ""}, "get: argument 'task' must not be empty"),
    ("update", {"task": "a", "status": "done"}, "update: status 'done' is not one of pending, working, completed, failed, cancelled"),
    ("update", {"task": "a"}, "update: nothing to change: give status or assignee"),
    ("update", {"task": "a", "assignee": "w9"}, "update: assignee 'w9' is not an agent of run r1"),
    ("update", {"task": "a", "assignee": "coordinator"}, "update: assignee 'coordinator' is a coordinator: it works no tasks"),
    ("update", {"task": "a", "status": "completed"}, "update: task 'a' is pending; only the agent working on it completes it"),
    ("list_tasks", {"status": ["pending", "later"]}, "list_tasks: status 'later' is not one of pending, assigned"),
    ("list_tasks", {"limit": 0}, "list_tasks: argument 'limit' must be between 1 and 100000, got 0"),
    ("list_tasks", {"ready": "yes"}, "list_tasks: argument 'ready' must be true or false, got 'yes'"),
    ("create", {}, "create: give a title (or a description)"),
    ("create", {"title": "x", "priority": "high"}, "create: argument 'priority' must be an integer, got 'high'"),
    ("create", {"title": "x", "parent": "nope"}, "create: task 'nope' does not exist in run r1"),
    ("create", {"title": "x", "blocked_by": ["ghost"]}, "ghost"),
    ("create_tree", {"tree": {"title": "r", "children": [{"title": "k", "sibling_type": "zigzag"}]}},
     "create_tree: tree.children[0]: sibling_type 'zigzag' is not one of parallel, sequential"),
    ("create_tree", {"tree": {"title": "r", "children": [{"colour": "red"}]}}, "create_tree: tree.children[0]: unknown argument 'colour'"),
    ("create_tree", {"tree": [{"title": "ok"}, 7]}, "create_tree: tree[1] must be an object with a title, got int"),
    ("link", {"from": "c", "to": "a"}, "cycle"),
    ("link", {"from": "a", "to": "b", "type": "contains"}, "link: type 'contains' is not one of blocks, follows"),
    ("unlink", {"from": "a", "to": "b"}, "unlink: a -blocks-> b"),
    ("attach", {"task": "a", "name": "big", "content": "x" * (256 * 1024 + 1)}, "attach: argument 'content' is 262145 bytes"),
    ("log_metrics", {"task": "a", "values": [1, 2, 3, 4, 5, 6, 7, 8, 9]}, "log_metrics: argument 'values' must be a list of at most 8"),
    ("log_metrics", {"task": "a", "cost_usd": -1}, "log_metrics: argument 'cost_usd' must be at least 0.0, got -1"),
    ("thinking", {}, "thinking: argument 'thought' is required"),
    ("heartbeat", {"colour": "red"}, "heartbeat: unknown argument 'colour'"),
])
def test_bad_arguments_are_errors_naming_the_argument_and_rows_of_their_own(tools, tool, args, text):
    t = tools
    t.call("connect", "w1", {})
    e = refused(t, tool, "w1", **args)
    assert text in e.text and e.outcome == "error"
    row = tool_rows(t, tool)[-1]
    assert (row.to_state, row.agent, row.reason) == ("error", "w1", e.text)
    assert row.data["args"] == args_digest(args) and row.data["latency_ms"] >= 0


def test_a_claim_of_a_blocked_task_is_lost_saying_what_it_waits_for(tools):
    e = refused(tools, "claim", "w1", task="c")
    assert (e.outcome, e.text) == ("lost", "claim: task 'c' is not ready: it waits for a")
    assert [(r.entity_id, r.to_state) for r in tools.store.history(tools.run_id, entity="claim")] == [("c", "lost")]
    assert tool_rows(tools, "claim")[-1].to_state == "lost"


def test_a_caller_naming_another_agent_is_denied_and_nothing_changes(tools):
    t = tools
    for tool, args in [("claim", {"task": "a", "worker_id": "w1"}), ("update", {"task": "a", "status": "working", "worker_id": "w1"}),
                       ("thinking", {"thought": "hi", "agent": "coordinator"}), ("connect", {"worker_id": "w1"})]:
        e = refused(t, tool, "w2", **args)
        assert e.outcome == "denied" and "is not you" in e.text
        assert tool_rows(t, tool)[-1].to_state == "denied"
    assert t.store.get_task(t.run_id, "a").status == "pending"
    assert refused(t, "get", "stranger", task="a").outcome == "denied"
    # list_tasks's agent is a filter, not the caller: the coordinator asks what w1 may take
    assert t.call("list_tasks", "coordinator", {"agent": "w1", "ready": True})


def test_push_the_coordinator_assigns_reassigns_and_the_assignee_starts_and_gives_back(tools):
    t = tools
    assert t.call("update", "coordinator", {"task": "b", "assignee": "w1"})["task"]["status"] == "assigned"
    assert refused(t, "claim", "w2", task="b").outcome == "lost"  # assigned to w1: not for the taking
    assert [a["tasks"] for a in t.call("list_agents", "coordinator", {}) if a["id"] == "w1"] == [["b"]]
    t.call("update", "w1", {"task": "b", "status": "working"})
    e = refused(t, "update", "coordinator", task="b", assignee="w2")
    assert "working by w1; force=true takes it back first" in e.text
    t.call("update", "coordinator", {"task": "b", "assignee": "w2", "force": True, "reason": "w1 is slow"})
    b = t.store.get_task(t.run_id, "b")
    assert (b.owner, b.status, b.assigned_by) == ("w2", "assigned", "coordinator")
    assert refused(t, "update", "w1", task="b", status="completed").text.startswith("update: task 'b' is assigned by w2")
    t.call("update", "w2", {"task": "b", "status": "pending", "reason": "cannot"})
    assert t.store.get_task(t.run_id, "b").status == "pending"
    rows = tool_rows(t, "update")
    assert [r.data.get("assignee") or r.data.get("status") for r in rows] == ["w1", "working", "w2", "w2", "completed", "pending"]
    # a container assigned to a worker means "owner of this subtree" (hybrid)
    t.call("update", "coordinator", {"task": "box", "assignee": "w1"})
    assert t.store.get_task(t.run_id, "box").owner == "w1"
    assert "is a container" in refused(t, "update", "w1", task="box", status="working").text
    assert t.call("claim", "w1", {"task": "box.1"})["task"]["status"] == "working"  # inside its subtree
    assert t.store.get_task(t.run_id, "box").status == "assigned"


def test_growing_the_graph_names_its_author_and_sequential_siblings_follow_each_other(tools):
    t = tools
    one = t.call("create", "coordinator", {"title": "extra", "blocked_by": ["b"], "tags": ["py"]})
    tree = t.call("create_tree", "w1", {"parent": "c", "tree": {
        "title": "split c", "sibling_type": "sequential",
        "children": [{"title": "part 1", "points": 1}, {"title": "part 2"}, {"title": "part 3", "join_mode": "also",
                                                                             "children": [{"title": "x"}, {"title": "y"}]}]}})
    assert len(tree["created"]) == 6 and tree["root"] == tree["created"][0] and tree["count"] == 6
    listed = {x["id"]: x for x in t.call("list_tasks", "w2", {})}
    assert {one["id"], *tree["created"]} <= set(listed)
    root, p1, p2, p3, x, y = tree["created"]
    assert listed[root]["parent"] == "c" and listed["c"]["container"] and listed[p1]["parent"] == root
    assert not any(listed[i]["ready"] for i in tree["created"])  # c waits for a, and so does what splits it
    assert t.call("get", "w2", {"task": p2})["blocked_by"] == [p1]  # part 2 follows part 1
    assert t.call("get", "w2", {"task": x})["effective_blockers"] == sorted(["a", p2])  # inside part 3, after part 2
    assert t.call("get", "w2", {"task": y})["blocked_by"] == []  # part 3's children are parallel
    added = {r.entity_id: r for r in t.store.history(t.run_id, entity="task") if r.reason == "added"}
    assert added[one["id"]].agent == "coordinator" and {added[i].agent for i in tree["created"]} == {"w1"}
    assert [r.data["created"] for r in tool_rows(t) if r.entity_id in ("create", "create_tree")] == [[one["id"]], tree["created"]]
    assert t.call("link", "w2", {"from": ["a", "box.1"], "to": one["id"]})["count"] == 2
    assert t.call("unlink", "w2", {"from": "*", "to": one["id"]})["count"] == 3
    assert t.call("get", "w2", {"task": one["id"]})["blocked_by"] == []


def test_attachments_metrics_thoughts_and_heartbeats(tools):
    t = tools
    t.call("connect", "w1", {})
    t.call("attach", "w1", {"task": "a", "name": "plan", "content": "step 1", "mime": "text/markdown"})
    t.call("attach", "w2", {"task": "a", "name": "log", "content": "ok"})
    listed = t.call("attachments", "w2", {"task": "a"})
    assert [(x["name"], x["mime"], x["size"], x["by"]) for x in listed] == [("plan", "text/markdown", 6, "w1"), ("log", "text/plain", 2, "w2")]
    assert "content" not in listed[0]
    assert [x["content"] for x in t.call("attachments", "w2", {"task": "a", "content": True, "name": "plan"})] == ["step 1"]
    assert t.call("get", "w1", {"task": "a"})["attachments"] == ["plan", "log"]
    t.call("log_metrics", "w1", {"task": "a", "cost_usd": 0.5, "values": [10, 20, 3, 4, 5]})
    t.call("log_metrics", "w1", {"task": "a", "values": [1, 1, 0, 0, 0, 6, 7, 8]})
    a = t.store.get_task(t.run_id, "a")
    assert (a.tokens_in, a.tokens_out, a.tokens_cached, a.tokens_thinking, a.cost_usd) == (11, 21, 3, 4, 0.5)
    assert (a.tokens_image, a.tokens_audio, a.metric_6, a.metric_7) == (5, 6, 7, 8)  # every slot is stored
    assert tool_rows(t, "log_metrics")[0].data["metrics"] == [10, 20, 3, 4, 5, 0, 0, 0]
    usage = t.call("get", "w2", {"task": "a"})["usage"]
    assert usage == {"tokens_in": 11, "tokens_out": 21, "tokens_cached": 3, "tokens_thinking": 4, "tokens_image": 5,
                     "tokens_audio": 6, "metric_6": 7, "metric_7": 8, "cost_usd": 0.5}
    t.call("thinking", "w1", {"thought": "reading the code", "tasks": ["a"]})
    [thought] = [r for r in t.store.history(t.run_id, entity="agent", entity_id="w1") if r.data.get("action") == "thinking"]
    assert thought.data["thought"] == "reading the code"
    before = t.store.get_agent(t.run_id, "w1").lease_expires
    assert t.call("heartbeat", "w1", {})["lease_expires"] >= before
    assert refused(t, "thinking", "w2", thought="not connected").text.endswith("call connect first")
    t.call("disconnect", "w1", {})
    assert [r.data["action"] for r in t.store.history(t.run_id, entity="agent", entity_id="w1") if r.is_note] == \
        ["connected", "thinking", "disconnected"]


def test_every_call_is_one_tool_row_with_digest_latency_and_task(tools):
    t = tools
    t.call("connect", "w1", {})
    calls = [("list_agents", {}), ("list_tasks", {"status": "pending"}), ("get", {"task": "a"}), ("claim", {"task": "a"}),
             ("heartbeat", {}), ("thinking", {"thought": "x"}), ("attach", {"task": "a", "name": "n", "content": "c"}),
             ("attachments", {"task": "a"}), ("log_metrics", {"task": "a", "values": [1]}), ("create", {"title": "t"}),
             ("create_tree", {"tree": {"title": "tt"}}), ("link", {"from": "b", "to": "c"}), ("unlink", {"from": "b", "to": "c"}),
             ("update", {"task": "a", "status": "completed"}), ("disconnect", {})]
    for tool, args in calls:
        t.call(tool, "w1", args)
    rows = tool_rows(t)
    assert [r.entity_id for r in rows] == ["connect", *[c[0] for c in calls]] and sorted(set(TOOLS)) == sorted({r.entity_id for r in rows})
    for r, (tool, args) in zip(rows[1:], calls):
        assert (r.to_state, r.agent, r.from_state) == ("ok", "w1", None)
        assert r.data["args"] == args_digest(args) and isinstance(r.data["latency_ms"], float)
        assert r.data.get("task") == args.get("task")
