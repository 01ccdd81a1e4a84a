"""task-graph-mcp's and seed 004's experiment files run as written: `orch run --experiment FILE
--variant NAME` on a fixture of each shape, end to end (the coordination server, sim agents playing
the roles the file defines, the demo repository, a sqlite store); the ids, roles and
instructions of the file are the run's agents, and every work task completes exactly once."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from cliruns import cli
from coordstore import open_store
from orchestrator.rundir import RunPaths

from fixtures_path import TEST_FIXTURES

pytestmark = pytest.mark.usefixtures("no_git_identity")

EXPERIMENTS = TEST_FIXTURES / "experiments"


@pytest.mark.parametrize("file,variant,agents", [
    ("tgmcp-variants.yaml", "push-3", {"dispatcher": "coordinator", "builder-1": "worker", "builder-2": "worker",
                                       "builder-3": "worker"}),
    ("tgmcp-runs.yaml", "swarm-2", None),
    ("tgmcp-single.yaml", "lead-and-three", None),
    ("seed004.yaml", "hierarchical-4", None),
])
def test_a_foreign_experiment_file_runs_as_written(tmp_path, capsys, monkeypatch, file, variant, agents):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "run", "--experiment", str(EXPERIMENTS / file), "--variant", variant,
                         "--results", str(tmp_path / "res"), "--runs", "1", "--time-scale", "0.0001")
    assert code == 0, err
    assert err.count("orch: note:") <= 1  # what orch does not act on is said once, if at all
    [run_json] = list((tmp_path / "res").glob("*/*/*/run.json"))
    paths = RunPaths(run_json.parent)
    spec = paths.read_spec()
    assert spec.coordination == "agents"
    if agents is not None:
        assert {a.id: a.role for a in spec.agents} == agents
        assert all(a.instruction for a in spec.agents)
    with open_store(spec.store_url) as s:
        dump = s.dump_run(spec.run_id)
    parents = {d.from_id for d in dump.dependencies if d.type == "contains"}
    work = {t.id for t in dump.tasks if t.id not in parents}
    done = Counter(r.entity_id for r in dump.history if r.entity == "task" and r.to_state == "completed")
    assert {t: done[t] for t in work} == {t: 1 for t in work}
    callers = {r.agent for r in dump.history if r.entity == "tool"}
    assert callers == {a.id for a in spec.agents}  # every agent of the file coordinated through the tools
    assert json.loads(paths.metrics.read_text())["completion_rate"] == 1.0
