"""Where shipped templates and experiments live, and how a name or path finds one.

Shipped files travel inside the distribution (packages ``orch_templates`` / ``orch_experiments``
map onto the top-level ``templates/`` and ``experiments/`` folders). A local ``./experiments/`` and
``./templates/`` (the current directory's) add to or override them by file name.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from coordstore.errors import InputError


def _shipped(package: str, folder: str) -> Path | None:
    """The installed data package's directory, else the source checkout's folder."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        if Path(loc).is_dir():  # an editable install may list mapped paths that do not exist
            return Path(loc)
    fallback = Path(__file__).resolve().parents[2] / folder  # a source checkout
    return fallback if fallback.is_dir() else None


def _dirs(package: str, folder: str) -> list[Path]:
    """Search order: shipped first, then the current directory's folder (later wins by name)."""
    out = []
    shipped = _shipped(package, folder)
    if shipped:
        out.append(shipped)
    local = Path.cwd() / folder
    if local.is_dir() and (not shipped or local.resolve() != shipped.resolve()):
        out.append(local)
    return out


def experiment_files() -> list[Path]:
    by_name: dict[str, Path] = {}
    for d in _dirs("orch_experiments", "experiments"):
        for f in sorted(d.glob("*.yaml")) + sorted(d.glob("*.yml")):
            by_name[f.name] = f
    return [by_name[k] for k in sorted(by_name)]


def template_files() -> dict[str, Path]:
    by_name: dict[str, Path] = {}
    for d in _dirs("orch_templates", "templates"):
        for f in sorted(d.glob("*.json")):
            by_name[f.stem] = f
    return by_name


def find_template(ref: str, relative_to: Path | None = None) -> Path:
    """A template by path (absolute, cwd-relative or relative to the experiment file) or shipped name."""
    for cand in (Path(ref), (relative_to / ref) if relative_to else None):
        if cand is not None and cand.is_file():
            return cand
    known = template_files()
    name = Path(ref).stem if ref.endswith(".json") else ref
    if name in known:
        return known[name]
    raise InputError(f"template {ref!r}: no such file, and no shipped template of that name (known: {', '.join(sorted(known))})")
