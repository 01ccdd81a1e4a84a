"""One run in memory: tasks, agents, events and history, as the storage of the state machine.

Pure Python, no I/O. The rules of every verb live in ``statemachine``; this class is the
``statemachine.Storage`` they read and write (the file store passes it to them). A backend that
keeps state in memory (the file store) drives it like this: ``begin()``, call one operation,
``take()`` the patches and transition rows the operation made, persist them as one unit, and
replay them elsewhere with ``replay()``. Live operations and replay go through the same mutators
(``_apply``), so a replayed state is exactly the state that wrote it. The verbs validate first
and mutate after, so a refused call changes nothing.

Patches are JSON lists: ``["run", run]``, ``["graph", tasks, deps]``, ``["task", id, fields]``,
``["agent", agent]``. Transition rows are ``Transition`` dicts with their ``seq``. The tasks and
the indexes that keep claims cheap live in ``taskindex.TaskIndex``, the agents' events in
``runevents.RunEvents``; this class extends both.
"""

from __future__ import annotations

import bisect

from coordstore import graph as g
from coordstore import growth
from coordstore import statemachine as sm
from coordstore.chains import check_note, check_record, note_data, raised
from coordstore.errors import InvalidTransition, NotFound
from coordstore.models import ACTIVE, METRIC_FIELDS, TERMINAL, Agent, Dependency, Event, Run, RunDump, Task, TaskGraph, Transition
from coordstore.runevents import RunEvents
from coordstore.statemachine import TaskState
from coordstore.taskindex import TaskIndex

# transition fields a journal row may leave out (run_id is the line's run)
_ROW_DEFAULTS = {"from_state": None, "agent": None, "reason": None, "data": {}, "key": None}


