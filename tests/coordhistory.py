"""A scripted agent-driven run on a real store: what the coordination server and its agents write
(tool rows recorded after the store verb each call stands for, turns and tokens as events, a graph
grown mid-run, work done twice), with a ledger of what was done so tests know the answers without
reading the history back. Used by the coordination-metrics tests and the views that show them."""

from __future__ import annotations

from collections import Counter

from coordstore.models import Agent, Dependency, Event, Run, Task, Transition

from conftest import make_graph

R = "r"
ROLES = {"coord": "coordinator", "lead": "lead", "w1": "worker", "w2": "worker", "w3": "worker"}
DISPATCH = {"coord", "lead"}


class Server:
    """Plays the coordination server for a scripted run: a tool call takes ``ms`` on the clock, runs
    the store verb it stands for, then records its tool row (as the server does, after the call).
    Keeps a ledger of what was done, so the test knows the answers without reading the history."""

    def __init__(self, store, clock):
        self.store, self.clock = store, clock
        self.calls: list[tuple[str, str, str, float]] = []  # (agent, tool, outcome, ms)
        self.turns: list[tuple[str, float]] = []
        self.won = self.lost = 0
        self.seq: Counter[str] = Counter()

    def call(self, agent, tool, verb=None, outcome="ok", ms=2, task=None, **data):
        self.clock.advance(ms)
        result = verb() if verb else None
        if tool == "claim" and verb is not None and result is None:
            outcome = "lost"
        self.store.record(Transition(run_id=R, ts_ms=self.clock(), entity="tool", entity_id=tool, to_state=outcome,
                                     agent=agent, data={"args": "0" * 16, "latency_ms": float(ms), "task": task, **data}))
        self.calls.append((agent, tool, outcome, float(ms)))
        return result

    def turn(self, agent, ms):
        self.clock.advance(ms)
        self.event(agent, "step", name="turn", digest=f"turn-{len(self.turns)}", ms=ms)
        self.turns.append((agent, float(ms)))

    def event(self, agent, type, **data):
        self.store.append_events(R, [Event(agent=agent, seq=self.seq[agent], ts_ms=self.clock(), type=type, data=data)])
        self.seq[agent] += 1

    # what a worker's tools do, in the verbs of the store
    def claim(self, agent, tid):
        t = self.call(agent, "claim", lambda: self.store.claim(R, tid, agent), task=tid)
        self.won, self.lost = self.won + (t is not None), self.lost + (t is None)
        return t

    def refused_claim(self, agent, tid):
        """A claim the server refused as lost by its own look, before asking the store."""
        self.call(agent, "claim", outcome="lost", task=tid)
        self.lost += 1

    def claim_and_start(self, agent, tid):
        return self.store.start(R, tid, agent, self.claim(agent, tid).attempt)

    def complete(self, agent, task, sha=None):
        merge = {"source": sha, "attempt": task.attempt}
        if sha:
            self.merge(agent, task.id, sha, task.attempt)
        return self.call(agent, "update", lambda: self.store.complete(R, task.id, agent, task.attempt,
                                                                       data={"commit": sha, "merge": merge}),
                         task=task.id, status="completed")

    def merge(self, agent, tid, sha, attempt):
        self.store.record(Transition(run_id=R, ts_ms=self.clock(), entity="merge", entity_id=tid, to_state="merged",
                                     agent=agent, data={"ok": True, "sha": "m" + sha[1:], "source": sha, "attempt": attempt},
                                     key=f"merge:{tid}:{attempt}"))


