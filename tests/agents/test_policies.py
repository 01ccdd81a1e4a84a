"""Distribution policies, each checked FROM THE HISTORY of a real run: real runner processes,
real git worktrees, a real SQLite store, no orchestrator (agents.harness.LocalRun)."""

from __future__ import annotations

import time

import pytest

from agents.harness import LocalRun
from agents.policies import PolicyEnv, make_policy
from coordstore import BACKENDS
from coordstore.errors import InputError
from coordstore.models import Dependency, Run, Task, TaskGraph

from conftest import make_store_url
from contract_helpers import chain_errors

SCALE = 0.003  # one estimated minute runs in 180 ms


pytestmark = pytest.mark.usefixtures("no_git_identity")


def graph(tasks: list[dict], deps: list[tuple[str, str, str]] = ()) -> TaskGraph:
    return TaskGraph(tasks=[Task(**{"time_estimate_ms": 60_000, "title": t["id"].upper(), **t}) for t in tasks],
                     dependencies=[Dependency(from_id=a, type=k, to_id=b) for a, k, b in deps])


def finished(run: LocalRun, timeout: float = 40.0) -> dict:
    rcs = run.wait(timeout)
    logs = {a: run.log(a)[-800:] for a in rcs}
    assert all(rc == 0 for rc in rcs.values()), (rcs, logs)
    return rcs


SIX = graph([{"id": f"t{i}", "file_scope": [f"src/m{i % 2}.py"]} for i in range(6)],
            [("t0", "blocks", "t2"), ("t2", "blocks", "t4")])


def test_pull_workers_claim_for_themselves_with_no_coordinator(local):
    run = local(SIX)
    for w in ("w1", "w2"):
        run.add_agent(w, policy="pull")
    run.start_all()
    finished(run)
    tasks = run.tasks()
    assert {t.status for t in tasks.values()} == {"completed"}
    assert {a.role for a in run.store.list_agents(run.run_id)} == {"worker"}
    hist = run.history()
    for t in tasks.values():
        assert t.assigned_by == t.owner == t.completed_by, t
        assigned = [r for r in hist if r.entity == "task" and r.entity_id == t.id and r.to_state == "assigned"]
        assert [r.data["by"] for r in assigned] == [r.agent for r in assigned] == [t.owner]
    won = [r for r in hist if r.entity == "claim" and r.to_state == "won"]
    assert sorted(r.entity_id for r in won) == sorted(tasks)
    # dependents ran on their blockers' work: t4's commit holds t0's and t2's edits of src/m0.py
    done = {r.entity_id: r for r in hist if r.entity == "task" and r.to_state == "completed"}
    text = run.text_at(done["t4"].data["commit"], "src/m0.py")
    assert "task t0: T0" in text and "task t2: T2" in text and "task t4: T4" in text
    merged = run.merged_text("src/m0.py") + run.merged_text("src/m1.py")
    assert all(f"task {t}: {t.upper()}" in merged for t in tasks)


def test_push_coordinator_assigns_every_task_and_workers_never_claim(local):
    run = local(SIX)
    run.add_agent("coordinator", role="coordinator", policy="push", policy_options={"dispatch_latency_ms": 5})
    for w in ("w1", "w2"):
        run.add_agent(w, policy="push")
    run.start_all()
    finished(run)
    tasks = run.tasks()
    hist = run.history()
    assert {t.status for t in tasks.values()} == {"completed"}
    assert [r for r in hist if r.entity == "claim"] == []  # nobody claims under push
    for t in tasks.values():
        assert t.assigned_by == "coordinator" and t.completed_by in ("w1", "w2"), t
    assigns = [r for r in hist if r.entity == "task" and r.to_state == "assigned"]
    assert {r.data["by"] for r in assigns} == {"coordinator"}
    assert not any(r.agent == "coordinator" for r in hist if r.entity == "task")  # it executes nothing
    # a worker never holds two tasks at once: every assignment went to an idle worker
    holding: dict[str, str] = {}
    for r in hist:
        if r.entity == "task" and r.to_state == "assigned":
            assert r.agent not in holding, f"{r.agent} got {r.entity_id} while holding {holding.get(r.agent)}"
            holding[r.agent] = r.entity_id
        elif r.entity == "task" and r.to_state in ("completed", "failed") and holding.get(r.agent) == r.entity_id:
            del holding[r.agent]


