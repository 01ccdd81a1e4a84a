"""The run as the coordination tools see it, kept current by reading only the history rows written
since the last look, so a tool call does not load the whole run.

The history holds every change the tools need to know of: each task's status (every state change
writes a task row in the same transaction), tasks added mid-run (their first row comes from None),
edges linked or unlinked (a note on the task the edge constrains) and attachments (a note on their
task). The graph's structure is rebuilt only when it grew; statuses and attachments are updated
row by row. Task rows carry no owner or priority: callers read those from the store, for the few
tasks they return.
"""

from __future__ import annotations

import threading
from typing import Any

from coordstore.graph import GraphIndex
from coordstore.growth import LINKED, UNLINKED

ATTACH = "attach"  # data.action of the task note an attachment is kept in
RESHAPING = frozenset({LINKED, UNLINKED})


class RunView:
    def __init__(self, store, run_id: str):
        self.run_id = run_id
        self._mutex = threading.Lock()
        rows = store.history(run_id)  # once: statuses after these rows are re-applied by the first look
        self._seq = rows[-1].seq if rows else 0
        self._status = {}
        self._ix = self._index(store)
        self._status = {t.id: t.status for t in self._ix.tasks.values()}
        self._attachments: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            self._attach(r)

    def look(self, store) -> tuple[GraphIndex, dict[str, str]]:
        """The graph (rebuilt if it grew) and every task's status as of now."""
        with self._mutex:
            rows = store.history(self.run_id, since_seq=self._seq)
            grew = False
            for r in rows:
                self._seq = r.seq
                if r.entity != "task":
                    continue
                self._status[r.entity_id] = r.to_state
                grew |= r.from_state is None or (r.is_note and (r.data or {}).get("action") in RESHAPING)
                self._attach(r)
            if grew:
                self._ix = self._index(store)
            return self._ix, dict(self._status)

    def _index(self, store) -> GraphIndex:
        """Edges first, then tasks: tasks are only ever added, so every edge read names a task read
        after it (the other order can meet an edge to a task added in between)."""
        edges = store.dependencies(self.run_id)
        return GraphIndex(store.list_tasks(self.run_id), edges)

    def attachments(self, store, task_id: str) -> list[dict[str, Any]]:
        """The task's attachments in the order they were attached (copies: callers may trim them)."""
        self.look(store)
        with self._mutex:
            return [dict(a) for a in self._attachments.get(task_id, ())]

    def _attach(self, r) -> None:
        if r.entity == "task" and r.is_note and (r.data or {}).get("action") == ATTACH:
            content = r.data.get("content", "")
            self._attachments.setdefault(r.entity_id, []).append(
                {"name": r.data.get("name"), "mime": r.data.get("mime"), "size": len(content.encode()),
                 "by": r.agent, "ts_ms": r.ts_ms, "content": content})
