"""Budgets and shared back-pressure in real runs: runner processes, real git, sqlite and PostgreSQL.

A budget stops dispatch once the run's spend reaches it: nothing is claimed after the stop note,
what was dispatched finishes, the rest stays pending (not started, not failed), the run ends
``finished`` with the budget as its reason, and summary.md and the report show cost against it.
"""

from __future__ import annotations

import pytest

from agents.backpressure import ProviderState
from coordstore import open_store
from coordstore.errors import InputError
from conftest import make_store_url
from orchestrator.runs.launch import RunRequest, plan_runs, run_one
from orchestrator.views.report import write_report
from runfixtures import task, write_experiment


def run(tmp_path, exp):
    [plan] = plan_runs(RunRequest(variant="v", experiment=exp, results=tmp_path / "results"))
    outcome = run_one(*plan)
    with open_store(outcome.spec.store_url) as s:
        dump = s.dump_run(outcome.spec.run_id)
    return outcome, dump


@pytest.mark.parametrize("scheme,policy", [("sqlite", "pull"), ("postgresql", "pull"), ("sqlite", "push")])
def test_a_spent_budget_stops_dispatch_and_leaves_the_rest_pending(tmp_path, no_git_identity, scheme, policy):
    tasks = [task(f"t{i}", [f"src/f{i}.txt"], est_ms=20_000) for i in range(8)]  # ~1 s each, ~$0.02 each
    exp = write_experiment(tmp_path, tasks, [], {"policy": policy, "agents": 2},
                           store=make_store_url(scheme, tmp_path / "store"), budget={"usd": 0.03})
    out, dump = run(tmp_path, exp)
    assert out.status == "finished"
    assert dump.run.reason.startswith("stopped by budget: $") and "tasks not started" in dump.run.reason
    [stop] = [r for r in dump.history if r.entity == "run" and r.data.get("action") == "budget-stop"]
    assert stop.data["spent_usd"] >= 0.03 and stop.data["budget"] == {"usd": 0.03}
    taken_after = [r for r in dump.history if r.seq > stop.seq and ((r.entity == "claim" and r.to_state == "won")
                                                                   or (r.entity == "task" and r.to_state == "assigned"))]
    assert taken_after == []  # nothing claimed or assigned once the stop was recorded
    statuses = {t.id: t.status for t in dump.tasks}
    assert set(statuses.values()) <= {"completed", "pending"} and "pending" in statuses.values()
    assert 2 <= list(statuses.values()).count("completed") < 8
    assert all(t.attempt == 0 for t in dump.tasks if t.status == "pending")  # never started
    summary = (out.run_dir / "summary.md").read_text()
    assert "| budget | $" in summary and "of $0.03 (" in summary
    text = write_report(tmp_path / "results" / "t")[0].read_text()
    section = text.split("## Cost against budget", 1)[1].split("##", 1)[0]
    assert f"| v | {out.run_dir.name} | $" in section and "| yes, " in section


@pytest.mark.parametrize("scheme", ["sqlite", "postgresql"])
def test_shared_back_pressure_halves_the_provider_and_every_slot_is_given_back(tmp_path, no_git_identity, scheme):
    tasks = [task(f"t{i}", [f"src/f{i}.txt"], est_ms=30_000) for i in range(6)]  # ~1.5 s each
    options = {"provider": "acme", "provider_capacity": 1, "retry_after_s": 1.0}
    exp = write_experiment(tmp_path, tasks, [], {"policy": "pull", "agents": 3, "kind_options": options},
                           store=make_store_url(scheme, tmp_path / "store"), backpressure="shared")
    out, dump = run(tmp_path, exp)
    assert out.status == "finished" and all(t.status == "completed" for t in dump.tasks)
    rows = [r for r in dump.history if r.entity == "provider"]
    assert {r.entity_id for r in rows} == {"acme"}
    acquired = [(r.data["slot"], r.data["gen"]) for r in rows if r.to_state == "acquired"]
    assert len(set(acquired)) == len(acquired) >= 6  # one holder per slot generation, a slot per task at least
    state = ProviderState(limit=3, ceiling=3)
    for r in rows:
        state.apply(r)
    assert state.held == {}, state.held  # every slot given back
    events = [e for e in dump.events if e.type == "rate_limited"]
    assert state.limited == len(events) >= 1 and state.halvings >= 1  # each 429 an agent saw is one provider row


def test_budget_and_backpressure_are_checked_at_load(tmp_path):
    exp = write_experiment(tmp_path, [task("t0")], [], {"policy": "pull", "agents": 1}, budget={"usd": -1})
    with pytest.raises(InputError, match=r"execution\.budget\.usd .*greater than 0"):
        plan_runs(RunRequest(variant="v", experiment=exp, results=tmp_path / "results"))
    exp = write_experiment(tmp_path, [task("t0")], [], {"policy": "pull", "agents": 1}, budget={})
    with pytest.raises(InputError, match=r"execution\.budget .*give usd:, tokens: or both"):
        plan_runs(RunRequest(variant="v", experiment=exp, results=tmp_path / "results"))
    exp = write_experiment(tmp_path, [task("t0")], [], {"policy": "pull", "agents": 1}, backpressure="global")
    with pytest.raises(InputError, match=r"execution\.backpressure"):
        plan_runs(RunRequest(variant="v", experiment=exp, results=tmp_path / "results"))


def test_the_meter_stops_once_on_tokens_and_a_resumed_meter_knows(store, new_run, clock):
    from coordstore.models import Event
    from orchestrator.runs.budget import BudgetMeter

    run = new_run(["t1", "t2"])
    tokens = [Event(agent="w1", seq=i, ts_ms=clock(), type="tokens", task="t1",
                    data={"in": 400, "out": 100, "cached": 0, "thinking": 0, "cost_usd": 0.001}) for i in range(3)]
    store.append_events(run, tokens[:1])
    meter = BudgetMeter({"tokens": 1200}, store, run)
    assert (meter.tokens, meter.check(clock())) == (500, False)  # what the run spent before counts
    meter.add(tokens[1:])
    assert meter.check(clock()) and meter.check(clock())  # once reached, stopped; recorded once
    [note] = [r for r in store.history(run, entity="run") if r.data.get("action") == "budget-stop"]
    assert note.data["spent_tokens"] == 1500 and note.data["pending"] == 2
    again = BudgetMeter({"tokens": 1200}, store, run)  # a resumed orchestrator
    assert again.stopped and again.drained()  # nothing assigned or running: the run may end
    assert again.final_reason(None).endswith("; 2 tasks not started")