def scripted_run(store, clock) -> tuple[Server, dict]:
    """Push, pull and self-decomposition in one run; returns the server and the test's own answers."""
    store.create_run(Run(id=R, experiment="exp", variant="agents"))
    store.add_graph(R, make_graph(["a", "b", "c", "d", "e", "f", "big"], [("a", "blocks", "e")]))
    for aid, role in ROLES.items():
        store.register_agent(R, Agent(id=aid, role=role), lease_ms=60_000)
    s, sha = Server(store, clock), (lambda c: c * 40)
    pushed = []  # (assigned task, started task): the assignment latency samples

    # the coordinator dispatches: a -> w1, b -> w2, f -> w3 then again to w1 (the clock restarts)
    s.call("coord", "connect")
    s.call("coord", "list_tasks", ms=3)
    s.turn("coord", 40)
    a = s.call("coord", "update", lambda: store.assign(R, "a", "w1", by="coord"), task="a", assignee="w1")
    s.turn("coord", 30)
    b = s.call("coord", "update", lambda: store.assign(R, "b", "w2", by="coord"), task="b", assignee="w2")
    s.call("coord", "update", lambda: store.assign(R, "f", "w3", by="coord"), task="f", assignee="w3")
    clock.advance(25)
    a_run = s.call("w1", "update", lambda: store.start(R, "a", "w1", a.attempt), task="a", status="working")
    pushed.append((a, a_run))
    clock.advance(10)
    b_run = s.call("w2", "claim", lambda: store.start(R, "b", "w2", b.attempt), task="b")  # its own: a start
    pushed.append((b, b_run))
    s.turn("coord", 15)
    f = s.call("coord", "update", lambda: store.assign(R, "f", "w1", by="coord"), task="f", assignee="w1", force=True)

    # swarm: w3 takes c; w2 loses it in the store, then once more in the server's own look
    c_run = s.claim_and_start("w3", "c")
    assert s.claim("w2", "c") is None
    s.refused_claim("w2", "c")
    s.call("w3", "update", outcome="error", task="nope")
    s.call("w3", "connect", outcome="denied", worker_id="w1")
    s.complete("w3", c_run, sha("c"))

    # decomposition: w3 splits big (54 ms: its 50 ms turn + the 4 ms call); the lead adds an
    # unparented task (23 ms: 20 + 3 from its first call) and one more child of big (10 + 2)
    s.call("w3", "get", ms=1, task="big")
    s.turn("w3", 50)
    s.call("w3", "create_tree", lambda: store.add_tasks(
        R, [Task(id="big-1"), Task(id="big-2"), Task(id="big-2a")],
        [Dependency(from_id="big-2", to_id="big-2a", type="contains")], parent="big", by="w3"),
        ms=4, task="big", created=["big-1", "big-2", "big-2a"])
    s.call("lead", "list_tasks")
    s.turn("lead", 20)
    s.call("lead", "create", lambda: store.add_tasks(R, [Task(id="extra")], by="lead"), ms=3, created=["extra"])
    s.turn("lead", 10)
    s.call("lead", "create", lambda: store.add_tasks(R, [Task(id="big-3")], parent="big", by="lead"), created=["big-3"])

    # tokens: the coordinator's events (its log_metrics is not counted twice); the lead only logs
    s.event("coord", "tokens", **{"in": 1000, "out": 200, "cached": 50, "thinking": 10, "cost_usd": 0.1})
    s.call("coord", "log_metrics", task="a", metrics=[9, 9, 9, 9, 0, 0, 0, 0])
    s.call("lead", "log_metrics", task="extra", metrics=[100, 20, 5, 1, 7, 0, 0, 0], cost_usd=0.02)
    s.event("w1", "tokens", **{"in": 7, "out": 7})

    # d is worked twice: w1 merges a commit, loses the task to a lease reaper; w2 redoes it
    s.complete("w1", a_run, sha("a"))
    d1 = s.claim_and_start("w1", "d")
    s.merge("w1", "d", sha("1"), d1.attempt)
    store.requeue(R, "d", "lease expired: agent w1")
    s.complete("w2", b_run, sha("b"))
    d2 = s.claim_and_start("w2", "d")
    s.complete("w2", d2, sha("2"))

    f_run = s.call("w1", "update", lambda: store.start(R, "f", "w1", f.attempt), task="f", status="working")
    pushed.append((f, f_run))
    s.complete("w1", f_run, sha("f"))
    for tid in ("e", "big-1", "big-2a", "big-3", "extra"):
        s.complete("w1", s.claim_and_start("w1", tid), sha(tid[-1]))
    assert store.claim_next(R, "w1") is None  # a look at an empty queue
    want = {"completed": 10, "decomposition_ms": 54 + 23 + 12, "assign": [t1.started_at - t0.claimed_at for t0, t1 in pushed],
            "coordinator_tokens": 1260 + 126, "tokens": 1260 + 126 + 14, "cost_usd": 0.12}
    return s, want
