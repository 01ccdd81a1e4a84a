"""Claim storms: many real processes behind a barrier hammer one store; nothing is claimed twice,
nothing is lost, and no task starts before its blockers completed. Run over every backend."""

from __future__ import annotations

import time
from collections import Counter, defaultdict

from coordstore import graph, open_store
from coordstore.models import Run, Task

from conftest import make_graph
from storms import storm

PROCS = 16
TASKS = 2_000
LOOK_TASKS = 300  # every look reads the whole ready list: fewer tasks keep it quick
IDLE_SLEEP_S = 0.002  # pause after an empty claim while others still work, so pollers do not starve them


def _claim_only(url, run, agent, barrier, out):
    with open_store(url) as store:
        calls, won = 0, []
        barrier.wait()
        while True:
            t = store.claim_next(run, agent)
            calls += 1
            if t is not None:
                won.append((t.id, t.attempt, t.owner))
            elif not store.ready_tasks(run):  # None may be a lost race: stop only when nothing is left
                break
        out.put((agent, calls, won))


def _look_then_claim(url, run, agent, barrier, out):
    """A pulling agent's loop: look (``ready_tasks``), then claim naming what it saw best."""
    with open_store(url) as store:
        pairs = []  # (seen, got) of every claim
        barrier.wait()
        while ready := store.ready_tasks(run):
            t = store.claim_next(run, agent, seen=ready[0].id)
            pairs.append((ready[0].id, None if t is None else t.id))
        out.put((agent, len(pairs), pairs))


def _claim_work(url, run, agent, barrier, out):
    with open_store(url) as store:
        calls, done = 0, []
        barrier.wait()
        while True:
            t = store.claim_next(run, agent)
            calls += 1
            if t is None:
                if not store.list_tasks(run, status=["pending", "assigned", "working"]):
                    break
                time.sleep(IDLE_SLEEP_S)
                continue
            store.start(run, t.id, agent, t.attempt)
            store.complete(run, t.id, agent, t.attempt)
            done.append(t.id)
        out.put((agent, calls, done))


def assert_gap_free(hist):
    assert [r.seq for r in hist] == list(range(1, len(hist) + 1))


def test_claim_storm_every_task_claimed_once(store_url):
    ids = [f"t{i:04d}" for i in range(TASKS)]
    with open_store(store_url) as s:
        s.create_run(Run(id="storm"))
        s.add_graph("storm", make_graph(ids))
    results = storm(_claim_only, store_url, "storm", PROCS)

    won = [(tid, att, owner, agent) for agent, (_, items) in results.items() for tid, att, owner in items]
    counts = Counter(tid for tid, *_ in won)
    assert sorted(counts) == ids and max(counts.values()) == 1, "a task was claimed twice or lost"
    assert all(att == 1 and owner == agent for _, att, owner, agent in won)
    winner = {tid: agent for tid, _, _, agent in won}
    assert len({a for a in winner.values()}) > 1, "one process took everything: the storm did not contend"

    with open_store(store_url) as s:
        tasks = s.list_tasks("storm")
        assert {(t.id, t.status, t.owner, t.attempt) for t in tasks} == {(t, "assigned", winner[t], 1) for t in ids}
        hist = s.history("storm")
    assert_gap_free(hist)
    assigned = [(r.entity_id, r.agent) for r in hist if r.entity == "task" and r.to_state == "assigned"]
    assert sorted(assigned) == sorted(winner.items())
    claims = [r for r in hist if r.entity == "claim"]
    by_state = Counter(r.to_state for r in claims)
    total_calls = sum(calls for calls, _ in results.values())
    assert by_state["won"] == TASKS
    assert by_state["won"] + by_state["empty"] + by_state["lost"] == len(claims) == total_calls
    per_agent = Counter(r.agent for r in claims)
    assert per_agent == {agent: calls for agent, (calls, _) in results.items()}
    assert sorted((r.entity_id, r.agent) for r in claims if r.to_state == "won") == sorted(winner.items())