HYBRID = graph(
    [{"id": "A", "time_estimate_ms": 0}, {"id": "a1"}, {"id": "a2"}, {"id": "a3"},
     {"id": "B", "time_estimate_ms": 0}, {"id": "b1"}, {"id": "b2"}, {"id": "x"}],
    [("A", "contains", "a1"), ("A", "contains", "a2"), ("A", "contains", "a3"), ("a1", "blocks", "a2"),
     ("B", "contains", "b1"), ("B", "contains", "b2")],
)


def test_hybrid_lead_assigns_only_containers_and_workers_pull_inside(local):
    run = local(HYBRID)
    run.add_agent("lead", role="lead", policy="hybrid", policy_options={"settle_ms": 50})
    for w in ("w1", "w2"):
        run.add_agent(w, policy="hybrid")
    run.start_all()
    finished(run)
    tasks = run.tasks()
    hist = run.history()
    assert {t.status for t in tasks.values()} == {"completed"}
    by_lead = [r for r in hist if r.entity == "task" and r.to_state == "assigned" and r.data.get("by") == "lead"]
    assert sorted(r.entity_id for r in by_lead) == ["A", "B"]  # containers only, each once
    # balanced by estimated work: the heavier A to the first worker, B to the other one
    assert {r.entity_id: r.agent for r in by_lead} == {"A": "w1", "B": "w2"}
    owner_of = {r.entity_id: r.agent for r in by_lead}
    for leaf in ("a1", "a2", "a3", "b1", "b2", "x"):
        worker = tasks[leaf].completed_by
        assert tasks[leaf].assigned_by == worker in ("w1", "w2"), tasks[leaf]
        steals = [e for e in run.events(worker) if e["task"] == leaf and e["data"].get("steal")]
        inside = owner_of.get(leaf[0].upper()) == worker  # x belongs to no container
        assert bool(steals) == (not inside), (leaf, worker)  # outside its own subtree = a steal, logged
    assert not any(r.agent == "lead" for r in hist if r.entity == "claim")


RELAY = graph(
    [{"id": f"{p}{c}", "needed_tags": [tag], "file_scope": [f"src/c{c}.py"]}
     for c in (1, 2) for p, tag in (("d", "designer"), ("i", "implementer"), ("t", "tester"))],
    [(f"d{c}", "blocks", f"i{c}") for c in (1, 2)] + [(f"i{c}", "blocks", f"t{c}") for c in (1, 2)],
)
SPECIALISTS = {"sd": ["designer"], "si": ["implementer"], "st": ["tester"]}


