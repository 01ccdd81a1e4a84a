"""Property tests of coordstore/graph.py against brute-force oracles written from the edge rules.

The oracle re-derives everything from the raw edges (not from GraphIndex):
  happens-before = start edges (blocker -> blocked), child -> parent, and every blocker of a
  container -> each of its descendants. A graph is valid iff that relation is acyclic.
"""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordstore import graph
from coordstore.errors import GraphError
from coordstore.models import Dependency, Task, TaskGraph

# modest example counts: this file is part of the fast suite
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
STATUSES = ("pending", "assigned", "working", "completed", "failed", "cancelled")


# ---------------------------------------------------------------------------- oracle
def parents_of(g: TaskGraph) -> dict[str, str]:
    return {d.to_id: d.from_id for d in g.dependencies if d.type == "contains"}


def start_pairs(g: TaskGraph) -> set[tuple[str, str]]:
    out = set()
    for d in g.dependencies:
        if d.type == "blocks":
            out.add((d.from_id, d.to_id))
        elif d.type == "follows":
            out.add((d.to_id, d.from_id))
    return out


def chain_up(t: str, parent: dict[str, str]) -> list[str]:
    out = []
    while t in parent and parent[t] not in out:
        t = parent[t]
        out.append(t)
    return out


def oracle_blockers(g: TaskGraph, t: str) -> set[str]:
    parent, pairs = parents_of(g), start_pairs(g)
    scope = {t, *chain_up(t, parent)}
    return {b for b, x in pairs if x in scope}


def oracle_hb(g: TaskGraph) -> set[tuple[str, str]]:
    parent = parents_of(g)
    rel = {(c, p) for c, p in parent.items()}
    for t in (x.id for x in g.tasks):
        rel |= {(b, t) for b in oracle_blockers(g, t)}
    return rel


def reachable(rel: set[tuple[str, str]], nodes: list[str]) -> dict[str, set[str]]:
    """Transitive closure by Floyd-Warshall (graphs here are tiny)."""
    reach = {n: {b for a, b in rel if a == n} for n in nodes}
    for k in nodes:
        for i in nodes:
            if k in reach[i]:
                reach[i] |= reach[k]
    return reach


def oracle_acyclic(g: TaskGraph) -> bool:
    nodes = [t.id for t in g.tasks]
    reach = reachable(oracle_hb(g), nodes)
    return all(n not in reach[n] for n in nodes)


# ---------------------------------------------------------------------------- generators
@st.composite
def dags(draw, max_n: int = 9, estimates: bool = False):
    """A random valid graph: nodes get a random happens-before position; containment points from a
    later parent to an earlier child, and a start edge's blocker precedes the blocked task's whole
    subtree. Every happens-before edge then points forward, so the graph is acyclic by construction."""
    n = draw(st.integers(1, max_n))
    ids = [f"t{i}" for i in range(n)]
    pos = dict(zip(ids, draw(st.permutations(range(n)))))
    parent: dict[str, str] = {}
    for c in ids:
        later = [p for p in ids if pos[p] > pos[c]]
        if later and draw(st.booleans()):
            parent[c] = draw(st.sampled_from(later))
    sub_min = {}
    for t in ids:
        sub_min[t] = min([pos[t]] + [pos[c] for c in ids if t in chain_up(c, parent)])
    deps = [Dependency(from_id=p, to_id=c, type="contains") for c, p in parent.items()]
    for _ in range(draw(st.integers(0, 2 * n))):
        x = draw(st.sampled_from(ids))
        before = [b for b in ids if pos[b] < sub_min[x]]
        if not before:
            continue
        b = draw(st.sampled_from(before))
        if draw(st.booleans()):
            deps.append(Dependency(from_id=b, to_id=x, type="blocks"))
        else:
            deps.append(Dependency(from_id=x, to_id=b, type="follows"))
    deps = draw(st.permutations(deps))
    order = draw(st.permutations(ids))  # template order is independent of happens-before order
    tasks = []
    for t in order:
        fields = {"id": t}
        if estimates:
            kind = draw(st.sampled_from(["ms", "points", "none"]))
            if kind == "ms":
                fields["time_estimate_ms"] = draw(st.integers(0, 10_000))
            elif kind == "points":
                fields["points"] = draw(st.sampled_from([0.5, 1.0, 2.0, 3.0]))
        tasks.append(Task(**fields))
    return TaskGraph(tasks=tasks, dependencies=list(deps))