def test_look_then_claim_storm_counts_every_lost_race(store_url):
    """Each process records what it saw and what it got: the store's lost rows are exactly the
    claims that got something other than what they saw (nothing else makes a task go: no task is
    added, none blocked), and no task is taken twice."""
    ids = [f"t{i:04d}" for i in range(LOOK_TASKS)]
    with open_store(store_url) as s:
        s.create_run(Run(id="looks"))
        s.add_graph("looks", make_graph(ids))
    results = storm(_look_then_claim, store_url, "looks", PROCS)

    got = Counter(g for _, pairs in results.values() for _, g in pairs if g is not None)
    assert sorted(got) == ids and max(got.values()) == 1, "a task was claimed twice or lost"
    missed = Counter((agent, seen, g) for agent, (_, pairs) in results.items() for seen, g in pairs if g != seen)
    assert missed, "no process lost a race: the storm did not contend"
    with open_store(store_url) as s:
        hist = s.history("looks")
    assert_gap_free(hist)
    claims = [r for r in hist if r.entity == "claim"]
    lost = Counter((r.agent, r.entity_id, r.data["took"]) for r in claims if r.to_state == "lost")
    assert lost == missed
    assert all(r.data["status"] == "assigned" for r in claims if r.to_state == "lost")
    assert Counter(r.to_state for r in claims) == {"won": LOOK_TASKS, "lost": sum(missed.values())}
    won = sorted((r.agent, r.entity_id) for r in claims if r.to_state == "won")
    assert won == sorted((agent, g) for agent, (_, pairs) in results.items() for _, g in pairs if g is not None)


def dependent_graph():
    """Chains, fan-outs, fan-ins and blocked containers: 440 tasks."""
    tasks, deps = [], []

    def add(tid, **kw):
        tasks.append({"id": tid, "time_estimate_ms": 10, **kw})
        return tid

    for c in range(40):  # chains of 4
        ids = [add(f"ch{c}-{i}") for i in range(4)]
        deps += [(a, "blocks", b) for a, b in zip(ids, ids[1:])]
    for f in range(30):  # one root, four leaves (written as "follows" half the time)
        root = add(f"fo{f}")
        for i in range(4):
            leaf = add(f"fo{f}-{i}")
            deps.append((root, "blocks", leaf) if i % 2 else (leaf, "follows", root))
    for f in range(20):  # three sources, one sink
        sink = add(f"fi{f}")
        for i in range(3):
            deps.append((add(f"fi{f}-{i}"), "blocks", sink))
    for k in range(10):  # a blocker gating a container of three
        gate, box = add(f"gate{k}"), add(f"box{k}")
        deps += [(gate, "blocks", box)] + [(box, "contains", add(f"box{k}-{i}")) for i in range(3)]
    return make_graph(tasks, deps)


def test_work_storm_respects_dependencies(store_url):
    g = dependent_graph()
    ix = graph.validate(g)
    work = set(graph.work_ids(ix))
    with open_store(store_url) as s:
        s.create_run(Run(id="work"))
        s.add_graph("work", g)
    results = storm(_claim_work, store_url, "work", PROCS)

    done = Counter(tid for _, items in results.values() for tid in items)
    assert set(done) == work and max(done.values()) == 1
    with open_store(store_url) as s:
        tasks: list[Task] = s.list_tasks("work")
        hist = s.history("work")
    assert {t.status for t in tasks} == {"completed"} and len(tasks) == len(ix.order)
    assert_gap_free(hist)

    seq = defaultdict(dict)  # task -> to_state -> seq of that row (each must happen once)
    for r in hist:
        if r.entity == "task" and r.from_state is not None:
            assert r.to_state not in seq[r.entity_id], f"{r.entity_id} entered {r.to_state} twice"
            seq[r.entity_id][r.to_state] = (r.seq, r.ts_ms)
    for t in ix.order:
        assert "completed" in seq[t], t
        if t in work:
            assert seq[t]["assigned"] < seq[t]["working"] < seq[t]["completed"], t
        for b in ix.effective_blockers(t):
            if t in work:
                assert seq[b]["completed"][0] < seq[t]["assigned"][0], f"{t} claimed before its blocker {b} completed"
                assert seq[b]["completed"][1] <= seq[t]["working"][1], f"{t} started before {b} completed"
        for c in ix.children.get(t, ()):
            assert seq[c]["completed"][0] < seq[t]["completed"][0], f"container {t} completed before child {c}"
    claims = Counter(r.to_state for r in hist if r.entity == "claim")
    assert claims["won"] == len(work)
    assert sum(claims.values()) == sum(calls for calls, _ in results.values())