def test_relay_routes_by_needed_tags_and_records_handoffs(local):
    run = local(RELAY)
    for a, tags in SPECIALISTS.items():
        run.add_agent(a, role="specialist", tags=tags, policy="relay")
    run.start_all()
    finished(run)
    tasks = run.tasks()
    hist = run.history()
    assert {t.status for t in tasks.values()} == {"completed"}
    for t in tasks.values():
        assert set(t.needed_tags) <= set(SPECIALISTS[t.completed_by]), t
    for r in hist:  # no claim, won or lost, by an agent lacking a needed tag
        if r.entity == "claim" and r.entity_id:
            assert set(tasks[r.entity_id].needed_tags) <= set(SPECIALISTS[r.agent]), r
    handoffs = {(r.entity_id, r.data["from"], r.agent) for r in hist if r.entity == "task" and r.data.get("action") == "handoff"}
    assert handoffs == {("i1", "sd", "si"), ("i2", "sd", "si"), ("t1", "si", "st"), ("t2", "si", "st")}
    assert chain_errors(hist) == []  # a handoff is a note on the task's status, not a state of its own


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_solo_does_everything_in_dependency_order(local, backend, tmp_path):
    g = graph([{"id": f"s{i}", "time_estimate_ms": 20_000} for i in range(5)],
              [("s0", "blocks", "s1"), ("s1", "blocks", "s3"), ("s2", "blocks", "s3"), ("s4", "follows", "s3")])
    run = local(g, store=make_store_url(backend, tmp_path / backend))  # the runner speaks only the store contract
    run.add_agent("solo", role="solo", policy="solo")
    run.start_all()
    finished(run)
    tasks = run.tasks()
    assert {t.completed_by for t in tasks.values()} == {"solo"}
    seq = {}
    for r in run.history(entity="task"):
        seq.setdefault((r.entity_id, r.to_state), r.seq)
    for blocker, blocked in [("s0", "s1"), ("s1", "s3"), ("s2", "s3"), ("s3", "s4")]:
        assert seq[(blocker, "completed")] < seq[(blocked, "working")]


def test_critical_path_order_starts_the_long_chain_first(local):
    g = graph([{"id": f"short{i}", "time_estimate_ms": 5_000} for i in range(3)]
              + [{"id": f"chain{i}", "time_estimate_ms": 20_000} for i in range(3)],
              [("chain0", "blocks", "chain1"), ("chain1", "blocks", "chain2")])
    runs = {}
    for order in ("critical-path", "fifo"):
        runs[order] = local(g, name=order)
        runs[order].add_agent("w1", policy="pull", policy_options={"order": order})
        runs[order].start_all()
    for order, run in runs.items():
        finished(run)
        started = [r.entity_id for r in run.history(entity="task") if r.to_state == "working"]
        assert len(started) == 6
        if order == "critical-path":
            assert started[0] == "chain0", started
        else:
            assert started[0] == "short0", started  # the contrast: template order


def test_policy_selection_refuses_nonsense(tmp_path):
    env = PolicyEnv(store=None, run_id="r", agent_id="c", role="coordinator", tags=None, options={}, pulse=None, events=None)
    with pytest.raises(InputError, match="role coordinator only exists under policy push"):
        make_policy("pull", env)
    env.role = "worker"
    with pytest.raises(InputError, match="unknown; known: pull"):
        make_policy("swarm", env)
    env.options = {"ordr": "fifo"}
    with pytest.raises(InputError, match=r"unknown policy_options\.ordr"):
        make_policy("pull", env)
    env.options = {"order": "random"}
    with pytest.raises(InputError, match=r"policy_options\.order='random'"):
        make_policy("pull", env)
    env.options = {"dispatch_latency_ms": -1}
    env.role = "coordinator"
    with pytest.raises(InputError, match=r"dispatch_latency_ms=-1"):
        make_policy("push", env)


def test_push_reassigns_a_task_the_supervisor_requeued(local):
    g = graph([{"id": "job", "time_estimate_ms": 300_000, "file_scope": ["src/m.py"]}])
    run = local(g)
    run.add_agent("coordinator", role="coordinator", policy="push")
    run.add_agent("w1", policy="push")
    run.start_all()
    deadline = time.monotonic() + 20
    while run.tasks()["job"].status != "working":
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.02)
    run.store.requeue(run.run_id, "job", reason="stalled", by="supervisor")
    finished(run)
    t = run.tasks()["job"]
    assert (t.status, t.attempt, t.assigned_by) == ("completed", 2, "coordinator")
    assigns = [r for r in run.history(entity="task", entity_id="job") if r.to_state == "assigned"]
    assert [(r.agent, r.data["by"]) for r in assigns] == [("w1", "coordinator")] * 2
    assert [r for r in run.history() if r.entity == "claim"] == []


