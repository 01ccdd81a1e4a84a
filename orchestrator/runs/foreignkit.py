"""The tools every foreign experiment shape is translated with: one-line errors at a key path, the
list of what orch does not act on, where each translated value came from, templates found the way
task-graph-mcp names them, and the run settings (``execution:`` / ``run:``).

A translation never changes what a file means in silence: a key orch honours is carried over, a
key orch does not act on is listed (``Out.ignored``, printed once when the file runs), and a key
orch cannot honour where it matters stops the load (``ForeignError``, one line naming the key).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.runs.resources import template_files

Key = tuple  # a key path in the file as written: ("variants", "push-4", "launch", 2, "worker_id")
# words for readers (and a file's own bookkeeping): carried nowhere, never listed as ignored
PROSE = frozenset({"description", "notes", "version", "created"})


class ForeignError(Exception):
    """A key of a foreign file orch cannot honour; the loader adds the file name and the line."""

    def __init__(self, key: Key, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass
class Out:
    """A translation under way: orch's experiment as data, what was ignored, and for each orch key
    path the key path of the file it came from (so a validation error names the file's key)."""

    path: Path
    data: dict = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    origin: dict[Key, Key] = field(default_factory=dict)

    def ignore(self, key: Key | str) -> None:
        text = key if isinstance(key, str) else ".".join(str(k) for k in key)
        if text not in self.ignored:
            self.ignored.append(text)

    def rest(self, mapping: dict, key: Key, used: set[str] | frozenset[str]) -> None:
        """List every key of ``mapping`` that is neither used nor prose."""
        for k in mapping:
            if k not in used and k not in PROSE:
                self.ignore(key + (k,))

    def came_from(self, orch_key: Key, file_key: Key) -> None:
        self.origin[orch_key] = file_key


# ------------------------------------------------------------------------------------ value types
def as_map(value: Any, key: Key, what: str = "a mapping") -> dict:
    if not isinstance(value, dict):
        raise ForeignError(key, f"must be {what}, not {_kind(value)}")
    return value


def as_list(value: Any, key: Key, what: str = "a list") -> list:
    if not isinstance(value, list):
        raise ForeignError(key, f"must be {what}, not {_kind(value)}")
    return value


def as_str(value: Any, key: Key) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ForeignError(key, f"must be a non-empty string, not {_kind(value)}")
    return value.strip()


def as_count(value: Any, key: Key, most: int, least: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= most:
        raise ForeignError(key, f"must be a whole number from {least} to {most}, not {value!r}")
    return value


def as_tags(value: Any, key: Key) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(t, str) and t for t in value):
        raise ForeignError(key, f"must be a list of tag names, not {value!r}")
    return list(value)


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "empty"}.get(type(value), repr(value))


# ------------------------------------------------------------------------------------ templates
def find_foreign_template(ref: str, beside: Path) -> Path | None:
    """A template named as task-graph-mcp's files name it (``experiments/templates/x.json``): beside
    the experiment file, else in the working directory, else orch's shipped (or ./templates/) one
    of the same file name."""
    p = Path(ref)
    for cand in ([p] if p.is_absolute() else [beside / p, Path.cwd() / p]):
        if cand.is_file():
            return cand.resolve()
    shipped = template_files().get(p.stem if p.suffix == ".json" else p.name)
    return shipped.resolve() if shipped else None


def template_of(out: Out, value: Any, key: Key) -> str:
    """``template: path`` or ``template: {source, instantiate_options}`` as a resolved path."""
    if isinstance(value, dict):
        out.rest(value, key, {"source", "instantiate_options"})
        if "instantiate_options" in value:
            _instantiate_options(out, value["instantiate_options"], key + ("instantiate_options",))
        key, value = key + ("source",), value.get("source")
    ref = as_str(value, key)
    found = find_foreign_template(ref, out.path.parent)
    if found is None:
        raise ForeignError(key, f"template {ref!r} is not beside the file nor in the working directory, and orch ships "
                                f"no template of that name (shipped: {', '.join(sorted(template_files()))})")
    return str(found)


def _instantiate_options(out: Out, opts: Any, key: Key) -> None:
    for k, v in as_map(opts, key).items():
        if k == "reset_status" and v is not True:  # orch instantiates every task fresh, pending
            raise ForeignError(key + (k,), f"{v!r}: orch always starts a run from the template's tasks reset to pending")
        if k != "reset_status":  # extra_tags: descriptive task labels, not applied by orch's setup yet
            out.ignore(key + (k,))


# ------------------------------------------------------------------------------------ run settings
def settings_of(out: Out, block: Any, key: Key) -> Key | None:
    """``execution:`` (seed 004) or ``run:`` (task-graph-mcp): the timeout is honoured, a reset that
    orch always does is accepted, everything else (poll interval, output dir, commands) listed.
    Returns the key of a ``template`` named there (a default for variants that name none)."""
    template = None
    for k, v in as_map(block, key).items():
        if k == "timeout_seconds":
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
                raise ForeignError(key + (k,), f"must be a number of seconds above 0, not {v!r}")
            had = out.data.setdefault("execution", {}).get("timeout_s")
            if had is not None and had != v:
                raise ForeignError(key + (k,), f"{v} disagrees with the timeout of {had} s given before")
            out.data["execution"]["timeout_s"] = v
            out.came_from(("execution", "timeout_s"), key + (k,))
        elif k == "reset" and v is True:  # every orch run starts from a fresh store
            continue
        elif k == "reset":
            raise ForeignError(key + (k,), f"{v!r}: orch always starts a run with a fresh store")
        elif k == "template":
            template = key + (k,)
        elif k not in PROSE:
            out.ignore(key + (k,))
    return template
