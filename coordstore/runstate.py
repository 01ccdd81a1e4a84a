"""The in-memory state machine of one run: task transitions and cascades, agents, events, history.

Pure Python, no I/O. A backend that keeps state in memory (the file store) drives it like this:
``begin()``, call one operation, ``take()`` the patches and transition rows the operation made,
persist them as one unit, and replay them elsewhere with ``replay()``. Live operations and
replay go through the same mutators (``_apply``), so a replayed state is exactly the state that
wrote it. Operations validate first and mutate after, so a refused call changes nothing.

Patches are JSON lists: ``["run", run]``, ``["graph", tasks, deps]``, ``["task", id, fields]``,
``["agent", agent]``. Transition rows are ``Transition`` dicts with their ``seq``. The tasks and
the indexes that keep claims cheap live in ``taskindex.TaskIndex``, the agents' events in
``runevents.RunEvents``; this class extends both.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable

from coordstore import graph as g
from coordstore.base import reopen_needed
from coordstore.chains import check_note, check_record, note_data, raised
from coordstore.errors import InvalidTransition, NotFound, StaleAttempt
from coordstore.models import ACTIVE, AGENT_STATUSES, TERMINAL, Agent, Dependency, Event, Run, RunDump, Task, TaskGraph, Transition
from coordstore.runevents import RunEvents
from coordstore.taskindex import UNSUCCESSFUL, TaskIndex

RUN_FINAL: tuple[str, ...] = ("finished", "failed", "interrupted")
NOT_REAPED = frozenset({"stopped", "dead", "killed"})  # agents that hold no lease worth reaping
# transition fields a journal row may leave out (run_id is the line's run)
_ROW_DEFAULTS = {"from_state": None, "agent": None, "reason": None, "data": {}, "key": None}


class RunState(TaskIndex, RunEvents):
    def __init__(self, run: dict):
        super().__init__(run["id"])
        self.run = run
        self.agents: dict[str, dict] = {}
        self.history: list[dict] = []
        self.keys: set[str] = set()
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
        elif kind == "run":
            self.run = p[1]
        elif kind != "load":  # "load" is consumed by the backend (from_dump)
            raise ValueError(f"unknown patch kind {kind!r}")

    def _add_row(self, r: dict) -> None:
        self.history.append(r)
        if r.get("key"):
            self.keys.add(r["key"])
        if r["entity"] == "merge":
            self.merges[r["entity_id"]] = r["to_state"]
        self.next_seq = r["seq"] + 1

    def at(self, now: int) -> int:
        """The time an operation writes at: ``now`` raised to the latest row's (chains.raised)."""
        return raised(now, self.history[-1]["ts_ms"] if self.history else None)

    def _emit(self, entity, entity_id, frm, to, now, agent=None, reason=None, data=None, key=None) -> dict:
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
        self._emit("run", self.run["id"], None, "running", now)

    def finish(self, status: str, reason: str | None, now: int) -> None:
        now = self.at(now)
        if status not in RUN_FINAL:
            raise InvalidTransition(f"run {self.run['id']!r}: cannot finish as {status!r}; one of {', '.join(RUN_FINAL)}")
        old = self.run["status"]
        if old != status:
            self._mut(["run", {**self.run, "status": status, "finished_at": now, "reason": reason}])
            self._emit("run", self.run["id"], old, status, now, reason=reason)

    def reopen(self, reason: str | None, now: int) -> None:
        now = self.at(now)
        if reopen_needed(self.run["id"], self.run["status"]):
            old = self.run["status"]
            self._mut(["run", {**self.run, "status": "running", "finished_at": None, "reason": reason}])
            self._emit("run", self.run["id"], old, "running", now, reason=reason)

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
            self._emit("task", d["id"], None, d["status"], now, reason="import")
        # containers whose imported children are already all terminal close now, not never
        for p in sorted({ix.parent[d["id"]] for d in tasks if d["status"] in TERMINAL and d["id"] in ix.parent},
                        key=self.pos.__getitem__):  # fmt: skip
            self._cascade([], now, close=[p])

    # ================================================================ task transitions
    def _take(self, tid: str, agent: str, by: str, now: int, claim: bool) -> None:
        t = self.tasks[tid]
        frm, n = t["status"], t["attempt"] + 1
        data = {"by": by, "attempt": n}
        if frm == "assigned":
            data["previous"] = t["owner"]
        if claim:
            self._emit("claim", tid, None, "won", now, agent=agent, data={"attempt": n})
        self._set(tid, status="assigned", owner=agent, assigned_by=by, attempt=n, claimed_at=now,
                  started_at=None, updated_at=now)  # fmt: skip
        self._emit("task", tid, frm, "assigned", now, agent=agent, data=data)

    def claim_next(self, agent: str, tags, order: str, within: str | None, now: int) -> str | None:
        now = self.at(now)
        tid = self._pick(tags, order, within)
        if tid is None:
            self._emit("claim", "", None, "empty", now, agent=agent)
        else:
            self._take(tid, agent, agent, now, claim=True)
        return tid

    def claim(self, tid: str, agent: str, now: int) -> str | None:
        now = self.at(now)
        t = self.task(tid)
        if tid not in self.ready:
            self._emit("claim", tid, None, "lost", now, agent=agent, data={"status": t["status"]})
            return None
        self._take(tid, agent, agent, now, claim=True)
        return tid

    def assign(self, tid: str, agent: str, by: str, now: int) -> None:
        now = self.at(now)
        st = self.task(tid)["status"]
        if st == "pending" and not self.ix.is_container(tid) and tid not in self.ready:
            waiting = sorted(b for b in self.ix.effective_blockers(tid) if self.tasks[b]["status"] != "completed")
            raise InvalidTransition(f"task {tid!r} is not ready: waiting on {', '.join(waiting)}")
        if st not in ("pending", "assigned"):
            raise InvalidTransition(f"task {tid!r} is {st}; only a pending or assigned task can be assigned")
        self._take(tid, agent, by, now, claim=False)

    def _owned(self, tid: str, agent: str | None, attempt: int | None, verb: str) -> dict:
        t = self.task(tid)
        if (agent is not None and t["owner"] != agent) or (attempt is not None and t["attempt"] != attempt):
            raise StaleAttempt(
                f"task {tid!r}: {verb} by {agent!r} attempt {attempt} refused; "
                f"it is {t['status']}, owner {t['owner']!r}, attempt {t['attempt']}"
            )
        return t

    def start(self, tid: str, agent: str, attempt: int, now: int) -> None:
        now = self.at(now)
        t = self._owned(tid, agent, attempt, "start")
        if t["status"] != "assigned":
            raise InvalidTransition(f"task {tid!r} is {t['status']}; only an assigned task can start")
        self._set(tid, status="working", started_at=now, updated_at=now)
        self._emit("task", tid, "assigned", "working", now, agent=agent, data={"attempt": attempt})

    def complete(self, tid: str, agent: str, attempt: int, data: dict | None, now: int) -> None:
        now = self.at(now)
        t = self._owned(tid, agent, attempt, "complete")
        if t["status"] not in ACTIVE:
            raise InvalidTransition(f"task {tid!r} is {t['status']}; only an assigned or working task can complete")
        if self.open_kids.get(tid):
            raise InvalidTransition(f"task {tid!r} is a container with unfinished children")
        frm = t["status"]  # the task keeps its last reason (why it was last requeued), the row has none
        self._set(tid, status="completed", completed_by=agent, completed_at=now, updated_at=now)
        self._emit("task", tid, frm, "completed", now, agent=agent, data=data)
        self._cascade([(tid, tid)], now)

    def fail(self, tid: str, agent: str | None, attempt: int | None, reason: str, now: int) -> None:
        now = self.at(now)
        t = self._owned(tid, agent, attempt, "fail")
        by_orchestrator = agent is None and attempt is None
        if t["status"] not in ACTIVE and not (by_orchestrator and t["status"] == "pending"):
            raise InvalidTransition(f"task {tid!r} is {t['status']}; it cannot fail")
        self._end(tid, "failed", reason, now, agent=agent)
        self._cascade([(tid, tid)], now)

    def cancel(self, tid: str, reason: str, by: str | None, now: int) -> None:
        now = self.at(now)
        t = self.task(tid)
        if t["status"] in TERMINAL:
            raise InvalidTransition(f"task {tid!r} is already {t['status']}")
        self._end(tid, "cancelled", reason, now, agent=by)
        self._cascade([(tid, tid)], now)

    def requeue(self, tid: str, reason: str, by: str | None, now: int) -> None:
        now = self.at(now)
        frm = self.task(tid)["status"]
        if frm not in ("assigned", "working", "failed"):
            raise InvalidTransition(f"task {tid!r} is {frm}; only assigned, working or failed tasks can be requeued")
        self._reopen(tid, reason, by, now)
        # failed ancestor containers reopen: their failure was this child's, which may still complete
        p = self.ix.parent.get(tid)
        while p is not None and self.tasks[p]["status"] == "failed":
            self._reopen(p, f"child {tid} requeued", by, now)
            p = self.ix.parent.get(p)

    def _reopen(self, tid: str, reason: str, by: str | None, now: int) -> None:
        t = self.tasks[tid]
        frm, prev = t["status"], t["owner"]
        self._set(tid, status="pending", owner=None, assigned_by=None, claimed_at=None, started_at=None,
                  reason=reason, updated_at=now)  # fmt: skip
        self._emit("task", tid, frm, "pending", now, agent=by, reason=reason, data={"previous": prev} if prev else None)

    def _end(self, tid: str, status: str, reason: str | None, now: int, agent=None, data=None) -> None:
        frm = self.tasks[tid]["status"]
        self._set(tid, status=status, reason=reason, updated_at=now)
        self._emit("task", tid, frm, status, now, agent=agent, reason=reason, data=data)

    def _cascade(self, queue: list[tuple[str, str]], now: int, close: Iterable[str] = ()) -> None:
        """Consequences of tasks having become terminal, as (task, origin of the chain) pairs.

        Failed (policy ``cancel``) or cancelled: every open dependent is cancelled, its reason
        naming the task that started the chain. A failed or cancelled container takes its open
        descendants with it. Then the parent container completes (all children completed) or
        fails (all terminal, not all completed), and so on up. ``close``: containers to settle."""
        policy_cancel = self.run.get("on_blocker_failure", "cancel") == "cancel"
        todo = deque(queue)
        for p in close:
            self._settle_container(p, now, todo)
        while todo:
            x, origin = todo.popleft()
            st = self.tasks[x]["status"]
            if st in UNSUCCESSFUL:
                if st == "cancelled" or policy_cancel:
                    why = f"blocker {origin} {self.tasks[origin]['status']}"
                    data = {"blocker": origin} if origin == x else {"blocker": origin, "via": x}
                    for d in self.dependents[x]:
                        if self.tasks[d]["status"] not in TERMINAL:
                            self._end(d, "cancelled", why, now, data=data)
                            todo.append((d, origin))
                if self.ix.is_container(x):
                    for d in sorted(self.ix.descendants(x), key=self.pos.__getitem__):
                        if self.tasks[d]["status"] not in TERMINAL:
                            self._end(d, "cancelled", f"container {x} {st}", now, data={"container": x})
                            todo.append((d, x))
            p = self.ix.parent.get(x)
            if p is not None:
                self._settle_container(p, now, todo)

    def _settle_container(self, p: str, now: int, todo: deque) -> None:
        if self.tasks[p]["status"] in TERMINAL or self.open_kids[p]:
            return
        if not self.bad_kids[p]:
            frm = self.tasks[p]["status"]
            self._set(p, status="completed", reason=None, completed_at=now, updated_at=now)
            self._emit("task", p, frm, "completed", now, reason="all children completed")
        else:
            child = next(c for c in self.ix.children[p] if self.tasks[c]["status"] != "completed")
            why = f"children not all completed: {child} {self.tasks[child]['status']}"
            self._end(p, "failed", why, now, data={"child": child})
        todo.append((p, p))  # a failed container is the blocker its dependents name

    def add_usage(self, tid: str, tin: int, tout: int, tcached: int, tthink: int, cost: float) -> None:
        t = self.task(tid)
        self._set(tid, tokens_in=t["tokens_in"] + tin, tokens_out=t["tokens_out"] + tout,
                  tokens_cached=t["tokens_cached"] + tcached, tokens_thinking=t["tokens_thinking"] + tthink,
                  cost_usd=t["cost_usd"] + cost)  # fmt: skip

    # ================================================================ agents
    def register(self, agent: Agent, lease_ms: int | None, now: int) -> None:
        now = self.at(now)
        old = self.agents.get(agent.id)
        d = agent.model_dump(mode="json")
        d.update(status="registered", registered_at=now, last_heartbeat=now,
                 lease_expires=d["lease_expires"] if lease_ms is None else now + lease_ms)  # fmt: skip
        self._mut(["agent", d])
        self._emit("agent", agent.id, old["status"] if old else None, "registered", now, agent=agent.id,
                   reason="respawned" if old else None, data={"pid": d["pid"], "kind": d["kind"]})  # fmt: skip

    def heartbeat(self, aid: str, lease_ms: int, current_task: str | None, now: int) -> None:
        a = self.agent(aid)
        self._mut(["agent", {**a, "last_heartbeat": now, "lease_expires": now + lease_ms, "current_task": current_task}])

    def set_agent_status(self, aid: str, status: str, reason: str | None, data: dict | None, now: int) -> None:
        if status not in AGENT_STATUSES:
            raise InvalidTransition(f"agent {aid!r}: unknown status {status!r}; one of {', '.join(AGENT_STATUSES)}")
        a = self.agent(aid)
        if a["status"] == status:
            return
        now = self.at(now)
        self._mut(["agent", {**a, "status": status}])
        self._emit("agent", aid, a["status"], status, now, agent=aid, reason=reason, data=data)

    def reap(self, now: int) -> list[str]:
        requeued = []
        at = self.at(now)  # leases are compared with now as given, rows written in time order
        for aid in sorted(self.agents):
            a = self.agents[aid]
            if a["status"] in NOT_REAPED or a["lease_expires"] is None or a["lease_expires"] >= now:
                continue
            mine = [t for t in self.order if self.tasks[t]["owner"] == aid and self.tasks[t]["status"] in ACTIVE]
            self._mut(["agent", {**a, "status": "dead", "current_task": None}])
            self._emit("agent", aid, a["status"], "dead", at, agent=aid, reason="lease expired")
            for t in mine:
                self.requeue(t, f"lease expired: agent {aid}", None, at)
            requeued += mine
        return requeued

    # ================================================================ history
    def record(self, tr: Transition) -> dict | None:
        check_record(tr)
        if tr.key is not None and tr.key in self.keys:
            return None
        frm = self.merges.get(tr.entity_id) if tr.entity == "merge" else None
        return self._emit(tr.entity, tr.entity_id, frm, tr.to_state, self.at(tr.ts_ms), agent=tr.agent,
                          reason=tr.reason, data=tr.data, key=tr.key)  # fmt: skip

    def note(self, entity: str, eid: str, action: str, reason, agent, data, key, now: int) -> dict | None:
        check_note(self.run["id"], entity, eid, action)
        status = (self.task(eid) if entity == "task" else self.agent(eid) if entity == "agent" else self.run)["status"]
        if key is not None and key in self.keys:
            return None
        return self._emit(entity, eid, status, status, self.at(now), agent=agent, reason=reason,
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
