"""Best-of rounds on every backend: many processes race for a round's slots behind a barrier;
exactly N - 1 enter, each slot once (the store's once-only note keys are the lock)."""

from __future__ import annotations

from coordstore import open_store
from coordstore.models import Agent, Run

from agents.policies import PolicyEnv
from agents.policies.bestof import BestOf, read_round
from conftest import make_graph
from storms import storm

PROCS = 8


def _enter(url, run, agent, barrier, out):
    with open_store(url) as store:
        policy = BestOf(PolicyEnv(store, run, agent, "worker", None, {"n": 3}, None, None))
        barrier.wait()
        entry = policy.enter()
        again = policy.enter()  # an agent enters a round once
        out.put((agent, None if entry is None else entry.slot, again))


def test_a_storm_of_agents_fills_each_slot_of_a_round_once(store_url):
    with open_store(store_url) as s:
        s.create_run(Run(id="bo"))
        s.add_graph("bo", make_graph(["t1"]))
        s.register_agent("bo", Agent(id="holder"))
        s.claim("bo", "t1", "holder")
        s.start("bo", "t1", "holder", 1)
        s.note("bo", "task", "t1", "bestof-open", agent="holder", data={"attempt": 1, "base": "b" * 40, "n": 3},
               key="bestof:t1:1:open")
    results = storm(_enter, store_url, "bo", PROCS)
    slots = sorted(slot for slot, _ in results.values() if slot is not None)
    assert slots == [2, 3]
    assert all(again is None for _, again in results.values())
    with open_store(store_url) as s:
        rnd = read_round(s.history("bo", entity="task", entity_id="t1"), "t1", 1)
        joins = [r for r in s.history("bo", entity="task") if (r.data or {}).get("action") == "bestof-join"]
    assert len(joins) == 2 and sorted(rnd.entrants.values()) == [1, 2, 3] and rnd.free_slots == []
    assert {a for a, (slot, _) in results.items() if slot is not None} == set(rnd.entrants) - {"holder"}
