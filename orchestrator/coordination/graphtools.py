"""Tools that grow the task graph mid-run: ``create``, ``create_tree``, ``link``, ``unlink``.

New tasks are added all or nothing (``store.add_tasks``), their rows naming the caller as author.
A tree node is ``{title, description?, children?, sibling_type?: parallel|sequential, points?,
priority?, tags?, needed_tags?, wanted_tags?, time_estimate_ms?, id?}``; task-graph-mcp's
``join_mode`` (``then`` = sequential, ``also`` = parallel) is read too. Siblings are parallel unless
said otherwise; sequential siblings each follow the one before (``follows`` edges, in order).
"""

from __future__ import annotations

import secrets
from typing import Any

from pydantic import ValidationError

from coordstore.errors import OrchError
from coordstore.models import Dependency, Task

from orchestrator.coordination.args import Args, Call, ToolRefused

NODE_KEYS = ("title", "description", "children", "sibling_type", "join_mode", "points", "priority", "tags",
             "needed_tags", "wanted_tags", "time_estimate_ms", "id")
MAX_NEW = 1000  # tasks one call may add
MAX_DEPTH = 32
START_TYPES = ("blocks", "follows")


def new_id() -> str:
    return f"t-{secrets.token_hex(4)}"


def task_from(a: Args, where: str) -> Task:
    """A new pending task from a node's (or create's) fields; errors name ``where``."""
    title = a.text("title")
    description = a.text("description", default="", empty=True)
    if title is None and not description.strip():
        raise ToolRefused(f"{where}: give a title (or a description)")
    fields = {
        "id": a.text("id") or new_id(), "title": title or description.strip().splitlines()[0][:120],
        "description": description, "priority": a.integer("priority", 5, low=0, high=1_000_000),
        "points": a.number("points", None, low=0.0), "time_estimate_ms": a.integer("time_estimate_ms", None, low=0),
        "tags": a.texts("tags", []), "needed_tags": a.texts("needed_tags", []), "wanted_tags": a.texts("wanted_tags", []),
    }
    try:
        return Task(**fields)
    except ValidationError as e:
        err = e.errors()[0]
        raise ToolRefused(f"{where}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


class GraphTools:
    ctx: Any
    run_id: str
    store: Any

    def _grow(self, c: Call, tasks: list[Task], deps: list[Dependency], parent: str | None) -> list[str]:
        if parent is not None:
            self.task_of(c, "parent")
        added = self.store.add_tasks(self.run_id, tasks, deps, parent=parent, by=c.agent)
        c.data["created"] = [t.id for t in added]
        return c.data["created"]

    def tool_create(self, c: Call) -> dict[str, Any]:
        a = c.args
        t = task_from(Args(c.tool, {k: v for k, v in a.given.items() if k in NODE_KEYS}, NODE_KEYS), c.tool)
        deps = [Dependency(from_id=b, to_id=t.id, type="blocks") for b in a.texts("blocked_by", [])]
        parent = a.text("parent")
        self._grow(c, [t], deps, parent)
        return {"id": t.id, "title": t.title, "status": "pending", "parent": parent, "priority": t.priority}

    def tool_create_tree(self, c: Call) -> dict[str, Any]:
        tree = c.args.given.get("tree")
        if tree is None:
            raise c.args.refuse("tree", "is required")
        roots = tree if isinstance(tree, list) else [tree]
        if not roots:
            raise c.args.refuse("tree", "is an empty list")
        tasks: list[Task] = []
        deps: list[Dependency] = []
        for i, node in enumerate(roots):
            self._node(node, f"tree[{i}]" if isinstance(tree, list) else "tree", None, tasks, deps, 0)
        ids = self._grow(c, tasks, deps, c.args.text("parent"))
        return {"created": ids, "root": ids[0], "count": len(ids)}

    def _node(self, node: Any, where: str, parent: str | None, tasks: list[Task], deps: list[Dependency], depth: int) -> str:
        if not isinstance(node, dict):
            raise ToolRefused(f"create_tree: {where} must be an object with a title, got {type(node).__name__}")
        if "ref" in node:
            raise ToolRefused(f"create_tree: {where}.ref: references to existing tasks are not supported; "
                              f"link them with link() after creating the tree")
        if depth >= MAX_DEPTH:
            raise ToolRefused(f"create_tree: {where}: deeper than {MAX_DEPTH} levels")
        if len(tasks) >= MAX_NEW:
            raise ToolRefused(f"create_tree: more than {MAX_NEW} tasks in one tree")
        a = Args(f"create_tree: {where}", node, NODE_KEYS)
        t = task_from(a, f"create_tree: {where}")
        tasks.append(t)
        if parent is not None:
            deps.append(Dependency(from_id=parent, to_id=t.id, type="contains"))
        mode = a.choice("sibling_type", ("parallel", "sequential"))
        join = a.choice("join_mode", ("then", "also"))
        sequential = mode == "sequential" if mode is not None else join == "then"
        children = node.get("children") or []
        if not isinstance(children, list):
            raise ToolRefused(f"create_tree: {where}.children must be a list of nodes")
        previous = None
        for i, child in enumerate(children):
            cid = self._node(child, f"{where}.children[{i}]", t.id, tasks, deps, depth + 1)
            if sequential and previous is not None:
                deps.append(Dependency(from_id=cid, to_id=previous, type="follows"))  # cid follows previous
            previous = cid
        return t.id

    # ------------------------------------------------------------------ edges
    def _pairs(self, c: Call) -> tuple[list[tuple[str, str]], str]:
        a = c.args
        src = a.texts("from", one_ok=True)
        dst = a.texts("to", one_ok=True)
        if not src:
            raise a.refuse("from", "is required")
        if not dst:
            raise a.refuse("to", "is required")
        kind = a.choice("type", START_TYPES, "blocks")
        if c.tool == "unlink" and (src == ["*"] or dst == ["*"]):
            if src == dst:
                raise c.refuse("'*' may stand for from or for to, not both")
            edges = [(d.from_id, d.to_id) for d in self.store.dependencies(self.run_id) if d.type == kind]
            pairs = [(f, t) for f, t in edges if (src == ["*"] or f in src) and (dst == ["*"] or t in dst)]
            return pairs, kind
        return [(f, t) for f in src for t in dst], kind

    def tool_link(self, c: Call) -> dict[str, Any]:
        return self._edges(c, self.store.link, "linked")

    def tool_unlink(self, c: Call) -> dict[str, Any]:
        return self._edges(c, self.store.unlink, "unlinked")

    def _edges(self, c: Call, verb, done_word: str) -> dict[str, Any]:
        pairs, kind = self._pairs(c)
        done: list[dict[str, str]] = []
        for f, t in pairs:
            try:
                verb(self.run_id, f, t, kind, by=c.agent)
            except OrchError as e:
                before = ", ".join(f"{d['from']} -> {d['to']}" for d in done)
                raise c.refuse(f"{f} -{kind}-> {t}: {e}" + (f"; {done_word} before it: {before}" if done else "")) from e
            done.append({"from": f, "to": t, "type": kind})
        if c.tool == "link":
            c.data["edges"] = len(done)
        return {"success": True, done_word: done, "count": len(done)}
