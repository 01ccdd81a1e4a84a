"""``orch template lint`` and ``orch template show``: what is wrong with a template, and its shape.

Lint never raises on a defective file: every problem is a finding (severity ``error`` = the file
cannot be imported, ``warning`` = it can, but probably not as meant). Codes:

    errors    unreadable, malformed-json, format, schema-version, bad-table, bad-row, bad-field,
              negative-estimate, unknown-dep-type, dangling-edge, dangling-tag-row,
              dangling-attachment, duplicate-id, two-parents, cycle, unsafe-path
    warnings  tag-mismatch (inline tag list vs tag table), priority-int, priority-name,
              follows-direction (the file uses ``follows``), unreachable, unestimated,
              duplicate-edge, empty, scope-overlap

``unreachable``: in a graph that has edges, a task no edge touches (neither a dependency nor a
containment): nothing orders it or groups it, usually a forgotten ``contains``/``blocks`` row.
``unsafe-path``: a ``file_scope`` entry that is absolute, leads out of the repository through
``..`` or into its ``.git`` (``orch run`` refuses such a template before writing anything).
``unestimated``: a work task (not a container) with neither ``time_estimate_ms`` nor ``points``;
it is scheduled with ``graph.DEFAULT_ESTIMATE_MS``.
``scope-overlap``: two work tasks whose ``file_scope`` entries meet (``coordstore.scopes``) and that
may run at the same time (neither waits for the other through the graph): their merges may
conflict. One finding per pair, the first MAX_OVERLAPS of them, then one counting the rest.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from coordstore import graph, scopes, snapshot, templates, tgmcp
from coordstore.errors import InputError
from coordstore.models import DEP_TYPES, Dependency, Run, Task, TaskGraph
from coordstore.tgmcp import Issue

Finding = Issue
MAX_CYCLES = 10  # cycles reported per file; past that the template needs a rethink, not a list
MAX_OVERLAPS = 20  # scope-overlap pairs reported one by one; the rest are counted in one more finding


@dataclass
class LintReport:
    file: str
    format: str | None
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(f.severity == "error" for f in self.findings)

    @property
    def warnings(self) -> int:
        return sum(f.severity == "warning" for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file, "format": self.format, "errors": self.errors, "warnings": self.warnings,
            "findings": [f._asdict() for f in self.findings],
        }


# ---------------------------------------------------------------------------- graph checks
def _edge(d: Dependency) -> str:
    return f"{d.from_id} -{d.type}-> {d.to_id}"


def check_graph(tasks: list[Task], deps: list[Dependency], broken: Collection[str] = frozenset()) -> list[Finding]:
    """Every structural problem of a graph (no exception): ids, edges, cycles, then the warnings.

    ``broken``: ids of task rows already reported unreadable; edges touching them are skipped
    quietly rather than reported again as dangling."""
    out: list[Finding] = []
    if not tasks:
        return [Finding("warning", "empty", "the template has no tasks")]
    by_id: dict[str, Task] = {}
    for t in tasks:
        if t.id in by_id:
            out.append(Finding("error", "duplicate-id", f"task id {t.id!r} appears more than once", t.id))
        else:
            by_id[t.id] = t
    clean: list[Dependency] = []
    parent: dict[str, str] = {}
    seen: set[tuple[str, str, str]] = set()
    for d in deps:
        missing = [e for e in (d.from_id, d.to_id) if e not in by_id]
        if any(e in broken for e in missing):
            continue
        if missing:
            out.append(Finding("error", "dangling-edge", f"dependency {_edge(d)}: no task {missing[0]!r}"))
        elif d.from_id == d.to_id:
            out.append(Finding("error", "cycle", f"{d.from_id} -> {d.from_id} ({d.type} edge to itself)", d.from_id))
        elif (d.from_id, d.to_id, d.type) in seen:
            out.append(Finding("warning", "duplicate-edge", f"dependency {_edge(d)} is listed more than once"))
        elif d.type == "contains" and parent.get(d.to_id, d.from_id) != d.from_id:
            out.append(Finding("error", "two-parents", f"task {d.to_id!r} has two parents: {parent[d.to_id]!r} and {d.from_id!r}", d.to_id))
        else:
            seen.add((d.from_id, d.to_id, d.type))
            if d.type == "contains":
                parent[d.to_id] = d.from_id
            clean.append(d)
    out += [Finding("error", "unsafe-path", msg, tid) for tid, msg in graph.unsafe_scope_entries(tasks)]
    cyclic = _cycles(list(by_id.values()), clean, out)
    if any(d.type == "follows" for d in clean):
        n = sum(d.type == "follows" for d in clean)
        out.append(Finding(
            "warning", "follows-direction",
            f"{n} follows edges: orch reads \"A follows B\" as B completes first (what task-graph-mcp's "
            f"templates mean); task-graph-mcp's own scheduler treats A as the blocker and runs such chains backwards"))
    if cyclic:
        return out
    ix = graph.GraphIndex(by_id.values(), clean)
    if clean:
        touched = {e for d in clean for e in (d.from_id, d.to_id)}
        for tid in ix.order:
            if tid not in touched:
                out.append(Finding("warning", "unreachable", f"task {tid!r} is connected to no other task (no dependency or containment edge)", tid))
    for tid in graph.work_ids(ix):
        t = ix.tasks[tid]
        if t.time_estimate_ms is None and t.points is None:
            out.append(Finding(
                "warning", "unestimated",
                f"task {tid!r} has neither time_estimate_ms nor points (scheduled as {graph.DEFAULT_ESTIMATE_MS} ms)", tid))
    return out + _overlaps(ix)


def _overlaps(ix: graph.GraphIndex) -> list[Finding]:
    pairs, total = scopes.parallel_overlaps(ix, MAX_OVERLAPS)
    out = [Finding("warning", "scope-overlap",
                   f"tasks {a!r} and {b!r} may run in parallel (neither depends on the other) and both touch {entry!r}: "
                   f"their merges may conflict (add a dependency, or run with policy_options.avoid_conflicts)", a)
           for a, b, entry in pairs]
    if total > len(pairs):
        out.append(Finding("warning", "scope-overlap", f"and {total - len(pairs)} more pairs of parallel tasks with overlapping file scopes"))
    return out


def _cycles(tasks: list[Task], deps: list[Dependency], out: list[Finding]) -> bool:
    """Report up to MAX_CYCLES cycles, breaking each at a start edge on it; True if any."""
    deps = list(deps)
    found = False
    for _ in range(MAX_CYCLES):
        ix = graph.GraphIndex(tasks, deps)
        cycle = graph.find_cycle(ix.order, graph.happens_before(ix))
        if not cycle:
            break
        found = True
        out.append(Finding("error", "cycle", " -> ".join(cycle), cycle[0]))
        pairs = set(zip(cycle, cycle[1:]))
        # a pair (u, v) comes from u blocking v or one of v's ancestors, or from v containing u
        keep = [
            d for d in deps
            if not (
                (d.start_edge is not None and any(
                    d.start_edge[0] == u and d.start_edge[1] in (v, *ix.ancestors(v)) for u, v in pairs))
                or (d.type == "contains" and (d.to_id, d.from_id) in pairs)
            )
        ]
        if len(keep) == len(deps):
            break
        deps = keep
    return found


# ---------------------------------------------------------------------------- documents
def _lint_orch(doc: dict, fmt: str) -> list[Finding]:
    out: list[Finding] = []
    if fmt == templates.ORCH_SNAPSHOT and doc.get("version") != snapshot.VERSION:
        out.append(Finding("error", "format", f"orch-snapshot version {doc.get('version')!r} is not supported"))
    if fmt == templates.ORCH_SNAPSHOT:
        try:
            Run.model_validate(doc.get("run"))
        except ValidationError as e:
            out.append(Finding("error", "bad-field", f"run: {snapshot.validation_message(e, doc.get('run'))}"))
    tasks: list[Task] = []
    broken: set[str] = set()
    rows = doc.get("tasks")
    if not isinstance(rows, list):
        return out + [Finding("error", "format", "tasks: missing or not an array")]
    for i, row in enumerate(rows):
        try:
            tasks.append(Task.model_validate(row))
        except ValidationError as e:
            tid = row.get("id") if isinstance(row, dict) and isinstance(row.get("id"), str) else None
            code = "negative-estimate" if e.errors()[0]["loc"][:1] in (("points",), ("time_estimate_ms",)) and e.errors()[0]["type"] == "greater_than_equal" else "bad-field"
            out.append(Finding("error", code, f"tasks[{i}]: {snapshot.validation_message(e, row)}", tid))
            broken.add(tid or "")
    deps: list[Dependency] = []
    drows = doc.get("dependencies") or []
    if not isinstance(drows, list):
        return out + [Finding("error", "format", "dependencies: not an array")]
    for i, row in enumerate(drows):
        if isinstance(row, dict) and isinstance(row.get("type"), str) and row["type"] not in DEP_TYPES:
            out.append(Finding("error", "unknown-dep-type", f"dependencies[{i}]: unknown type {row['type']!r} (known: {', '.join(DEP_TYPES)})"))
            continue
        try:
            deps.append(Dependency.model_validate(row))
        except ValidationError as e:
            out.append(Finding("error", "bad-row", f"dependencies[{i}]: {snapshot.validation_message(e, row)}"))
    return out + check_graph(tasks, deps, broken)


def lint_document(doc: Any, source: str) -> LintReport:
    try:
        fmt = templates.detect_format(doc, source)
    except InputError as e:
        return LintReport(source, None, [Finding("error", "format", str(e).removeprefix(f"{source}: "))])
    if fmt == templates.TGMCP:
        parsed = tgmcp.parse(doc)
        findings = list(parsed.issues)
        if not any(i.code in ("format", "schema-version") for i in findings):
            findings += check_graph(parsed.tasks, parsed.dependencies, parsed.broken)
    else:
        findings = _lint_orch(doc, fmt)
    findings.sort(key=lambda f: f.severity != "error")  # stable: errors first, file order kept
    return LintReport(source, fmt, findings)


def lint_file(path: str | os.PathLike) -> LintReport:
    """Lint one file. Never raises for anything in the file: an unreadable file is a finding."""
    source = str(path)
    try:
        data = snapshot.read_bytes(path)
    except InputError as e:
        return LintReport(source, None, [Finding("error", "unreadable", str(e).removeprefix(f"{source}: "))])
    try:
        doc = snapshot.parse_json(data, source)
    except InputError as e:
        return LintReport(source, None, [Finding("error", "malformed-json", str(e).removeprefix(f"{source}: "))])
    try:
        return lint_document(doc, source)
    except Exception as e:  # a defect in lint itself must still leave the user a finding, not a traceback
        return LintReport(source, None, [Finding("error", "lint-failed", f"lint could not analyse this file: {type(e).__name__}: {e}")])


# ---------------------------------------------------------------------------- show
def show(g: TaskGraph) -> dict[str, Any]:
    """The shape of a valid graph: counts, depth, ready-at-start, estimates, critical path."""
    ix = graph.validate(g)
    work = graph.work_ids(ix)
    status = {t.id: t.status for t in g.tasks}
    by_type = dict.fromkeys(DEP_TYPES, 0)
    for d in g.dependencies:
        by_type[d.type] += 1
    total = sum(graph.estimate_ms(ix.tasks[t]) for t in work)
    length, path = graph.critical_path(ix)
    # depth: the most work tasks any chain of start-blocking edges holds (every task counted as 1)
    depth = int(max(graph.tail_lengths(ix, dict.fromkeys(work, 1.0)).values(), default=0))
    nesting = max((len(ix.ancestors(t)) for t in ix.order), default=0)
    return {
        "tasks": len(g.tasks),
        "work_tasks": len(work),
        "containers": len(g.tasks) - len(work),
        "dependencies": len(g.dependencies),
        "by_type": by_type,
        "depth": depth,
        "nesting": nesting,
        "ready_at_start": sum(graph.is_ready(t, ix, status) for t in work),
        "total_estimate_ms": total,
        "unestimated": sum(ix.tasks[t].time_estimate_ms is None and ix.tasks[t].points is None for t in work),
        "critical_path": {"length_ms": length, "tasks": path},
        "parallelism_ceiling": round(total / length, 2) if length else None,
    }


def show_file(path: str | os.PathLike) -> dict[str, Any]:
    """``show`` of a template or snapshot file; InputError/GraphError when it is not valid."""
    source = str(path)
    doc = snapshot.read_json(path)
    fmt = templates.detect_format(doc, source)
    info = show(templates.graph_of(templates.parse_document(doc, source)))
    return {"file": source, "format": fmt, **info}
