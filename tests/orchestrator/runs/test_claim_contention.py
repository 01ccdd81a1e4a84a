"""Claim contention of a real pull run: eight sim agents pulling a wide graph of equal tasks lose
races to each other, and the run's ``claim_contention`` is what the history's claim rows say, on
every store backend.

The graph is waves of equal tasks, each wave behind a sync task blocked by the wave before: while
one agent does a sync task the seven others poll an empty queue, and when it completes they all
look within one poll period and want the same best task. One release loses a race about every
other time; twelve make a run without one very unlikely (free-flowing equal tasks lost 0 to 4 per
run). Nothing in the store or the agents is slowed or faked."""

from __future__ import annotations

from collections import Counter

import pytest

from coordstore import open_store
from gitfixtures import make_repo
from orchestrator.runs.launch import RunRequest, plan_runs, run_one
from runfixtures import task, write_experiment

pytestmark = pytest.mark.usefixtures("no_git_identity")

AGENTS, WAVES, WIDTH = 8, 12, 8  # a wave as wide as the team: every sync releases all of it at once


def waves() -> tuple[list[dict], list[tuple[str, str, str]]]:
    """WAVES waves of WIDTH equal tasks; sync{k} waits for wave k and gates wave k + 1."""
    tasks, deps = [], []
    for k in range(WAVES):
        wave = [task(f"w{k}-{i}", [f"src/w{k}-{i}.txt"], est_ms=1000) for i in range(WIDTH)]
        tasks += wave
        if k:
            deps += [(f"sync{k - 1}", t["id"], "blocks") for t in wave]
        if k < WAVES - 1:
            tasks.append(task(f"sync{k}", [f"src/sync{k}.txt"], est_ms=1000))
            deps += [(t["id"], f"sync{k}", "blocks") for t in wave]
    return tasks, deps


@pytest.mark.parametrize("scheme", ["sqlite", "file"])
def test_pull_8_on_a_wide_graph_counts_its_lost_races(tmp_path, scheme):
    repo = make_repo(tmp_path / "repo", {"README": "x\n"})
    tasks, deps = waves()
    exp = write_experiment(tmp_path, tasks, deps, {"policy": "pull", "agents": AGENTS, "kind": "sim"},
                           time_scale=0.01, store=scheme)
    [plan] = plan_runs(RunRequest(variant="v", experiment=exp, repo=repo, results=tmp_path / "results"))
    out = run_one(*plan)
    assert out.status == "finished"
    with open_store(out.spec.store_url) as s:
        dump = s.dump_run(out.spec.run_id)
    assert {t.status for t in dump.tasks} == {"completed"}

    claims = [r for r in dump.history if r.entity == "claim"]
    counted = Counter(r.to_state for r in claims)
    won, lost = counted["won"], counted["lost"]
    assert won == len(tasks)  # each task claimed once: pulled, never pushed
    assert Counter(r.entity_id for r in claims if r.to_state == "won") == dict.fromkeys(
        (t["id"] for t in tasks), 1)
    assert lost > 0, "eight agents pulling one queue never lost a race"
    m = out.metrics
    assert m["claim_attempts"] == won + lost and m["claim_conflicts"] == lost
    assert m["claim_contention"] == round(lost / (won + lost), 4) > 0
    # every lost race names a task some other agent had taken (the policy passes what it saw)
    owner = {r.entity_id: r.agent for r in claims if r.to_state == "won"}
    assert all(owner[r.entity_id] != r.agent and r.data["status"] != "pending" for r in claims if r.to_state == "lost")
