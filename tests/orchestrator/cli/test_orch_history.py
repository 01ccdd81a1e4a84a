"""`orch history` on a real finished run: filters, JSON, usage errors, and `--summary` (time per
status and per agent) recounted from the raw rows; the orchestration phases in the run's history.
"""

from __future__ import annotations

import json
import re

from orchestrator.rundir import RunPaths

from cliruns import cli, env, finished_run, results, store_of  # noqa: F401 (module fixtures)

def test_history_filters_and_json(capsys, finished_run):
    spec, store = store_of(finished_run)
    with store:
        rows = store.history(spec.run_id)
        task = store.list_tasks(spec.run_id)[0]
    code, out, _ = cli(capsys, "history", finished_run, "--json")
    assert code == 0
    v = json.loads(out)
    assert v["version"] == 1 and len(v["transitions"]) == len(rows)
    assert [t["seq"] for t in v["transitions"]] == [r.seq for r in rows]
    assert v["transitions"][0]["offset_ms"] == 0

    code, out, _ = cli(capsys, "history", finished_run, "--task", task.id, "--json")
    mine = json.loads(out)["transitions"]
    assert {t["id"] for t in mine} == {task.id}
    assert [t["to"] for t in mine if t["entity"] == "task"][-1] == "completed"
    assert mine[0]["from"] is None and mine[0]["to"] == "pending"

    code, out, _ = cli(capsys, "history", finished_run, "--task", task.id)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == len(mine)
    assert re.search(rf"\s{re.escape(task.id)}\s+pending -> assigned\s+{task.completed_by}\b", out)

    code, out, _ = cli(capsys, "history", finished_run, "--agent", task.completed_by, "--entity", "task", "--json")
    by_agent = json.loads(out)["transitions"]
    assert by_agent and all(t["agent"] == task.completed_by and t["entity"] == "task" for t in by_agent)


def test_history_errors(capsys, finished_run):  # usage errors: a name that names nothing, exclusive options
    code, out, err = cli(capsys, "history", finished_run, "--task", "no-such-task")
    assert code == 2 and out == "" and "no-such-task" in err and err.count("\n") == 1
    code, _, err = cli(capsys, "history", finished_run, "--task", "a", "--agent", "w1")
    assert code == 2 and "--task and --agent" in err
    code, _, err = cli(capsys, "history", finished_run, "--entity", "bogus")
    assert code == 2 and "bogus" in err


def test_history_summary_adds_up_each_status_and_owner(capsys, finished_run):
    spec, store = store_of(finished_run)
    with store:
        rows = [r for r in store.history(spec.run_id, entity="task") if not r.is_note]
        tasks = store.list_tasks(spec.run_id)
    metrics = json.loads(RunPaths(finished_run).metrics.read_text())
    code, out, _ = cli(capsys, "history", finished_run, "--summary", "--json")
    assert code == 0
    v = json.loads(out)
    assert v["version"] == 1 and v["status"] == "finished" and v["filter"] == {"task": None, "agent": None}
    assert (v["time_in_status_ms"], v["time_by_agent_ms"]) == (metrics["time_in_status_ms"], metrics["time_by_agent_ms"])
    # recounted from the rows: every row's status lasts until the task's next row (all tasks ended)
    spent: dict = {}
    owned: dict = {}
    for t in tasks:
        mine = [r for r in rows if r.entity_id == t.id]
        for r, nxt in zip(mine, mine[1:]):
            spent[r.to_state] = spent.get(r.to_state, 0) + nxt.ts_ms - r.ts_ms
            if r.to_state in ("assigned", "working"):
                owned.setdefault(r.agent, {}).setdefault(r.to_state, 0)
                owned[r.agent][r.to_state] += nxt.ts_ms - r.ts_ms
    assert {k: ms for k, ms in v["time_in_status_ms"].items() if ms} == {k: ms for k, ms in spent.items() if ms}
    assert v["time_by_agent_ms"] == {a: {"assigned": 0, "working": 0, **by} for a, by in sorted(owned.items())}
    assert v["time_in_status_ms"]["working"] > 0 and [t["id"] for t in v["tasks"]] == [t.id for t in tasks]

    task = tasks[0]
    code, out, _ = cli(capsys, "history", finished_run, "--summary", "--task", task.id, "--json")
    one = json.loads(out)
    [shown] = one["tasks"]
    assert shown["id"] == task.id and one["time_in_status_ms"] == shown["time_in_status_ms"]
    start, end = (next(r.ts_ms for r in rows if r.entity_id == task.id and r.to_state == s) for s in ("working", "completed"))
    assert shown["time_in_status_ms"]["working"] == end - start
    assert list(shown["time_by_agent_ms"]) == [task.completed_by]

    code, out, _ = cli(capsys, "history", finished_run, "--summary", "--agent", task.completed_by, "--json")
    theirs = json.loads(out)
    assert list(theirs["time_by_agent_ms"]) == [task.completed_by]
    assert theirs["time_by_agent_ms"][task.completed_by] == v["time_by_agent_ms"][task.completed_by]
    assert theirs["time_in_status_ms"]["pending"] == 0 and task.id in [t["id"] for t in theirs["tasks"]]

    code, out, _ = cli(capsys, "history", finished_run, "--summary")
    assert code == 0
    assert re.search(r"^working\s+\d+\.\d\ds\s+\d+%$", out, re.M), out
    assert re.search(rf"^{re.escape(task.id)}\s+completed\s", out, re.M) and task.completed_by in out
    code, out, _ = cli(capsys, "history", finished_run, "--summary", "--task", task.id)
    assert code == 0 and f"task {task.id}" in out.splitlines()[0]

    code, out, err = cli(capsys, "history", finished_run, "--summary", "--entity", "task")
    assert code == 2 and out == "" and "--summary and --entity" in err and err.count("\n") == 1
    code, _, err = cli(capsys, "history", finished_run, "--summary", "--task", task.id, "--agent", "w1")
    assert code == 2 and "--task and --agent" in err


def test_an_immediate_run_records_its_phases_and_no_final_merge(capsys, finished_run):
    metrics = json.loads(RunPaths(finished_run).metrics.read_text())
    assert metrics["setup_ms"] > 0 and metrics["spawn_ms"] > 0 and metrics["drain_ms"] > 0
    assert metrics["final_merge_ms"] == 0 and metrics["merge_ms"] > 0  # each task merged as it completed
    code, out, _ = cli(capsys, "history", finished_run, "--entity", "run")
    assert code == 0
    assert [m.group(1) for m in re.finditer(r"phase (\w+) \d", out)] == ["setup", "spawn", "drain"]
