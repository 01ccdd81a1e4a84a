"""Metrics of agent coordination on real stores (every backend) holding the history an agent-driven
run writes: tool rows recorded after the store verb each call stands for, claims raced by real
processes, a graph grown mid-run. Each metric is checked against what the test itself did (its
ledger) and what it recounts from the store's history."""

from __future__ import annotations

import statistics
import time
from collections import Counter

import pytest

from coordstore import open_store
from coordstore.models import Agent, Run, Transition
from orchestrator.views.coordmetrics import COORDINATION_KEYS, percentile
from orchestrator.views.metrics import METRIC_KEYS, compute_metrics

from conftest import make_graph
from storms import storm
from coordhistory import DISPATCH, R, scripted_run

def test_agent_driven_run_metrics_equal_the_ledger_and_the_recount(store_url, clock):
    with open_store(store_url, clock=clock) as store:
        s, want = scripted_run(store, clock)
        dump = store.dump_run(R)
        hist = store.history(R)
        tasks = store.list_tasks(R)
        events = store.read_events(R)
        roles = {a.id: a.role for a in store.list_agents(R)}
    m = compute_metrics(dump)
    assert list(m) == list(METRIC_KEYS) and set(COORDINATION_KEYS) <= set(m)
    assert all(t.status == "completed" for t in tasks)

    # calls: the ledger, and the tool rows of the history
    tool_rows = [r for r in hist if r.entity == "tool"]
    assert len(tool_rows) == len(s.calls) == m["coordination_calls"] == 38
    assert m["tasks_completed"] == want["completed"]
    assert m["coordination_calls_per_task"] == round(len(s.calls) / want["completed"], 3)
    assert m["coordination_calls_by_outcome"] == {"ok": 34, "error": 1, "lost": 2, "denied": 1}
    assert Counter(o for *_, o, _ in s.calls) == Counter(r.to_state for r in tool_rows)
    ms = [c[3] for c in s.calls]
    cuts = statistics.quantiles(ms, n=100, method="inclusive")  # linear interpolation, as numpy's default
    assert m["tool_latency_p50_ms"] == pytest.approx(cuts[49]) and m["tool_latency_p99_ms"] == pytest.approx(cuts[98])
    turn_ms = sum(e.data["ms"] for e in events if e.type == "step" and e.data["name"] == "turn")
    assert m["coordination_ms"] == pytest.approx(sum(ms) + sum(t for _, t in s.turns)) == pytest.approx(sum(ms) + turn_ms)

    # coordinator overhead: the dispatch roles' calls, latency + turns, tokens
    coord_calls = [c for c in s.calls if c[0] in DISPATCH]
    assert {a for a, r in roles.items() if r in ("coordinator", "lead")} == DISPATCH
    assert m["coordinator_calls"] == len(coord_calls) == sum(r.agent in DISPATCH for r in tool_rows) == 11
    busy = sum(c[3] for c in coord_calls) + sum(t for a, t in s.turns if a in DISPATCH)
    assert m["coordinator_busy_ms"] == pytest.approx(busy)
    assert busy == sum(r.data["latency_ms"] for r in tool_rows if r.agent in DISPATCH) + \
        sum(e.data["ms"] for e in events if e.agent in DISPATCH and e.type == "step")
    assert m["coordinator_tokens"] == want["coordinator_tokens"]
    # one source per agent: the lead's log_metrics usage is the run's too, the coordinator's is not twice
    assert m["tokens"]["total"] == want["tokens"] and m["cost_usd"] == want["cost_usd"]

    # assignment latency: pushed a, b and f (after its reassignment) -> their starts
    assert len(want["assign"]) == 3 and all(x > 0 for x in want["assign"])
    assert m["assignment_latency_ms"] == pytest.approx(statistics.mean(want["assign"]), abs=1e-3)
    assert m["assignment_latency_p50_ms"] == statistics.median(want["assign"])
    pushed_rows = [r for r in hist if r.entity == "task" and r.to_state == "assigned" and r.data.get("by") not in (None, r.agent)]
    assert len(pushed_rows) == 4  # f was pushed twice; its first assignment never started

    # claims: the ledger's won and lost, the store's claim rows
    claims = Counter(r.to_state for r in hist if r.entity == "claim")
    assert claims["lost"] == 1 and s.lost == 2 and claims["won"] == s.won == 8 and claims["empty"] == 1
    assert (m["claim_attempts"], m["claim_conflicts"], m["claim_empty"]) == (s.won + s.lost, s.lost, 1)
    assert m["claim_contention"] == round(s.lost / (s.won + s.lost), 4)

    # growth: who created what, what was decomposed, how long it took
    added = {r.entity_id: r.agent for r in hist if r.entity == "task" and r.reason == "added"}
    assert added == {"big-1": "w3", "big-2": "w3", "big-2a": "w3", "extra": "lead", "big-3": "lead"}
    assert m["tasks_added"] == 5 and m["decomposed_tasks"] == 1
    assert m["subtasks_per_decomposed_task"] == 4.0  # big-1, big-2, big-2a, big-3 below big; extra is no subtask
    assert m["decomposition_ms"] == want["decomposition_ms"]

    # duplicated: d was worked by w1 and w2, with two different commits
    workers = {t.id: {r.agent for r in hist if r.entity == "task" and r.entity_id == t.id and r.to_state == "working"} for t in tasks}
    assert [t for t, ws in workers.items() if len(ws) > 1] == ["d"] and m["duplicated_work"] == 1
    assert m["duplicated_commits"] == 1