def parse_cycle(msg: str) -> list[str]:
    assert msg.startswith("cycle: "), msg
    names = msg[len("cycle: "):].split(" -> ")
    names[-1] = names[-1].split(" (")[0]  # a self edge carries "(type edge to itself)"
    return names


# ---------------------------------------------------------------------------- properties
@SETTINGS
@given(dags())
def test_random_dags_validate(g):
    assert oracle_acyclic(g)
    ix = graph.validate(g)
    assert ix.order == [t.id for t in g.tasks]
    for t in ix.order:
        assert ix.effective_blockers(t) == oracle_blockers(g, t)


@SETTINGS
@given(dags(), st.data())
def test_injected_cycle_is_rejected_and_named(g, data):
    nodes = [t.id for t in g.tasks]
    reach = reachable(oracle_hb(g), nodes)
    # close a loop: u happens before v, now make v block u (v == u makes a self edge)
    u = data.draw(st.sampled_from(nodes))
    v = data.draw(st.sampled_from(sorted(reach[u] | {u})))
    kind = data.draw(st.sampled_from(["blocks", "follows"]))
    extra = Dependency(from_id=v, to_id=u, type="blocks") if kind == "blocks" else Dependency(from_id=u, to_id=v, type="follows")
    bad = TaskGraph(tasks=g.tasks, dependencies=[*g.dependencies, extra])
    assert not oracle_acyclic(bad)
    try:
        graph.validate(bad)
    except GraphError as e:
        cycle = parse_cycle(str(e))
    else:
        raise AssertionError(f"cycle through {u} and {v} not rejected")
    assert len(cycle) >= 2 and cycle[0] == cycle[-1]
    hb = oracle_hb(bad)
    for a, b in itertools.pairwise(cycle):
        assert (a, b) in hb, f"named cycle {cycle} uses {a} -> {b}, not a happens-before edge"


@SETTINGS
@given(st.integers(2, 8), st.data())
def test_arbitrary_graphs_validate_iff_acyclic(n, data):
    ids = [f"n{i}" for i in range(n)]
    edges = data.draw(st.lists(st.tuples(st.sampled_from(ids), st.sampled_from(["blocks", "follows"]), st.sampled_from(ids)), max_size=n + 2))
    g = TaskGraph(tasks=[Task(id=t) for t in ids], dependencies=[Dependency(from_id=a, type=k, to_id=b) for a, k, b in edges])
    try:
        graph.validate(g)
        valid = True
    except GraphError as e:
        valid = False
        hb = oracle_hb(g)
        assert all((a, b) in hb for a, b in itertools.pairwise(parse_cycle(str(e))))
    assert valid == oracle_acyclic(g)


@SETTINGS
@given(dags(), st.data())
def test_readiness_matches_brute_force(g, data):
    ix = graph.validate(g)
    status = {t.id: data.draw(st.sampled_from(STATUSES)) for t in g.tasks}
    has_children = {d.from_id for d in g.dependencies if d.type == "contains"}
    for t in g.tasks:
        expect = (
            status[t.id] == "pending"
            and t.id not in has_children
            and all(status[b] == "completed" for b in oracle_blockers(g, t.id))
        )
        assert graph.is_ready(t.id, ix, status) == expect, t.id


def waits_for(g: TaskGraph) -> dict[str, set[str]]:
    """Work task y waits for work task x when x is, or lies inside, one of y's effective blockers."""
    parent = parents_of(g)
    containers = set(parent.values())
    work = [t.id for t in g.tasks if t.id not in containers]
    out = {}
    for y in work:
        bl = oracle_blockers(g, y)
        out[y] = {x for x in work if x in bl or bl & set(chain_up(x, parent))}
    return out


@settings(max_examples=100, deadline=None)
@given(dags(max_n=7, estimates=True))
def test_critical_path_matches_longest_path_brute_force(g):
    ix = graph.validate(g)
    dur = {t.id: graph.estimate_ms(t) for t in g.tasks}
    before = waits_for(g)
    work = list(before)

    # enumerate every chain w1 <- w2 <- ... explicitly (tiny graphs)
    best = 0.0

    def walk(node, total):
        nonlocal best
        best = max(best, total)
        for nxt in work:
            if node in before[nxt]:
                walk(nxt, total + dur[nxt])

    for w in work:
        walk(w, float(dur[w]))
    length, path = graph.critical_path(ix)
    assert length == best
    assert sum(dur[p] for p in path) == length
    for a, b in itertools.pairwise(path):
        assert a in before[b], f"critical path {path}: {b} does not wait for {a}"
