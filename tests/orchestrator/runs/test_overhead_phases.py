"""A real short run records its orchestration phases in its history, and the overhead metrics,
metrics.json and summary.md are computed from them."""

from __future__ import annotations

import json

import pytest

from coordstore import open_store
from coordstore.models import Agent, Run
from orchestrator.runs.launch import RunRequest, plan_runs, run_one
from orchestrator.runs.phases import Spawning
from orchestrator.views.custommetrics import run_metrics
from orchestrator.views.overhead import PHASES, phases

from runfixtures import task, write_experiment

pytestmark = pytest.mark.usefixtures("no_git_identity")


def test_a_deferred_run_records_setup_spawn_drain_and_final_merge(tmp_path):
    tasks = [task(f"t{i}", [f"f{i}.txt"], est_ms=20_000) for i in range(4)]
    exp = write_experiment(tmp_path, tasks, [("t0", "t2", "blocks")], {"policy": "pull", "agents": 2, "kind": "sim"},
                           time_scale=0.01, merge_mode="deferred")
    [plan] = plan_runs(RunRequest(variant="v", experiment=exp, results=tmp_path / "results"))
    out = run_one(*plan)
    assert out.status == "finished"
    with open_store(out.spec.store_url) as s:
        dump = s.dump_run(out.spec.run_id)

    recorded = phases(dump)
    assert [p["phase"] for p in recorded] == list(PHASES)  # each once, in the order they happen
    assert all(p["end_ms"] >= p["start_ms"] for p in recorded)
    assert recorded[-1]["branches"] == len({t.completed_by for t in dump.tasks})
    # setup ended before the runners were spawned, the drain began at the last task's end
    by = {p["phase"]: p for p in recorded}
    assert by["setup"]["end_ms"] <= by["spawn"]["start_ms"] <= by["spawn"]["end_ms"]
    last_done = max(r.ts_ms for r in dump.history if r.entity == "task" and r.to_state == "completed")
    assert by["drain"]["start_ms"] == last_done <= by["drain"]["end_ms"] <= by["final_merge"]["start_ms"]

    m = out.metrics
    assert m == json.loads(json.dumps(run_metrics(dump, out.run_dir / "experiment.yaml")))  # metrics.json is the history's
    keys = ("setup_ms", "spawn_ms", "drain_ms", "final_merge_ms")
    assert all(m[k] > 0 for k in keys), {k: m[k] for k in keys}
    assert m["orchestration_overhead_ms"] == sum(m[k] for k in keys)
    assert m["setup_ms"] == by["setup"]["end_ms"] - by["setup"]["start_ms"]
    assert 0 < m["overhead_share"] < 1
    assert m["solo_estimate_ms"] > 0 and m["speedup_vs_solo"] > 0
    assert m["merge_ms"] == 0  # deferred: no per-task merge
    summary = out.run_dir.joinpath("summary.md").read_text()
    assert "| orchestration overhead |" in summary and "| speedup vs solo / break-even task |" in summary


def test_spawning_waits_for_each_runner_to_report_in_after_its_registration(tmp_path):
    with open_store(f"sqlite:///{tmp_path / 'orch.db'}") as store:
        store.create_run(Run(id="r"), now=1000)
        spawning = Spawning(1000)
        assert spawning.waiting(store, "r", ["w1", "w2"]) == ["w1", "w2"]  # not even registered
        for a in ("w1", "w2"):
            store.register_agent("r", Agent(id=a), lease_ms=5000, now=1010)  # the orchestrator, at spawn
        assert spawning.waiting(store, "r", ["w1", "w2"]) == ["w1", "w2"]
        store.heartbeat("r", "w1", 5000, now=1300)  # w1's runner is up
        assert spawning.waiting(store, "r", ["w1", "w2"]) == ["w2"]
        store.register_agent("r", Agent(id="w1"), lease_ms=5000, now=1400)  # respawned: down again until it beats
        store.heartbeat("r", "w2", 5000, now=1450)
        assert spawning.waiting(store, "r", ["w1", "w2"]) == ["w1"]
        spawning.close(store, "r", 1500, waiting=["w1"])
        [note] = [r for r in store.history("r", entity="run") if r.is_note]
        assert note.data == {"action": "phase", "phase": "spawn", "start_ms": 1000, "end_ms": 1500, "never_up": ["w1"]}