def test_hybrid_units_split_a_single_root_container():
    from agents.policies.base import hybrid_units
    from coordstore.graph import validate

    g = graph([{"id": i} for i in ("root", "A", "B", "a1", "b1", "lone")],
              [("root", "contains", "A"), ("root", "contains", "B"), ("A", "contains", "a1"), ("B", "contains", "b1"),
               ("root", "contains", "lone")])
    assert hybrid_units(validate(g)) == ["A", "B"]
    assert hybrid_units(validate(HYBRID)) == ["A", "B"]
    assert hybrid_units(validate(SIX)) == []  # no containers: workers just pull


def test_push_coordinator_avoids_the_worker_a_task_was_taken_from(tmp_path):
    """A requeued task goes to another idle worker that fits, not back to the one it failed on."""
    from agents.policies.dispatch import PushCoordinator
    from agents.events import EventWriter
    from agents.policies import PolicyEnv
    from agents.pulse import Pulse
    from coordstore import open_store
    from coordstore.models import Agent as AgentRec

    with open_store(f"sqlite://{tmp_path / 'o.db'}") as store:
        store.create_run(Run(id="r"))
        store.add_graph("r", TaskGraph(tasks=[Task(id="t", time_estimate_ms=1)]))
        for w in ("w1", "w2"):
            store.register_agent("r", AgentRec(id=w, role="worker"), lease_ms=60_000)
        store.register_agent("r", AgentRec(id="coordinator", role="coordinator"), lease_ms=60_000)
        t = store.assign("r", "t", "w1", by="coordinator")
        store.start("r", "t", "w1", t.attempt)
        store.requeue("r", "t", reason="dead", by="supervisor")
        events = EventWriter(tmp_path / "ev", "coordinator")
        env = PolicyEnv(store, "r", "coordinator", "coordinator", None, {}, Pulse(store, "r", "coordinator", events, 1000, 60_000), events)
        coord = PushCoordinator(env)
        coord.last_given = {"w1": 0, "w2": 5}  # w1 waited longest: fairness alone would pick it again
        coord.next()
        assert store.get_task("r", "t").owner == "w2"


class RivalAfterLook:
    """The agent's real store, with a rival agent (its own store) claiming ``target`` right after
    each look: the race a pulling agent loses between ``ready_tasks`` and ``claim_next``, made
    certain instead of left to timing."""

    def __init__(self, store, rival_store, run_id: str, target: str):
        self.store, self.rival, self.run_id, self.target = store, rival_store, run_id, target

    def ready_tasks(self, *args, **kwargs):
        seen = self.store.ready_tasks(*args, **kwargs)
        self.rival.claim(self.run_id, self.target, "rival")
        return seen

    def best_ready(self, *args, **kwargs):  # the look of a pull outside any container
        seen = self.store.best_ready(*args, **kwargs)
        self.rival.claim(self.run_id, self.target, "rival")
        return seen

    def __getattr__(self, name):
        return getattr(self.store, name)


@pytest.mark.parametrize("policy", ["pull", "hybrid"])
def test_pulling_policies_name_what_they_saw_so_a_lost_race_is_recorded(store_url, policy):
    from coordstore import open_store

    with open_store(store_url) as store, open_store(store_url) as rival:
        store.create_run(Run(id="r"))
        store.add_graph("r", graph([{"id": "P"}, {"id": "p1", "priority": 9}, {"id": "p2"}, {"id": "out", "priority": 9}],
                                   [("P", "contains", "p1"), ("P", "contains", "p2")]))
        store.assign("r", "P", "w1", by="lead")  # hybrid: w1 pulls inside P first
        env = PolicyEnv(RivalAfterLook(store, rival, "r", "p1"), "r", "w1", "worker", None, {}, None, None)
        got = make_policy(policy, env).next()
        claims = [(r.entity_id, r.to_state, r.agent, r.data.get("took")) for r in store.history("r", entity="claim")]
    seen, took = "p1", "p2" if policy == "hybrid" else "out"  # hybrid looks inside its container
    assert got.id == took
    assert claims == [(seen, "won", "rival", None), (seen, "lost", "w1", took), (took, "won", "w1", None)]
