"""Tools that look and change nothing: ``list_agents``, ``list_tasks``, ``get``, ``attachments``."""

from __future__ import annotations

from typing import Any

from coordstore.graph import is_ready, tags_fit
from coordstore.models import ACTIVE, TASK_STATUSES

from orchestrator.coordination.args import Call
from orchestrator.coordination.views import attachments_of, detail, graph_of, summary


class ReadTools:
    ctx: Any
    run_id: str
    store: Any

    def tool_list_agents(self, c: Call) -> list[dict[str, Any]]:
        want = set(c.args.texts("tags") or ())
        stored = {a.id: a for a in self.store.list_agents(self.run_id)}
        owned: dict[str, list[str]] = {}
        for t in self.store.list_tasks(self.run_id, status=sorted(ACTIVE)):
            owned.setdefault(t.owner, []).append(t.id)
        out = []
        for a in self.ctx.spec.agents:
            if want and not want <= set(a.tags or ()):
                continue
            s = stored.get(a.id)
            out.append({"id": a.id, "role": a.role, "tags": a.tags, "status": s.status if s else "unregistered",
                        "current_task": s.current_task if s else None, "tasks": owned.get(a.id, [])})
        return out

    def tool_list_tasks(self, c: Call) -> list[dict[str, Any]]:
        a = c.args
        status = a.texts("status", one_ok=True)
        for s in status or ():
            if s not in TASK_STATUSES:
                raise c.refuse(f"status {s!r} is not one of {', '.join(TASK_STATUSES)}")
        ready = a.flag("ready") if a.has("ready") else None
        owner, parent = a.text("owner"), a.text("parent")
        tags_all, tags_any = set(a.texts("tags") or ()), set(a.texts("tags_any") or ())
        fit_for = a.text("agent")
        if fit_for is not None and fit_for not in self.ctx.agents:
            raise c.refuse(f"agent {fit_for!r} is not an agent of run {self.run_id}")
        limit = a.integer("limit", low=1, high=100_000)
        ix, st = graph_of(self.store, self.run_id)
        if parent is not None and parent != "null" and parent not in st:
            raise c.refuse(f"parent {parent!r} does not exist in run {self.run_id}")
        out = []
        for tid in ix.order:
            t = ix.tasks[tid]
            if status is not None and t.status not in status:
                continue
            if owner is not None and t.owner != owner:
                continue
            if parent is not None and ix.parent.get(tid) != (None if parent == "null" else parent):
                continue
            if ready is not None and is_ready(tid, ix, st) != ready:
                continue
            every = set(t.tags) | set(t.needed_tags) | set(t.wanted_tags)
            if not tags_all <= every or (tags_any and not tags_any & every):
                continue
            if fit_for is not None and not tags_fit(t, self.ctx.agents[fit_for].tags):
                continue
            out.append(summary(t, ix, st))
            if limit is not None and len(out) >= limit:
                break
        return out

    def tool_get(self, c: Call) -> dict[str, Any]:
        t = self.task_of(c)
        ix, st = graph_of(self.store, self.run_id)
        t = ix.tasks.get(t.id, t)
        names = [x["name"] for x in attachments_of(self.store, self.run_id, t.id)]
        return detail(t, ix, st, names)

    def tool_attachments(self, c: Call) -> list[dict[str, Any]]:
        t = self.task_of(c)
        with_content = c.args.flag("content")
        name = c.args.text("name")
        out = [x for x in attachments_of(self.store, self.run_id, t.id) if name is None or x["name"] == name]
        if not with_content:
            for x in out:
                del x["content"]
        return out
