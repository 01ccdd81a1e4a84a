"""task-graph-mcp's snapshot format (``schema_version`` 3), read and written.

    {"schema_version": 3, "export_version": "1.0.0", "exported_at": ..., "exported_by": ...,
     "tables": {"tasks": [...], "dependencies": [...], "task_tags": [...], "task_needed_tags": [...],
                "task_wanted_tags": [...], "attachments": [...], "task_sequence": [...]}}

Reading (``parse`` collects every problem as an ``Issue``; ``to_graph`` raises the first error):

* ``priority``: an int, a numeric string ("7"), or a name (``PRIORITY_NAMES``). task-graph-mcp
  itself has no names: its ``parse_priority`` reads ``s.parse().unwrap_or(5).clamp(0, 10)`` (0-10,
  higher first, default 5), so a name means 5 there; orch maps the common names onto that scale.
* tag lists (``tags``/``needed_tags``/``wanted_tags``): arrays or JSON strings of arrays. The tag
  tables add to them: a task's tags are the union (``parse`` reports disagreements).
* ``metrics``: the 8-slot array (0 input tokens, 1 output, 2 cached, 3 thinking, 4 image, 5 audio,
  6-7 free; ``models.METRIC_FIELDS``), or the ``metric_0``..``metric_7`` columns task-graph-mcp's
  importer reads.
* dependency rows ``{from_task_id, to_task_id, dep_type}``; ``follows`` reads "from follows to"
  (to runs first), as the templates mean it (see models.Dependency).
* orch extensions on a task row, ignored by task-graph-mcp's importer (it reads named columns
  only): ``file_scope`` (array or JSON string of paths) and ``orch_meta`` (object -> Task.meta).
* ``attachments`` rows are kept in ``Task.meta["tgmcp_attachments"]`` and written back on export;
  ``task_sequence`` (that tool's own status history) is not imported.

Writing is ``tgmcp_export.to_doc``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pydantic import ValidationError

from coordstore import graph
from coordstore.errors import GraphError, InputError
from coordstore.numbers import is_number
from coordstore.models import DEP_TYPES, METRIC_FIELDS, Dependency, Task, TaskGraph

SCHEMA_VERSION = 3
EXPORT_VERSION = "1.0.0"
TABLES = ("tasks", "dependencies", "task_tags", "task_needed_tags", "task_wanted_tags", "attachments", "task_sequence")
TAG_TABLES = {"tags": "task_tags", "needed_tags": "task_needed_tags", "wanted_tags": "task_wanted_tags"}
DEFAULT_PRIORITY = 5  # task-graph-mcp's PRIORITY_DEFAULT
# Named priorities on task-graph-mcp's 0-10 scale: medium is its default, critical its ceiling.
PRIORITY_NAMES = {"lowest": 0, "low": 2, "medium": 5, "normal": 5, "high": 8, "critical": 10}
# task-graph-mcp states (its defaults plus common spellings) -> orch statuses
STATUS_IN = {
    "pending": "pending", "ready": "pending", "assigned": "assigned", "claimed": "assigned",
    "in_progress": "working", "working": "working", "completed": "completed", "done": "completed",
    "failed": "failed", "cancelled": "cancelled", "canceled": "cancelled",
}
STATUS_OUT = {
    "pending": "pending", "assigned": "in_progress", "working": "in_progress",
    "completed": "completed", "failed": "failed", "cancelled": "cancelled",
}
EXT_FILE_SCOPE = "file_scope"
EXT_META = "orch_meta"
ATTACHMENTS_META = "tgmcp_attachments"


class Issue(NamedTuple):
    """One problem found in a template: ``severity`` is ``error`` (unusable) or ``warning``."""

    severity: str
    code: str
    message: str
    task: str | None = None


@dataclass
class Parsed:
    """What ``parse`` could read: the good rows, and every problem met on the way."""

    tasks: list[Task] = field(default_factory=list)
    dependencies: list[Dependency] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    broken: set[str] = field(default_factory=set)  # ids of task rows that could not be read


class _Bad(Exception):
    """A bad field inside one row; ``code`` is the lint code."""

    def __init__(self, message: str, code: str = "bad-field"):
        super().__init__(message)
        self.code = code


def is_tgmcp_doc(doc: Any) -> bool:
    return isinstance(doc, dict) and ("tables" in doc or "schema_version" in doc) and "format" not in doc


# ---------------------------------------------------------------------------- field readers
def _show(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def _int(v: Any, name: str, minimum: int | None = None, code: str = "bad-field") -> int | None:
    if v is None:
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise _Bad(f"{name}: expected an integer, got {_show(v)}")
    if minimum is not None and v < minimum:
        raise _Bad(f"{name}: must be >= {minimum}, got {v}", code)
    return v


def _number(v: Any, name: str, minimum: float | None = None, code: str = "bad-field") -> float | None:
    if v is None:
        return None
    if not is_number(v):
        raise _Bad(f"{name}: expected a number, got {_show(v)}")
    if minimum is not None and v < minimum:
        raise _Bad(f"{name}: must be >= {minimum:g}, got {v}", code)
    return v


def _str(v: Any, name: str, default: str | None = None) -> str | None:
    if v is None:
        return default
    if not isinstance(v, str):
        raise _Bad(f"{name}: expected a string, got {_show(v)}")
    return v


def _str_list(v: Any, name: str) -> tuple[list[str], bool]:
    """A list of strings from an array or a JSON string; also whether it was an array."""
    if v is None:
        return [], False
    was_array = isinstance(v, list)
    if isinstance(v, str):
        try:
            v = json.loads(v) if v.strip() else []
        except json.JSONDecodeError as e:
            raise _Bad(f"{name}: not a JSON array string ({e.msg}): {_show(v)}") from e
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _Bad(f"{name}: expected an array of strings, got {_show(v)}")
    return v, was_array


def _priority(v: Any) -> tuple[int, str]:
    """(priority, kind) with kind int | numeric-string | name | default."""
    if v is None:
        return DEFAULT_PRIORITY, "default"
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, int) and not isinstance(v, bool):
        return v, "int"
    if isinstance(v, str):
        s = v.strip()
        try:
            return int(s), "numeric-string"
        except ValueError:
            pass
        if s.lower() in PRIORITY_NAMES:
            return PRIORITY_NAMES[s.lower()], "name"
        known = "|".join(PRIORITY_NAMES)
        raise _Bad(f"priority: unknown name {v!r} (use an integer 0-10 or {known})")
    raise _Bad(f"priority: expected an integer or a numeric string, got {_show(v)}")


def _metrics(row: dict) -> list[int]:
    if row.get("metrics") is not None:
        m = row["metrics"]
        if not isinstance(m, list) or len(m) != 8:
            raise _Bad(f"metrics: expected an array of 8 integers, got {_show(m)}")
        return [_int(x, f"metrics[{i}]") or 0 for i, x in enumerate(m)]
    return [_int(row.get(f"metric_{i}"), f"metric_{i}") or 0 for i in range(8)]


def _where(table: str, i: int, row: Any) -> str:
    rid = row.get("id") if isinstance(row, dict) else None
    return f"tables.{table}[{i}]" + (f" (id {rid!r})" if isinstance(rid, str) else "")


# ---------------------------------------------------------------------------- reading
def _task_from_row(row: dict, prio_kinds: dict[str, list[str]]) -> tuple[Task, dict[str, tuple[list[str], bool]]]:
    tid = row.get("id")
    if not isinstance(tid, str) or not tid:
        raise _Bad(f"id: expected a non-empty string, got {_show(tid)}")
    status_raw = _str(row.get("status"), "status", "pending")
    if status_raw not in STATUS_IN:
        raise _Bad(f"status: unknown status {status_raw!r} (known: {', '.join(STATUS_IN)})")
    priority, kind = _priority(row.get("priority"))
    prio_kinds.setdefault(kind, []).append(tid)
    inline = {k: _str_list(row.get(k), k) for k in TAG_TABLES}
    file_scope, _ = _str_list(row.get(EXT_FILE_SCOPE), EXT_FILE_SCOPE)
    meta = row.get(EXT_META) or {}
    if not isinstance(meta, dict):
        raise _Bad(f"{EXT_META}: expected an object, got {_show(meta)}")
    m = _metrics(row)
    try:
        task = Task(
            id=tid,
            title=_str(row.get("title"), "title", ""),
            description=_str(row.get("description"), "description", ""),
            priority=priority,
            points=_number(row.get("points"), "points", 0, "negative-estimate"),
            time_estimate_ms=_int(row.get("time_estimate_ms"), "time_estimate_ms", 0, "negative-estimate"),
            phase=_str(row.get("phase"), "phase"),
            file_scope=file_scope,
            meta=dict(meta),
            status=STATUS_IN[status_raw],
            owner=_str(row.get("worker_id"), "worker_id"),
            claimed_at=_int(row.get("claimed_at"), "claimed_at"),
            started_at=_int(row.get("started_at"), "started_at"),
            completed_at=_int(row.get("completed_at"), "completed_at"),
            created_at=_int(row.get("created_at"), "created_at"),
            updated_at=_int(row.get("updated_at"), "updated_at"),
            **dict(zip(METRIC_FIELDS, m)),
            cost_usd=_number(row.get("cost_usd"), "cost_usd", 0) or 0.0,
            **{k: v for k, (v, _) in inline.items()},
        )
    except ValidationError as e:
        err = e.errors()[0]
        raise _Bad(f"{'.'.join(map(str, err['loc'])) or 'row'}: {err['msg']}") from e
    return task, inline


def _table(doc: dict, name: str, out: Parsed) -> list:
    rows = doc["tables"].get(name)
    if rows is None:
        return []
    if not isinstance(rows, list):
        out.issues.append(Issue("error", "bad-table", f"tables.{name}: expected an array of rows, got {_show(rows)}"))
        return []
    return rows


def parse(doc: Any) -> Parsed:
    """Read everything readable; every problem becomes an Issue (nothing raises)."""
    out = Parsed()
    if not isinstance(doc, dict):
        out.issues.append(Issue("error", "format", f"expected a JSON object, got {type(doc).__name__}"))
        return out
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION:
        out.issues.append(Issue("error", "schema-version", f"schema_version {version!r} is not supported (orch reads {SCHEMA_VERSION})"))
        return out
    if not isinstance(doc.get("tables"), dict):
        out.issues.append(Issue("error", "format", "tables: missing or not an object"))
        return out
    if "tasks" not in doc["tables"]:
        out.issues.append(Issue("error", "format", "tables.tasks: missing"))

    prio_kinds: dict[str, list[str]] = {}
    inline: dict[str, dict[str, tuple[list[str], bool]]] = {}
    by_id: dict[str, Task] = {}
    for i, row in enumerate(_table(doc, "tasks", out)):
        where = _where("tasks", i, row)
        if not isinstance(row, dict):
            out.issues.append(Issue("error", "bad-row", f"{where}: expected an object, got {_show(row)}"))
            continue
        try:
            task, lists = _task_from_row(row, prio_kinds)
        except _Bad as e:
            tid = row.get("id") if isinstance(row.get("id"), str) else None
            out.issues.append(Issue("error", e.code, f"{where}: {e}", tid))
            out.broken.add(tid or "")
            continue
        out.tasks.append(task)
        if task.id not in by_id:  # duplicates are reported by the graph checks
            by_id[task.id] = task
            inline[task.id] = lists

    for i, row in enumerate(_table(doc, "dependencies", out)):
        where = f"tables.dependencies[{i}]"
        try:
            if not isinstance(row, dict):
                raise _Bad(f"expected an object, got {_show(row)}", "bad-row")
            src = _str(row.get("from_task_id"), "from_task_id")
            dst = _str(row.get("to_task_id"), "to_task_id")
            typ = _str(row.get("dep_type"), "dep_type")
            if not src or not dst or not typ:
                raise _Bad("from_task_id, to_task_id and dep_type are all required")
            if typ not in DEP_TYPES:
                raise _Bad(f"unknown dep_type {typ!r} in {src} -> {dst} (known: {', '.join(DEP_TYPES)})", "unknown-dep-type")
        except _Bad as e:
            out.issues.append(Issue("error", e.code, f"{where}: {e}"))
            continue
        out.dependencies.append(Dependency(from_id=src, to_id=dst, type=typ))

    _read_tag_tables(doc, out, by_id, inline)
    _read_attachments(doc, out, by_id)
    _priority_issues(prio_kinds, out)
    return out


def _read_tag_tables(doc: dict, out: Parsed, by_id: dict[str, Task], inline: dict) -> None:
    """Add table tags to the tasks (union); one tag-mismatch warning per task that disagrees."""
    disagree: dict[str, list[str]] = {}
    for kind, table in TAG_TABLES.items():
        from_table: dict[str, set[str]] = {}
        rows = _table(doc, table, out)
        for i, row in enumerate(rows):
            where = f"tables.{table}[{i}]"
            if not isinstance(row, dict) or not isinstance(row.get("task_id"), str) or not isinstance(row.get("tag"), str):
                out.issues.append(Issue("error", "bad-row", f"{where}: expected {{task_id, tag}} strings, got {_show(row)}"))
                continue
            if row["task_id"] not in by_id:
                if row["task_id"] not in out.broken:  # rows of an unreadable task: already reported
                    out.issues.append(Issue("error", "dangling-tag-row", f"{where}: no task {row['task_id']!r}"))
                continue
            from_table.setdefault(row["task_id"], set()).add(row["tag"])
        arrays_without_rows = []
        for tid, task in by_id.items():
            listed, was_array = inline[tid][kind]
            tabled = from_table.get(tid, set())
            if rows and set(listed) != tabled:
                disagree.setdefault(tid, []).append(f"{kind} {sorted(set(listed))} vs {table} {sorted(tabled)}")
            elif not rows and listed and was_array:
                arrays_without_rows.append(tid)
            if tabled - set(listed):
                setattr(task, kind, sorted(set(getattr(task, kind)) | tabled))
        if arrays_without_rows:
            out.issues.append(Issue(
                "warning", "tag-mismatch",
                f"{len(arrays_without_rows)} tasks list {kind} inline as arrays but table {table} is empty; "
                f"task-graph-mcp's importer reads only JSON strings there, so it would lose them "
                f"(first: {', '.join(arrays_without_rows[:3])})"))
    for tid, what in disagree.items():
        out.issues.append(Issue(
            "warning", "tag-mismatch",
            f"task {tid!r}: inline tags disagree with the tag tables ({'; '.join(what)}); orch uses the union", tid))


def _read_attachments(doc: dict, out: Parsed, by_id: dict[str, Task]) -> None:
    for i, row in enumerate(_table(doc, "attachments", out)):
        where = f"tables.attachments[{i}]"
        if not isinstance(row, dict) or not isinstance(row.get("task_id"), str):
            out.issues.append(Issue("error", "bad-row", f"{where}: expected an object with a task_id string"))
            continue
        task = by_id.get(row["task_id"])
        if task is None:
            if row["task_id"] not in out.broken:
                out.issues.append(Issue("error", "dangling-attachment", f"{where}: no task {row['task_id']!r}"))
            continue
        kept = {k: v for k, v in row.items() if k != "task_id"}
        task.meta.setdefault(ATTACHMENTS_META, []).append(kept)


def _priority_issues(kinds: dict[str, list[str]], out: Parsed) -> None:
    ints, strings, names = kinds.get("int", []), kinds.get("numeric-string", []), kinds.get("name", [])
    if ints:
        mixed = " (mixed with string priorities)" if strings or names else ""
        out.issues.append(Issue(
            "warning", "priority-int",
            f"{len(ints)} tasks have integer priorities{mixed}; task-graph-mcp's importer expects strings "
            f"(\"5\") and refuses integers; orch reads both (first: {', '.join(ints[:3])})"))
    if names:
        out.issues.append(Issue(
            "warning", "priority-name",
            f"{len(names)} tasks use named priorities, read by orch as "
            f"{', '.join(f'{k}={v}' for k, v in PRIORITY_NAMES.items())}; task-graph-mcp reads any "
            f"non-numeric priority as {DEFAULT_PRIORITY} (first: {', '.join(names[:3])})"))


def to_graph(doc: Any, source: str) -> TaskGraph:
    """The validated graph of a task-graph-mcp document; the first error raises, naming file and row."""
    parsed = parse(doc)
    for issue in parsed.issues:
        if issue.severity == "error":
            cls = InputError if issue.code in ("format", "schema-version", "bad-table") else GraphError
            raise cls(f"{source}: {issue.message}")
    g = TaskGraph(tasks=parsed.tasks, dependencies=parsed.dependencies)
    try:
        graph.validate(g)
    except GraphError as e:
        raise GraphError(f"{source}: {e}") from e
    return g
