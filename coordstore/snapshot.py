"""orch's own snapshot format: one run, everything the store holds about it, as canonical JSON.

    {"format": "orch-snapshot", "version": 1, "run": {...}, "tasks": [...], "dependencies": [...],
     "agents": [...], "events": [...], "history": [...]}

The body is a ``RunDump`` (models.py) dumped field by field. Canonical means: sorted keys, fixed
indentation and separators, UTF-8, one trailing newline, and lists in a fixed order (tasks and
dependencies as the store gives them, i.e. template/import order; agents by id; events by agent and
seq; history by seq). So export -> import -> export is byte-identical. A file whose name ends in
``.gz`` is gzip-compressed with header mtime 0 and no file name, so it is byte-stable too.

This module also holds the file primitives the other formats share (templates.py, tgmcp.py):
reading with gunzip by extension, atomic writing (temp file + rename), strict JSON parsing.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import zlib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from coordstore import graph
from coordstore.errors import GraphError, InputError
from coordstore.files import read_file
from coordstore.models import RunDump, TaskGraph
from coordstore.private import write_private

FORMAT = "orch-snapshot"
VERSION = 1
# gzip level 9: snapshots are written once per run and read rarely; smallest output wins.
GZIP_LEVEL = 9


# ---------------------------------------------------------------------------- file primitives
def is_gzip_name(path: str | os.PathLike) -> bool:
    return str(path).endswith(".gz")


def canonical_json(doc: Any) -> bytes:
    """The one serialization of every file orch writes: deterministic bytes for equal documents."""
    try:
        text = json.dumps(doc, sort_keys=True, indent=2, separators=(",", ": "), ensure_ascii=False, allow_nan=False)
    except ValueError as e:  # NaN/inf are not JSON; refuse rather than write an unreadable file
        raise InputError(f"cannot write JSON: {e}") from e
    return (text + "\n").encode("utf-8")


def gzip_bytes(data: bytes) -> bytes:
    """gzip with mtime 0 and no embedded file name, so equal input gives equal bytes."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=GZIP_LEVEL, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` (gzipped when the name ends in .gz) atomically with ``private.write_private``:
    readers see the old file or the new one, never half of one. A missing directory or a failed
    write is one ``InputError`` naming the file."""
    path = Path(path)
    if is_gzip_name(path):
        data = gzip_bytes(data)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{path}: directory {str(parent)!r} does not exist")
    try:
        write_private(path, data)
    except OSError as e:
        raise InputError(f"{path}: cannot write: {e.strerror or e}") from e


def read_bytes(path: str | os.PathLike) -> bytes:
    """The file's content, gunzipped when the name ends in .gz. InputError names the file."""
    p = Path(path)
    data = read_file(p)
    if is_gzip_name(p):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise InputError(f"{path}: not a valid gzip file ({e})") from e
    return data


def decode_text(data: bytes, source: str) -> str:
    """The bytes as UTF-8 text (a BOM dropped); a binary file is one InputError naming it."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{source}: not a text file (not UTF-8 at byte {e.start})") from e


def read_text(path: str | os.PathLike) -> str:
    """A text file's content (gunzipped for .gz); missing, unreadable or binary: InputError naming it."""
    return decode_text(read_bytes(path), str(path))


def parse_json(data: bytes, source: str) -> Any:
    """Strict JSON (no NaN); a malformed file is one InputError naming file, line and column."""
    text = decode_text(data, source)

    def _no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        return json.loads(text, parse_constant=_no_constants)
    except json.JSONDecodeError as e:
        raise InputError(f"{source}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
    except ValueError as e:
        raise InputError(f"{source}: malformed JSON: {e}") from e


def read_json(path: str | os.PathLike) -> Any:
    return parse_json(read_bytes(path), str(path))


def validation_message(err: ValidationError, doc: Any = None) -> str:
    """The first pydantic error as ``tasks[3] (id 'x').priority: <message>`` (+ how many more)."""
    first = err.errors()[0]
    parts: list[str] = []
    node = doc
    for key in first["loc"]:
        if isinstance(key, int):
            label = f"[{key}]"
            if isinstance(node, list) and 0 <= key < len(node):
                node = node[key]
                if isinstance(node, dict) and isinstance(node.get("id"), str):
                    label += f" (id {node['id']!r})"
            else:
                node = None
            parts.append(label)
        else:
            node = node.get(key) if isinstance(node, dict) else None
            parts.append(("." if parts else "") + str(key))
    where = "".join(parts) or "document"
    more = len(err.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{where}: {first['msg']}{tail}"


# ---------------------------------------------------------------------------- the format
def encode(dump: RunDump) -> dict[str, Any]:
    """The snapshot document of ``dump``, lists in canonical order."""
    doc = dump.model_dump(mode="json")
    doc["agents"].sort(key=lambda a: a["id"])
    doc["events"].sort(key=lambda e: (e["agent"], e["seq"]))
    doc["history"].sort(key=lambda t: t["seq"])
    doc["format"] = FORMAT
    doc["version"] = VERSION
    return doc


def is_snapshot_doc(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("format") == FORMAT


def decode(doc: Any, source: str) -> RunDump:
    """A validated RunDump from a snapshot document; InputError/GraphError name file and field."""
    if not is_snapshot_doc(doc):
        raise InputError(f"{source}: not an orch snapshot (no \"format\": \"{FORMAT}\")")
    version = doc.get("version")
    if version != VERSION:
        raise InputError(f"{source}: orch-snapshot version {version!r} is not supported (this orch reads {VERSION})")
    body = {k: v for k, v in doc.items() if k not in ("format", "version")}
    try:
        dump = RunDump.model_validate(body)
    except ValidationError as e:
        raise InputError(f"{source}: {validation_message(e, body)}") from e
    for i, t in enumerate(dump.history):
        if t.run_id != dump.run.id:
            raise InputError(f"{source}: history[{i}].run_id {t.run_id!r} is not the snapshot's run {dump.run.id!r}")
    try:
        graph.validate(TaskGraph(tasks=dump.tasks, dependencies=dump.dependencies))
    except GraphError as e:
        raise GraphError(f"{source}: {e}") from e
    return dump


def dumps(dump: RunDump, gz: bool = False) -> bytes:
    data = canonical_json(encode(dump))
    return gzip_bytes(data) if gz else data


def loads(data: bytes, source: str = "<snapshot>") -> RunDump:
    return decode(parse_json(data, source), source)


def write_snapshot(path: str | os.PathLike, dump: RunDump) -> None:
    """Write ``dump`` atomically as an orch snapshot (gzip when the name ends in .gz)."""
    write_bytes_atomic(path, canonical_json(encode(dump)))


def read_snapshot(path: str | os.PathLike) -> RunDump:
    return decode(read_json(path), str(path))
