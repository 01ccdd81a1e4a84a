"""The run loop's forecaster on real worktrees and a real SQLite store, stepped by hand: what it
foresees from uncommitted work, what it records, and that it does no work twice."""

from __future__ import annotations

import pytest

from agents.harness import LocalRun
from coordstore.models import Event, Task, TaskGraph
from gitfixtures import git
from orchestrator.rundir import RunPaths, RunSpec
from orchestrator.runs import forecaster as fc
from orchestrator.views.forecastmetrics import forecast_metrics

pytestmark = pytest.mark.usefixtures("no_git_identity")
SHARED = "src/shared.py"


@pytest.fixture
def team(tmp_path):
    """Tasks s0, s1 (the shared file) and o (its own), working in w1, w2, w3; no runner processes."""
    graph = TaskGraph(tasks=[Task(id="s0", file_scope=[SHARED]), Task(id="s1", file_scope=[SHARED]),
                             Task(id="o", file_scope=["src/o.py"])], dependencies=[])
    run = LocalRun(tmp_path / "run", graph, files={SHARED: "# shared\n"})
    for agent, tid in (("w1", "s0"), ("w2", "s1"), ("w3", "o")):
        run.add_agent(agent)
        t = run.store.claim(run.run_id, tid, agent)
        run.store.start(run.run_id, tid, agent, t.attempt)
    spec = RunSpec(run_id=run.run_id, experiment_id="e", variant="v", policy="pull", agents=[], template="t.json",
                   repo=str(run.repo), base=run.base, store_url=run.store_url, seed=0, time_scale=1.0, timeout_s=60)
    yield run, fc.Forecaster(spec, RunPaths(run.root), run.store)
    run.close()


def notes(run) -> list:
    return [r for r in run.history() if r.entity == "run" and r.data.get("action") == fc.FORECAST_ACTION]


def test_uncommitted_edits_of_one_file_are_foreseen_as_a_pair_and_recorded_once(team):
    run, f = team
    wt = {a: run.root / "worktrees" / a for a in ("w1", "w2", "w3")}
    assert f.step(0) == 0  # nothing edited yet: nothing foreseen
    for a in ("w1", "w2"):
        (wt[a] / SHARED).write_text(f"# shared\n{a} was here\n")
    (wt["w3"] / "src/o.py").write_text("mine\n")
    assert f.step(5_000) == 0  # the forecaster looks again only where something happened: an event ...
    for a in ("w1", "w2", "w3"):  # ... as the watcher ingests it from the agent's events directory
        run.store.append_events(run.run_id, [Event(agent=a, seq=1, ts_ms=1, type="step", data={"name": "edit_file"})])
    assert f.step(10_000) == 1
    [row] = notes(run)
    assert row.data == {"action": fc.FORECAST_ACTION, "tasks": ["s0", "s1"], "attempts": [1, 1], "agents": ["w1", "w2"],
                        "against": "task", "paths": [SHARED]}
    status = {a: git(wt[a], "status", "--porcelain") for a in wt}
    assert all(status.values())  # the agents' edits are still theirs, uncommitted

    # nothing changed: no snapshot taken again, no merge-tree computed again, nothing recorded again
    taken = {a: v.at_ms for a, v in f.live.items()}
    computed = dict(f.done)
    assert f.step(20_000) == 0 and {a: v.at_ms for a, v in f.live.items()} == taken and f.done == computed
    assert len(notes(run)) == 1

    # s0 lands on the merged branch; s1's merge would now conflict with it
    git(wt["w1"], "commit", "-qam", "s0")
    git(run.repo, "update-ref", run.merged_ref, git(wt["w1"], "rev-parse", "HEAD"))
    run.store.complete(run.run_id, "s0", "w1", 1)
    f.step(30_000)
    against = [r.data for r in notes(run) if r.data["against"] == "merged"]
    assert against == [{"action": fc.FORECAST_ACTION, "tasks": ["s1"], "attempts": [1], "agents": ["w2"],
                        "against": "merged", "paths": [SHARED]}]


def test_each_round_is_capped(team, monkeypatch):
    run, f = team
    for a in ("w1", "w2", "w3"):
        (run.root / "worktrees" / a / SHARED).write_text(f"# shared\n{a}\n")
    monkeypatch.setattr(fc, "MAX_SNAPSHOTS", 1)
    monkeypatch.setattr(fc, "MAX_MERGES", 2)
    f.step(0)
    assert sum(v.snap is not None for v in f.live.values()) == 1 and len(f.done) == 1
    f.step(1_000)
    assert sum(v.snap is not None for v in f.live.values()) == 2 and len(f.done) == 3  # 2 against merged, 1 pair
    f.step(2_000)
    f.step(3_000)
    assert sum(v.snap is not None for v in f.live.values()) == 3 and len(f.done) == 6  # 3 + 3 pairs
    m = forecast_metrics(run.store.dump_run(run.run_id))
    assert m["conflict_forecasts"] == 3 and m["forecast_precision"] == 0.0 and m["forecast_recall"] is None