class RunState(TaskIndex, RunEvents):
    def __init__(self, run: dict):
        super().__init__(run["id"])
        self.run = run
        self.agents: dict[str, dict] = {}
        self.history: list[dict] = []
        self.keys: set[str] = set()
        self.won: dict[str, str] = {}  # idempotency key -> the task its won claim took
        self.merges: dict[str, str] = {}  # merge entity id -> its latest state (the chain's head)
        self.next_seq = 1
        self.events: dict[str, dict[int, dict]] = {}  # agent -> seq -> event
        self._patches: list | None = None
        self._rows: list | None = None

    # ================================================================ recording and replay
    def begin(self) -> None:
        self._patches, self._rows = [], []

    def dirty(self) -> bool:
        """True when the operation in progress already changed memory."""
        return bool(self._patches or self._rows)

    def take(self) -> tuple[list, list]:
        """The operation's patches and its rows, compacted: keys holding their default are left
        out (every other process parses each line, so shorter lines are faster claims)."""
        rows = [{k: v for k, v in r.items() if k != "run_id" and v != _ROW_DEFAULTS.get(k, ...)} for r in self._rows or ()]
        out = (self._patches or [], rows)
        self._patches = self._rows = None
        return out

    def replay(self, patches: list, rows: list) -> None:
        for p in patches:
            self._apply(p)
        for r in rows:
            self._add_row({**_ROW_DEFAULTS, "data": {}, "run_id": self.run["id"], **r})

    def _mut(self, patch: list) -> None:
        self._apply(patch)
        if self._patches is not None:
            self._patches.append(patch)

    def _apply(self, p: list) -> None:
        kind = p[0]
        if kind == "task":
            self._set_task(p[1], p[2])
        elif kind == "agent":
            self.agents[p[1]["id"]] = p[1]
        elif kind == "graph":  # copies: the patch must keep the imported values, memory moves on
            self.add_tasks([dict(d) for d in p[1]], p[2])
        elif kind == "unlink":
            self.remove_dep(p[1])
        elif kind == "run":
            self.run = p[1]
        elif kind != "load":  # "load" is consumed by the backend (from_dump)
            raise ValueError(f"unknown patch kind {kind!r}")

    def _add_row(self, r: dict) -> None:
        self.history.append(r)
        if r.get("key"):
            self.keys.add(r["key"])
            if r["entity"] == "claim" and r["to_state"] == "won":
                self.won[r["key"]] = r["entity_id"]
        if r["entity"] == "merge":
            self.merges[r["entity_id"]] = r["to_state"]
        self.next_seq = r["seq"] + 1

    def at(self, now: int) -> int:
        """The time an operation writes at: ``now`` raised to the latest row's (chains.raised)."""
        return raised(now, self.history[-1]["ts_ms"] if self.history else None)

    def emit(self, entity, entity_id, frm, to, now, agent=None, reason=None, data=None, key=None) -> dict:
        row = {
            "seq": self.next_seq, "run_id": self.run["id"], "ts_ms": now, "entity": entity,
            "entity_id": entity_id, "from_state": frm, "to_state": to, "agent": agent,
            "reason": reason, "data": dict(data or {}), "key": key,
        }  # fmt: skip
        self._add_row(row)
        if self._rows is not None:
            self._rows.append(row)
        return row

    def _set(self, tid: str, **fields) -> None:
        self._mut(["task", tid, fields])

    # ================================================================ reads
    def agent(self, aid: str) -> dict:
        try:
            return self.agents[aid]
        except KeyError:
            raise NotFound(f"run {self.run['id']!r}: no agent {aid!r}") from None

    def history_rows(self, since_seq=0, entity=None, entity_id=None, agent=None) -> list[dict]:
        start = bisect.bisect_right(self.history, since_seq, key=lambda r: r["seq"])
        return [
            r for r in self.history[start:]
            if (entity is None or r["entity"] == entity)
            and (entity_id is None or r["entity_id"] == entity_id)
            and (agent is None or r["agent"] == agent)
        ]  # fmt: skip

    # ================================================================ run and graph
    def start_run(self, now: int) -> None:
        self._mut(["run", self.run])
        self.emit("run", self.run["id"], None, "running", now)

    def add_graph(self, graph: TaskGraph, now: int) -> None:
        ix = g.validate(graph)  # GraphError before anything changes
        now = self.at(now)
        dup = [t for t in ix.order if t in self.tasks]
        if dup:
            raise InvalidTransition(f"run {self.run['id']!r}: task id(s) already exist: {', '.join(dup[:5])}")
        tasks = []
        for t in graph.tasks:
            d = t.model_dump(mode="json")
            d["created_at"] = d["created_at"] if d["created_at"] is not None else now
            d["updated_at"] = now
            tasks.append(d)
        self._mut(["graph", tasks, [d.model_dump(mode="json") for d in graph.dependencies]])
        for d in tasks:
            self.emit("task", d["id"], None, d["status"], now, reason="import")
        # containers whose imported children are already all terminal close now, not never
        done_parents = {ix.parent[d["id"]] for d in tasks if d["status"] in TERMINAL and d["id"] in ix.parent}
        sm.close_containers(self, sorted(done_parents, key=self.pos.__getitem__), now)

    # ================================================================ growth (rules: growth.py)
    def _graph_now(self) -> tuple[list[Task], list[Dependency], dict[str, str]]:
        deps = [Dependency.model_validate(d) for d in self.deps]
        return [self.defs[t] for t in self.order], deps, {t: self.tasks[t]["status"] for t in self.order}

    def grow(self, new: list[Task], deps: list[Dependency], parent: str | None, by: str | None, now: int) -> None:
        tasks, old, status = self._graph_now()
        plan = growth.plan_add(self.run["id"], tasks, old, status, new, deps, parent)
        now = self.at(now)
        rows = [{**t.model_dump(mode="json"), "created_at": now, "updated_at": now} for t in new]
        self._mut(["graph", rows, [d.model_dump(mode="json") for d in plan.deps]])
        growth.emit_added(self, new, plan.deps, status, by, now)

    def link(self, d: Dependency, by: str | None, now: int) -> None:
        tasks, old, status = self._graph_now()
        growth.plan_link(self.run["id"], tasks, old, status, d)
        now = self.at(now)
        self._mut(["graph", [], [d.model_dump(mode="json")]])
        growth.emit_linked(self, growth.LINKED, d, status[growth.constrained(d)], by, now)

    def unlink(self, d: Dependency, by: str | None, now: int) -> None:
        _, old, status = self._graph_now()
        growth.plan_unlink(self.run["id"], old, status, d)
        now = self.at(now)
        self._mut(["unlink", d.model_dump(mode="json")])
        growth.emit_linked(self, growth.UNLINKED, d, status[growth.constrained(d)], by, now)

    # ================================================================ storage of the state machine
    # (statemachine.Storage: the verbs' rules live there; these read and write memory)
    @property
    def run_id(self) -> str:
        return self.run["id"]

    def policy(self) -> str:
        return self.run.get("on_blocker_failure", "cancel")

    def state(self, tid: str) -> TaskState:
        t = self.task(tid)
        return TaskState(t["status"], t["attempt"], t["owner"], self.ix.parent.get(tid), self.ix.is_container(tid),
                         self.unmet[tid])

    def set_task(self, tid: str, fields: dict) -> None:
        self._mut(["task", tid, fields])

    def waiting_on(self, tid: str) -> list[str]:
        return sorted(b for b in self.ix.effective_blockers(tid) if self.tasks[b]["status"] != "completed")

    def has_open_children(self, tid: str) -> bool:
        return bool(self.open_kids.get(tid))

    def first_uncompleted_child(self, tid: str) -> tuple[str, str] | None:
        return next(((c, s) for c in self.ix.children.get(tid, ()) if (s := self.tasks[c]["status"]) != "completed"), None)

    def open_dependents(self, tid: str) -> list[tuple[str, str]]:
        return [(d, s) for d in self.dependents[tid] if (s := self.tasks[d]["status"]) not in TERMINAL]

    def open_descendants(self, tid: str) -> list[tuple[str, str]]:
        below = sorted(self.ix.descendants(tid), key=self.pos.__getitem__)
        return [(d, s) for d in below if (s := self.tasks[d]["status"]) not in TERMINAL]

    def agent_status(self, aid: str) -> str | None:
        a = self.agents.get(aid)
        return None if a is None else a["status"]

    def put_agent(self, agent: Agent) -> None:
        self._mut(["agent", agent.model_dump(mode="json")])

    def set_agent(self, aid: str, fields: dict) -> None:
        self._mut(["agent", {**self.agents[aid], **fields}])

    def run_status(self) -> str:
        return self.run["status"]

    def set_run(self, fields: dict) -> None:
        self._mut(["run", {**self.run, **fields}])

    # ================================================================ claims
    def won_with(self, key: str) -> str | None:
        return self.won.get(key)

    def claim_next(self, agent: str, tags, order: str, within: str | None, now: int,
                   seen: str | None = None, key: str | None = None) -> str | None:
        again, took = sm.replayed(self, key, agent)
        if again:
            return took
        now = self.at(now)
        tid = self._pick(tags, order, within)
        sm.claim_outcome(self, seen, tid, agent, now)
        if tid is not None:
            sm.take(self, tid, self.state(tid), agent, agent, now, claim=True, key=key)
        return tid

    def add_usage(self, tid: str, slots: tuple[int, ...], cost: float) -> None:
        """Add the 8 metric slots (METRIC_FIELDS order) and the cost. A task written by an older orch
        lacks the later slots' keys: they count from 0. Only the slots that change are written
        (every process parses each journal line)."""
        t = self.task(tid)
        self._set(tid, **{f: t.get(f, 0) + n for f, n in zip(METRIC_FIELDS, slots) if n}, cost_usd=t["cost_usd"] + cost)

    # ================================================================ agents
    def heartbeat(self, aid: str, lease_ms: int, current_task: str | None, now: int) -> None:
        a = self.agent(aid)
        self._mut(["agent", {**a, "last_heartbeat": now, "lease_expires": now + lease_ms, "current_task": current_task}])

    def reap(self, now: int) -> list[str]:
        requeued = []
        at = self.at(now)  # leases are compared with now as given, rows written in time order
        for aid in sorted(self.agents):
            a = self.agents[aid]
            if sm.expired(a["status"], a["lease_expires"], now):
                mine = [t for t in self.order if self.tasks[t]["owner"] == aid and self.tasks[t]["status"] in ACTIVE]
                sm.reap(self, aid, mine, at)
                requeued += mine
        return requeued

    # ================================================================ history
    def record(self, tr: Transition) -> dict | None:
        check_record(tr)
        if tr.key is not None and tr.key in self.keys:
            return None
        frm = self.merges.get(tr.entity_id) if tr.entity == "merge" else None
        return self.emit(tr.entity, tr.entity_id, frm, tr.to_state, self.at(tr.ts_ms), agent=tr.agent,
                          reason=tr.reason, data=tr.data, key=tr.key)  # fmt: skip

    def note(self, entity: str, eid: str, action: str, reason, agent, data, key, now: int) -> dict | None:
        check_note(self.run["id"], entity, eid, action)
        status = (self.task(eid) if entity == "task" else self.agent(eid) if entity == "agent" else self.run)["status"]
        if key is not None and key in self.keys:
            return None
        return self.emit(entity, eid, status, status, self.at(now), agent=agent, reason=reason,
                          data=note_data(action, data), key=key)  # fmt: skip

    # ================================================================ snapshot
    def dump(self) -> RunDump:
        return RunDump(
            run=Run.model_validate(self.run),
            tasks=[Task.model_validate(self.tasks[t]) for t in self.order],
            dependencies=[Dependency.model_validate(d) for d in self.deps],
            agents=[Agent.model_validate(self.agents[a]) for a in sorted(self.agents)],
            events=[Event.model_validate(e) for a in sorted(self.events) for _, e in sorted(self.events[a].items())],
            history=[Transition.model_validate(r) for r in self.history],
        )

    @classmethod
    def from_dump(cls, dump: dict) -> "RunState":
        """A run exactly as dumped (a ``RunDump`` in JSON mode); validates the graph and the seqs."""
        rs = cls(dump["run"])
        g.validate(TaskGraph.model_validate({"tasks": dump["tasks"], "dependencies": dump["dependencies"]}))
        rs._apply(["graph", dump["tasks"], dump["dependencies"]])
        for a in dump["agents"]:
            rs.agents[a["id"]] = a
        rs.put_events(dump["events"])
        last = 0
        for r in dump["history"]:
            if r["seq"] <= last:
                raise InvalidTransition(f"run {rs.run['id']!r}: history seq {r['seq']} is not increasing")
            last = r["seq"]
            rs._add_row(r)
        return rs
