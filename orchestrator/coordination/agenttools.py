"""Tools by which an agent says something about itself or a task, changing no task's status:
``connect``, ``disconnect``, ``heartbeat``, ``thinking``, ``attach``, ``log_metrics``."""

from __future__ import annotations

from typing import Any

from coordstore.errors import NotFound
from coordstore.models import METRIC_FIELDS, Agent

from agents.config import LEASE_MS

from orchestrator.coordination.args import Call
from orchestrator.coordination.follow import ATTACH

MAX_ATTACHMENT = 256 * 1024  # bytes of one attachment's content (kept in the history)
MAX_THOUGHT = 16 * 1024  # bytes of one thought
METRIC_SLOTS = len(METRIC_FIELDS)  # task-graph-mcp's metric_0..metric_7: in, out, cached, thinking, image, audio, free, free


class AgentTools:
    ctx: Any
    run_id: str
    store: Any

    def _lease_ms(self) -> int:
        return int(self.ctx.spec.supervision.get("lease_ms", LEASE_MS))

    def _registered(self, c: Call) -> None:
        """The caller as an agent of the store (an agent started by hand may not be yet)."""
        try:
            self.store.get_agent(self.run_id, c.agent)
        except NotFound:
            a = self.ctx.agents[c.agent]
            self.store.register_agent(self.run_id, Agent(id=a.id, kind=a.kind, role=a.role, tags=a.tags or []),
                                      lease_ms=self._lease_ms())

    def _note(self, c: Call, action: str, data: dict[str, Any]) -> None:
        try:
            self.store.note(self.run_id, "agent", c.agent, action, agent=c.agent, data=data)
        except NotFound:
            raise c.refuse(f"agent {c.agent!r} is not registered in run {self.run_id}; call connect first") from None

    def tool_connect(self, c: Call) -> dict[str, Any]:
        a, spec = self.ctx.agents[c.agent], self.ctx.spec
        workflow = c.args.text("workflow") or spec.policy
        asked = c.args.texts("tags")
        c.args.flag("force")  # task-graph-mcp's reconnect flag: a token's agent may always connect again
        self._registered(c)
        self._note(c, "connected", {"workflow": workflow, **({"tags": asked} if asked is not None else {})})
        out = {"agent_id": c.agent, "worker_id": c.agent, "role": a.role, "tags": a.tags, "workflow": workflow,
               "instruction": a.instruction, "run": self.run_id, "coordination": spec.coordination}
        if asked is not None and sorted(asked) != sorted(a.tags or []):
            out["note"] = "tags come from the experiment; the ones given to connect are recorded, not used"
        return out

    def tool_disconnect(self, c: Call) -> dict[str, Any]:
        self._note(c, "disconnected", {})
        return {"ok": True, "success": True}

    def tool_heartbeat(self, c: Call) -> dict[str, Any]:
        working = self.store.list_tasks(self.run_id, status="working", owner=c.agent)
        try:
            a = self.store.heartbeat(self.run_id, c.agent, self._lease_ms(), current_task=working[0].id if working else None)
        except NotFound:
            raise c.refuse(f"agent {c.agent!r} is not registered in run {self.run_id}; call connect first") from None
        return {"ok": True, "lease_expires": a.lease_expires}

    def tool_thinking(self, c: Call) -> dict[str, Any]:
        thought = c.args.text("thought", required=True)
        if len(thought.encode()) > MAX_THOUGHT:
            raise c.args.refuse("thought", f"is longer than {MAX_THOUGHT} bytes")
        tasks = c.args.texts("tasks")
        self._note(c, "thinking", {"thought": thought, **({"tasks": tasks} if tasks else {})})
        return {"ok": True, "success": True}

    def tool_attach(self, c: Call) -> dict[str, Any]:
        t = self.task_of(c)
        name = c.args.text("name", required=True)
        content = c.args.text("content", default="", empty=True)
        mime = c.args.text("mime") or "text/plain"
        size = len(content.encode())
        if size > MAX_ATTACHMENT:
            raise c.args.refuse("content", f"is {size} bytes; an attachment holds at most {MAX_ATTACHMENT}")
        self.store.note(self.run_id, "task", t.id, ATTACH, agent=c.agent, data={"name": name, "mime": mime, "content": content})
        return {"task_id": t.id, "name": name, "mime": mime, "size": size}

    def tool_log_metrics(self, c: Call) -> dict[str, Any]:
        t = self.task_of(c)
        cost = c.args.number("cost_usd", 0.0, low=0.0)
        values = c.args.given.get("values", [])
        if not isinstance(values, list) or len(values) > METRIC_SLOTS or \
                not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            raise c.args.refuse("values", f"must be a list of at most {METRIC_SLOTS} non-negative integers, got {values!r}")
        slots = list(values) + [0] * (METRIC_SLOTS - len(values))
        self.store.add_usage(self.run_id, t.id, cost_usd=cost, **dict(zip(METRIC_FIELDS, slots)))
        c.data["metrics"] = slots
        c.data["cost_usd"] = cost
        return {"success": True, "task": t.id, "cost_usd": cost, "metrics": slots}
