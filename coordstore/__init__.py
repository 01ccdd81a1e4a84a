"""The coordination store: task graph, ownership, events and the append-only history.

``open_store(url)`` picks the backend by URL scheme and imports it only then.
``open_store(url, readonly=True)`` is for readers: it never creates, migrates or writes the store,
and raises ``StoreDamaged`` for one that is empty, cut short, foreign or corrupt.
"""

from __future__ import annotations

import importlib

from coordstore.base import CoordStore
from coordstore.errors import StoreURLError

# scheme -> (module, class, pip hint for its driver)
BACKENDS: dict[str, tuple[str, str, str | None]] = {
    "file": ("coordstore.filestore", "FileStore", None),
    "sqlite": ("coordstore.sqlitestore", "SQLiteStore", None),
    "postgresql": ("coordstore.pgstore", "PGStore", "pip install 'orch[postgresql]'"),
}
ALIASES = {"postgres": "postgresql"}  # other spellings of a scheme


def open_store(url: str, readonly: bool = False, **kwargs) -> CoordStore:
    """Open the store at ``url`` (``file:///abs/dir``, ``sqlite:///abs/file.db``,
    ``postgresql://[user@]host[:port]/db[?schema=NAME]``); with ``readonly``
    an existing, intact store only (``InputError`` if missing, ``StoreDamaged`` if damaged)."""
    scheme, sep, _ = url.partition("://")
    scheme = ALIASES.get(scheme, scheme)
    if not sep or scheme not in BACKENDS:
        known = ", ".join(f"{s}://" for s in sorted(BACKENDS))
        raise StoreURLError(f"store URL {url!r}: unknown scheme {scheme + '://' if sep else '(none)'}; known: {known}")
    module, cls, hint = BACKENDS[scheme]
    try:
        mod = importlib.import_module(module)
    except ImportError as e:  # a backend whose driver is missing
        extra = f"; install it with: {hint}" if hint else ""
        raise StoreURLError(f"store URL {url!r}: backend {scheme} cannot load ({e}){extra}") from e
    return getattr(mod, cls)(url, readonly=readonly, **kwargs)


__all__ = ["CoordStore", "open_store", "BACKENDS"]