def test_a_run_coordinated_by_orch_has_no_coordination_cost(store_url, clock):
    """No tool rows: zero calls, time and tokens; means without samples are None; a pushed
    assignment by orch's own coordinator still has its latency."""
    with open_store(store_url, clock=clock) as store:
        store.create_run(Run(id=R))
        store.add_graph(R, make_graph(["a", "b", "c"]))
        for aid in ("coordinator", "w1", "w2"):
            store.register_agent(R, Agent(id=aid, role="coordinator" if aid == "coordinator" else "worker"), lease_ms=60_000)
        t = store.assign(R, "a", "w1", by="coordinator")
        clock.advance(70)
        store.complete(R, "a", "w1", store.start(R, "a", "w1", t.attempt).attempt)
        for w in ("w2", "w1"):
            t = store.claim_next(R, w)
            clock.advance(5)
            store.complete(R, t.id, w, store.start(R, t.id, w, t.attempt).attempt)
        assert store.claim_next(R, "w2") is None
        m = compute_metrics(store.dump_run(R))
    assert m["tasks_completed"] == 3
    assert {k: m[k] for k in ("coordination_calls", "coordination_calls_per_task", "coordination_ms", "coordinator_calls",
                              "coordinator_busy_ms", "coordinator_tokens", "tasks_added", "decomposed_tasks",
                              "decomposition_ms", "duplicated_work", "duplicated_commits", "claim_conflicts")} == dict.fromkeys(
        ("coordination_calls", "coordination_calls_per_task", "coordination_ms", "coordinator_calls", "coordinator_busy_ms",
         "coordinator_tokens", "tasks_added", "decomposed_tasks", "decomposition_ms", "duplicated_work",
         "duplicated_commits", "claim_conflicts"), 0)
    assert m["coordination_calls_by_outcome"] == {"ok": 0, "error": 0, "lost": 0, "denied": 0}
    assert m["tool_latency_p50_ms"] is m["tool_latency_p99_ms"] is m["subtasks_per_decomposed_task"] is None
    assert m["assignment_latency_ms"] == m["assignment_latency_p50_ms"] == 70
    assert (m["claim_attempts"], m["claim_empty"], m["claim_contention"]) == (2, 1, 0.0)  # two won, one empty look


def test_percentile_interpolates_between_ranks():
    assert percentile([], 50) is None
    assert percentile([7], 99) == 7
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile(range(101), 99) == 99
    assert percentile([0, 10], 99) == pytest.approx(9.9)


# ------------------------------------------------------------------------- a real race of claims
RACERS, RACE_TASKS = 8, 40


def _racer(url, run, agent, barrier, out):
    """Claims every task in the same order as the others, through the store, recording a tool row
    per attempt as the server would; reports what it saw."""
    won = lost = 0
    with open_store(url) as store:
        barrier.wait()
        for i in range(RACE_TASKS):
            tid = f"t{i:03d}"
            t0 = time.perf_counter()
            got = store.claim(run, tid, agent)
            won, lost = won + (got is not None), lost + (got is None)
            store.record(Transition(run_id=run, ts_ms=store.clock(), entity="tool", entity_id="claim",
                                    to_state="ok" if got else "lost", agent=agent,
                                    data={"args": "0" * 16, "latency_ms": (time.perf_counter() - t0) * 1000, "task": tid}))
    out.put((agent, won, lost))


def test_lost_claims_of_a_race_between_processes_are_counted(store_url):
    with open_store(store_url) as store:
        store.create_run(Run(id=R))
        store.add_graph(R, make_graph([f"t{i:03d}" for i in range(RACE_TASKS)]))
    seen = storm(_racer, store_url, R, RACERS)
    won, lost = sum(w for w, _ in seen.values()), sum(x for _, x in seen.values())
    assert won == RACE_TASKS and lost == RACERS * RACE_TASKS - RACE_TASKS > 0
    with open_store(store_url) as store:
        m = compute_metrics(store.dump_run(R))
        lost_rows = [r for r in store.history(R, entity="claim") if r.to_state == "lost"]
    # every lost attempt is one store row and one tool row: counted once
    assert len(lost_rows) == lost and m["coordination_calls_by_outcome"]["lost"] == lost
    assert (m["claim_attempts"], m["claim_conflicts"]) == (won + lost, lost)
    assert m["claim_contention"] == round(lost / (won + lost), 4) > 0
    assert m["coordination_calls"] == RACERS * RACE_TASKS
