"""Token usage per agent (usage.py) and the run's token metrics (tokenmetrics.py), by hand."""

from __future__ import annotations

import pytest

from coordstore.models import Event, Run, RunDump, Task, Transition
from orchestrator.views.metrics import METRIC_KEYS, compute_metrics
from orchestrator.views.tokenmetrics import TOKEN_METRIC_KEYS, token_metrics
from orchestrator.views.usage import billable_tokens, total_tokens, usage_by_agent

SLOTS = ("in", "out", "cached", "thinking", "image", "audio", "slot6", "slot7")


def tokens_event(agent: str, seq: int, **data) -> Event:
    return Event(agent=agent, seq=seq, ts_ms=100 + seq, type="tokens", data=data)


def log_metrics_row(seq: int, agent: str, metrics, cost=None, outcome="ok") -> Transition:
    data = {"metrics": metrics, **({"cost_usd": cost} if cost is not None else {})}
    return Transition(seq=seq, run_id="r", ts_ms=200 + seq, entity="tool", entity_id="log_metrics", to_state=outcome,
                      agent=agent, data=data)


def run_dump(events=(), history=(), tasks=()) -> RunDump:
    return RunDump(run=Run(id="r"), tasks=list(tasks), dependencies=[], history=list(history), events=list(events))


def test_usage_from_events_counts_all_8_slots_and_a_missing_one_as_0():
    d = run_dump(events=[
        tokens_event("w1", 0, **{"in": 10, "out": 2, "cached": 30, "thinking": 4, "image": 5, "audio": 6, "slot6": 7,
                                 "slot7": 8, "cost_usd": 0.25}),
        tokens_event("w1", 1, **{"in": 1, "out": 1, "cached": 0, "thinking": 0, "cost_usd": 0.5}),  # no slots 4-7
    ])
    u = usage_by_agent(d)["w1"]
    assert [u[k] for k in SLOTS] == [11, 3, 30, 4, 5, 6, 7, 8] and u["cost_usd"] == 0.75
    assert total_tokens(u) == 11 + 3 + 30 + 4 and billable_tokens(u) == 11 + 3 + 4


def test_usage_from_log_metrics_reads_slots_0_to_7_and_events_win_per_agent():
    d = run_dump(
        events=[tokens_event("w1", 0, **{"in": 100, "out": 10, "cached": 0, "thinking": 0, "cost_usd": 1.0})],
        history=[
            log_metrics_row(1, "lead", [1, 2, 3, 4, 5, 6, 7, 8], cost=0.5),
            log_metrics_row(2, "lead", [10, 0, 0, 0, 0, 60], cost=0.25),  # a short list: the rest is 0
            log_metrics_row(3, "lead", [99] * 8, outcome="error"),  # refused: nothing stored, nothing counted
            log_metrics_row(4, "w1", [50] * 8, cost=9.0),  # w1 sent tokens events: those are its usage
        ])
    by = usage_by_agent(d)
    assert [by["lead"][k] for k in SLOTS] == [11, 2, 3, 4, 5, 66, 7, 8] and by["lead"]["cost_usd"] == 0.75
    assert [by["w1"][k] for k in SLOTS] == [100, 10, 0, 0, 0, 0, 0, 0] and by["w1"]["cost_usd"] == 1.0


def test_token_metrics_by_hand():
    tasks = [Task(id="a", points=2, status="completed"), Task(id="b", points=3, status="completed"),
             Task(id="c", points=5, status="failed")]
    d = run_dump(tasks=tasks, events=[
        tokens_event("w1", 0, **{"in": 300, "out": 50, "cached": 100, "thinking": 10, "image": 40, "cost_usd": 0.3}),
        tokens_event("w2", 0, **{"in": 100, "out": 30, "cached": 300, "thinking": 10, "slot7": 2, "cost_usd": 0.2}),
    ])
    m = token_metrics(d, ["a", "b"])
    assert list(m) == list(TOKEN_METRIC_KEYS)
    # in 400, out 80, cached 400, thinking 20: billable 400 + 80 + 20 = 500, total 900
    assert m["tokens"] == {"in": 400, "out": 80, "cached": 400, "thinking": 20, "image": 40, "audio": 0, "slot6": 0,
                           "slot7": 2, "total": 900, "billable": 500}
    assert (m["billable_tokens"], m["cached_tokens"]) == (500, 400)
    assert m["cache_hit_rate"] == 0.5  # 400 cached of 800 input
    assert m["tokens_per_completed_task"] == 250.0  # the whole spend (failed c's too) over 2 results
    assert m["cost_usd"] == 0.5 and m["cost_per_completed_task"] == 0.25
    assert m["cost_per_point"] == pytest.approx(0.5 / 5)  # points of a and b only


def test_token_metrics_with_nothing_to_divide_by():
    m = token_metrics(run_dump(tasks=[Task(id="a", status="completed")]), ["a"])
    assert m["cache_hit_rate"] == 0.0 and m["tokens_per_completed_task"] == 0.0 and m["billable_tokens"] == 0
    assert m["cost_per_point"] is None  # completed work without points
    m = token_metrics(run_dump(events=[tokens_event("w", 0, **{"in": 5, "cost_usd": 0.1})]), [])
    assert m["tokens_per_completed_task"] is None and m["cost_per_completed_task"] == 0.0 and m["cost_per_point"] is None


def test_compute_metrics_carries_the_token_keys_in_order():
    assert set(TOKEN_METRIC_KEYS) <= set(METRIC_KEYS)
    m = compute_metrics(run_dump(tasks=[Task(id="a")]))
    assert list(m) == list(METRIC_KEYS)
    assert {k: m[k] for k in TOKEN_METRIC_KEYS if k != "tokens"} == {
        "cost_usd": 0.0, "cost_per_completed_task": 0.0, "billable_tokens": 0, "cached_tokens": 0, "cache_hit_rate": 0.0,
        "tokens_per_completed_task": None, "cost_per_point": None}
