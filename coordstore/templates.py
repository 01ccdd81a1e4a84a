"""Template and snapshot FILES of any format orch reads, and moving them into and out of a store.

Formats, detected from the document (``.gz`` by file name, for every format):

* ``orch-snapshot``  ``{"format": "orch-snapshot", "version": 1, ...}``: one whole run (snapshot.py).
* ``orch-graph``     ``{"format": "orch-graph", "version": 1, "tasks": [...], "dependencies": [...]}``
                     (the ``format``/``version`` keys may be left out): a bare TaskGraph.
* ``task-graph-mcp`` ``{"schema_version": 3, "tables": {...}}`` (tgmcp.py): a TaskGraph.

Every loader validates completely (row types, then ``graph.validate``) before returning, so a
caller that gets a value can hand it to a store; errors are one line naming file and row/field.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from coordstore import graph, snapshot, tgmcp
from coordstore.base import CoordStore
from coordstore.errors import GraphError, InputError, InvalidTransition, UsageError
from coordstore.models import DEP_TYPES, Run, RunDump, TaskGraph
from coordstore.tgmcp_export import to_doc

ORCH_SNAPSHOT = snapshot.FORMAT
ORCH_GRAPH = "orch-graph"
TGMCP = "task-graph-mcp"
GRAPH_VERSION = 1
# what `orch export --format` accepts: orch's own format, or task-graph-mcp's
EXPORT_FORMATS = ("orch", TGMCP)
RUN_SUFFIX_BYTES = 3  # 6 hex digits after the file name: unique enough for runs made by hand


def detect_format(doc: Any, source: str) -> str:
    """``orch-snapshot`` | ``orch-graph`` | ``task-graph-mcp``; InputError when it is none of them."""
    if isinstance(doc, dict):
        fmt = doc.get("format")
        if fmt == ORCH_SNAPSHOT:
            return ORCH_SNAPSHOT
        if fmt == ORCH_GRAPH or (fmt is None and isinstance(doc.get("tasks"), list) and "tables" not in doc):
            return ORCH_GRAPH
        if fmt is None and tgmcp.is_tgmcp_doc(doc):
            return TGMCP
        if fmt is not None:
            raise InputError(f"{source}: unknown format {fmt!r} (known: {ORCH_SNAPSHOT}, {ORCH_GRAPH}, task-graph-mcp)")
    raise InputError(
        f"{source}: not a task graph or snapshot (expected an object with \"format\", \"tasks\" or "
        f"task-graph-mcp's \"schema_version\"/\"tables\")"
    )


def _graph_doc(doc: dict, source: str) -> TaskGraph:
    version = doc.get("version", GRAPH_VERSION)
    if version != GRAPH_VERSION:
        raise InputError(f"{source}: {ORCH_GRAPH} version {version!r} is not supported (this orch reads {GRAPH_VERSION})")
    body = {k: v for k, v in doc.items() if k not in ("format", "version")}
    for i, d in enumerate(body.get("dependencies") or []):
        if isinstance(d, dict) and isinstance(d.get("type"), str) and d["type"] not in DEP_TYPES:
            raise GraphError(f"{source}: dependencies[{i}]: unknown type {d['type']!r} (known: {', '.join(DEP_TYPES)})")
    try:
        g = TaskGraph.model_validate(body)
    except ValidationError as e:
        raise InputError(f"{source}: {snapshot.validation_message(e, body)}") from e
    try:
        graph.validate(g)
    except GraphError as e:
        raise GraphError(f"{source}: {e}") from e
    return g


def parse_document(doc: Any, source: str) -> TaskGraph | RunDump:
    """The validated content of a parsed JSON document of any supported format."""
    fmt = detect_format(doc, source)
    if fmt == ORCH_SNAPSHOT:
        return snapshot.decode(doc, source)
    if fmt == ORCH_GRAPH:
        return _graph_doc(doc, source)
    return tgmcp.to_graph(doc, source)


def load_file(path: str | os.PathLike) -> TaskGraph | RunDump:
    """Read, detect and fully validate a template or snapshot file (RunDump for orch snapshots)."""
    return parse_document(snapshot.read_json(path), str(path))


def graph_of(obj: TaskGraph | RunDump) -> TaskGraph:
    return obj if isinstance(obj, TaskGraph) else TaskGraph(tasks=obj.tasks, dependencies=obj.dependencies)


def load_graph(path: str | os.PathLike) -> TaskGraph:
    """The task graph of any template or snapshot file."""
    return graph_of(load_file(path))


def encode_document(obj: TaskGraph | RunDump, fmt: str = "orch") -> dict[str, Any]:
    """The document to write: ``orch`` gives a snapshot for a run, an orch-graph for a graph."""
    if fmt == TGMCP:
        return to_doc(obj)
    if fmt != "orch":
        raise InputError(f"unknown export format {fmt!r} (known: {', '.join(EXPORT_FORMATS)})")
    if isinstance(obj, RunDump):
        return snapshot.encode(obj)
    doc = obj.model_dump(mode="json")
    doc.update(format=ORCH_GRAPH, version=GRAPH_VERSION)
    return doc


def save_file(path: str | os.PathLike, obj: TaskGraph | RunDump, fmt: str = "orch") -> None:
    """Write atomically in canonical JSON, gzip when the name ends in .gz."""
    snapshot.write_bytes_atomic(path, snapshot.canonical_json(encode_document(obj, fmt)))


# ---------------------------------------------------------------------------- store transfer
def run_id_for(path: str | os.PathLike) -> str:
    """A fresh run id from the file name: ``browser-project-3f9a1c`` for browser-project.json.gz."""
    name = Path(path).name
    for ext in (".gz", ".json"):
        name = name[: -len(ext)] if name.endswith(ext) else name
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "run"
    return f"{stem}-{secrets.token_hex(RUN_SUFFIX_BYTES)}"


def _by_type(deps: list) -> dict[str, int]:
    counts = dict.fromkeys(DEP_TYPES, 0)
    for d in deps:
        counts[d.type] += 1
    return counts


def _renamed(dump: RunDump, run_id: str) -> RunDump:
    return dump.model_copy(update={
        "run": dump.run.model_copy(update={"id": run_id}),
        "history": [t.model_copy(update={"run_id": run_id}) for t in dump.history],
    })


@dataclass(frozen=True)
class Loaded:
    """A file read and validated completely, ready to go into a store."""

    source: str
    format: str
    content: TaskGraph | RunDump


def read_for_import(path: str | os.PathLike) -> Loaded:
    """Read and validate ``path`` without touching any store (import is all or nothing)."""
    source = str(path)
    doc = snapshot.read_json(path)
    fmt = detect_format(doc, source)
    return Loaded(source, fmt, parse_document(doc, source))


def import_file(store: CoordStore, path: str | os.PathLike | Loaded, run_id: str | None = None) -> dict[str, Any]:
    """Load a file (or what ``read_for_import`` returned) into ``store`` as one new run.

    A snapshot recreates its run (``load_run``, under ``run_id`` when given); a template creates
    a run (``run_id``, else one derived from the file name) and adds its graph. Returns the
    summary ``{run, file, format, tasks, dependencies, by_type}``.
    """
    loaded = path if isinstance(path, Loaded) else read_for_import(path)
    obj = loaded.content
    existing = {r.id for r in store.list_runs()}
    if isinstance(obj, RunDump):
        if run_id is not None:
            obj = _renamed(obj, run_id)
        if obj.run.id in existing:
            raise InvalidTransition(f"run {obj.run.id!r} already exists in {store.url}; import it under another id with --run")
        store.load_run(obj)
        rid = obj.run.id
    else:
        rid = run_id or run_id_for(loaded.source)
        if rid in existing:
            raise InvalidTransition(f"run {rid!r} already exists in {store.url}; choose another --run")
        store.create_run(Run(id=rid, config={"template": Path(loaded.source).name}))
        try:
            store.add_graph(rid, obj)
        except Exception as e:  # the run must not look like a good empty run
            store.finish_run(rid, "failed", reason=f"import failed: {e}")
            raise
    return {
        "run": rid, "file": loaded.source, "format": loaded.format, "tasks": len(obj.tasks),
        "dependencies": len(obj.dependencies), "by_type": _by_type(obj.dependencies),
    }


def pick_run(store: CoordStore, run_id: str | None) -> str:
    """``run_id``, or the store's only run; InputError when that is ambiguous or missing."""
    if run_id is not None:
        store.get_run(run_id)  # NotFound names it
        return run_id
    runs = [r.id for r in store.list_runs()]
    if not runs:
        raise InputError(f"store {store.url} holds no runs")
    if len(runs) > 1:
        raise UsageError(f"store {store.url} holds {len(runs)} runs ({', '.join(runs)}); choose one with --run")
    return runs[0]


def export_run(store: CoordStore, path: str | os.PathLike, run_id: str | None = None, fmt: str = "orch") -> dict[str, Any]:
    """Write one run of ``store`` to ``path`` (atomically; gzip for .gz). Returns a summary."""
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"--format: unknown format {fmt!r} (known: {', '.join(EXPORT_FORMATS)})")
    rid = pick_run(store, run_id)
    dump = store.dump_run(rid)
    save_file(path, dump, fmt)
    return {
        "run": rid, "file": str(path), "format": ORCH_SNAPSHOT if fmt == "orch" else TGMCP,
        "tasks": len(dump.tasks), "dependencies": len(dump.dependencies), "by_type": _by_type(dump.dependencies),
        "events": len(dump.events), "history": len(dump.history),
    }
