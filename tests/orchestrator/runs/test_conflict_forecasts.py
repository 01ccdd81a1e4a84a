"""Conflicts foreseen, through the real CLI: a template whose parallel tasks append to one file,
on a repository where such appends really conflict, run by sim agents with the same seed. Without
``avoid_conflicts`` the merges conflict and the live forecasts foresaw them (precision and recall
printed); with it, nothing conflicts. ``orch template lint`` warns about the overlap beforehand."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from coordstore import open_store
from gitfixtures import make_repo
from cliruns import cli as orch
from runfixtures import task

pytestmark = pytest.mark.usefixtures("no_git_identity")
SHARED = "src/shared.py"


def experiment(tmp_path: Path) -> Path:
    """Three tasks on the shared file, two on files of their own, no dependencies; three agents.
    A task runs ~6 s: long enough for the loop's forecast rounds (one a second) to see two of
    them editing the shared file at once."""
    tasks = [task(f"s{i}", [SHARED], est_ms=120_000) for i in range(3)] + [task(f"o{i}", [f"src/o{i}.py"], est_ms=120_000) for i in range(2)]
    tpl = tmp_path / "graph.json"
    tpl.write_text(json.dumps({"format": "orch-graph", "version": 1, "tasks": tasks, "dependencies": []}))
    agents = {"policy": "pull", "agents": 3, "kind": "sim", "kind_options": {"step_every_s": 5}}  # a step every 0.25 s
    exp = {"experiment": {"id": "conflicts"}, "template": str(tpl),
           "execution": {"runs": 1, "seed": 7, "time_scale": 0.05, "timeout_s": 120},
           "variants": [{"name": "plain", **agents}, {"name": "avoid", **agents, "policy_options": {"avoid_conflicts": True}}]}
    f = tmp_path / "exp.yaml"
    f.write_text(yaml.safe_dump(exp))
    return f


def history(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "transitions.jsonl").read_text().splitlines()]


def test_avoid_conflicts_brings_merge_conflicts_to_zero_and_forecasts_are_scored(tmp_path, capsys):
    exp = experiment(tmp_path)
    code, out, err = orch(capsys, "template", "lint", str(tmp_path / "graph.json"))
    assert code == 0, err
    overlaps = [ln for ln in out.splitlines() if ln.startswith("warning: scope-overlap:")]
    assert len(overlaps) == 3 and all(SHARED in ln for ln in overlaps)  # s0-s1, s0-s2, s1-s2; the o tasks overlap nothing

    # the shared file has no orch-slot lines: parallel appends to it conflict when merged
    repo = make_repo(tmp_path / "repo", {SHARED: "# shared module\n", "README.md": "x\n"})
    runs = {}
    for variant in ("plain", "avoid"):
        code, out, err = orch(capsys, "run", "--experiment", str(exp), "--variant", variant, "--repo", str(repo),
                              "--results", str(tmp_path / "results"))
        assert code == 0, err
        line = next(ln for ln in out.splitlines() if ln.startswith("merge conflicts:"))
        run_dir = Path(next(ln for ln in out.splitlines() if ln.startswith("results: ")).removeprefix("results: "))
        runs[variant] = (line, json.loads((run_dir / "metrics.json").read_text()), run_dir)

    line, m, run_dir = runs["plain"]
    assert m["tasks_completed"] == 5 and m["merge_conflicts"] > 0
    assert m["conflict_forecasts"] > 0 and m["forecast_precision"] > 0 and m["forecast_recall"] > 0
    assert re.fullmatch(rf"merge conflicts: {m['merge_conflicts']}; forecasts: {m['conflict_forecasts']} "
                        rf"\(precision \d\.\d\d, recall \d\.\d\d\); tasks held back: 0", line), line
    notes = [r for r in history(run_dir) if r["entity"] == "run" and r["data"].get("action") == "conflict-forecast"]
    assert all(r["data"]["paths"] == [SHARED] for r in notes)
    # two s tasks editing the shared file at once were seen colliding (an o task that runs on a
    # branch holding a conflicted s commit is foreseen too: its merge brings that commit along)
    assert any(r["data"]["against"] == "task" and set(r["data"]["tasks"]) <= {"s0", "s1", "s2"} for r in notes)
    assert "| conflict forecasts |" in (run_dir / "summary.md").read_text()

    line, m, run_dir = runs["avoid"]
    assert m["tasks_completed"] == 5 and m["merge_conflicts"] == 0 and m["tasks_held_back"] > 0
    assert m["forecast_recall"] is None  # no conflict to foresee
    assert line.startswith("merge conflicts: 0; forecasts: ")
    with open_store(f"sqlite://{run_dir / 'orch.db'}") as s:  # every shared task's work is in the merged branch
        assert s.get_run(run_dir.name).status == "finished"
