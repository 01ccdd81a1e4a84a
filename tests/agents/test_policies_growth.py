"""Policies see a graph that grows mid-run (agents add tasks and edges through the coordination
tools) without a restart: a real SQLite store, policies stepped by hand, the store's own verbs."""

from __future__ import annotations

import pytest

from agents.events import EventWriter
from agents.policies import PolicyEnv, make_policy
from agents.pulse import Pulse
from coordstore import open_store
from coordstore.models import Agent, Dependency, Run, Task, TaskGraph


@pytest.fixture
def store(tmp_path):
    with open_store(f"sqlite://{tmp_path / 'o.db'}") as s:
        s.create_run(Run(id="r"))
        s.add_graph("r", TaskGraph(tasks=[Task(id="a", time_estimate_ms=1)]))
        yield s


def env_of(store, tmp_path, agent: str, role: str, policy: str) -> tuple[PolicyEnv, object]:
    store.register_agent("r", Agent(id=agent, role=role), lease_ms=60_000)
    events = EventWriter(tmp_path / "ev" / agent, agent)
    env = PolicyEnv(store, "r", agent, role, None, {}, Pulse(store, "r", agent, events, 1000, 60_000), events)
    return env, make_policy(policy, env)


def test_the_index_follows_new_tasks_links_and_unlinks(store, tmp_path):
    env, _ = env_of(store, tmp_path, "w1", "worker", "pull")
    assert env.index().effective_blockers("a") == set()
    store.add_tasks("r", [Task(id="b"), Task(id="c")], parent="a", by="w1")  # a leaf becomes a container
    ix = env.index()
    assert ix.is_container("a") and set(ix.descendants("a")) == {"b", "c"}
    store.link("r", "b", "c", "blocks", by="w1")
    assert env.index().effective_blockers("c") == {"b"}
    store.unlink("r", "b", "c", "blocks", by="w1")
    assert env.index().effective_blockers("c") == set()
    store.add_tasks("r", [Task(id="lone")], by="w1")  # no edge at all: known once asked about
    assert "lone" in env.index("lone").tasks
    tasks, ix = env.graph()
    assert set(tasks) == set(ix.tasks) == {"a", "b", "c", "lone"}


def test_push_coordinator_assigns_a_task_added_after_it_started(store, tmp_path):
    coord_env, coord = env_of(store, tmp_path, "coordinator", "coordinator", "push")
    _, worker = env_of(store, tmp_path, "w1", "worker", "push")
    coord.next()
    first = worker.next()
    assert first.id == "a"
    store.start("r", "a", "w1", first.attempt)
    store.complete("r", "a", "w1", first.attempt)
    store.add_tasks("r", [Task(id="late", time_estimate_ms=1)], by="w1")
    coord.next()
    assert store.get_task("r", "late").owner == "w1"
    assert worker.next().id == "late"


def test_hybrid_worker_pulls_inside_a_container_that_grew(store, tmp_path):
    store.add_tasks("r", [Task(id="unit"), ], by="lead")
    store.add_tasks("r", [Task(id="u1", time_estimate_ms=1)], parent="unit", by="lead")
    _, lead = env_of(store, tmp_path, "lead", "lead", "hybrid")
    _, worker = env_of(store, tmp_path, "w1", "worker", "hybrid")
    lead.settled = True
    lead.next()
    assert store.get_task("r", "unit").owner == "w1"
    store.add_tasks("r", [Task(id="u2", time_estimate_ms=1)], parent="unit", by="w1")  # grown inside its unit
    got = {worker.next().id, worker.next().id}
    assert got == {"u1", "u2"}
