"""File scopes that meet: which tasks' ``file_scope`` entries may name the same files.

Used where a collision is foreseen before any work exists: a pulling agent or a push coordinator
holding back a task whose files a running task holds (``policy_options.avoid_conflicts``), and
``orch template lint`` warning about tasks that may run in parallel on the same files.

An entry is a path, a directory (``src/`` -- or a plain path: it may name a directory) or a glob
(``src/*.py``). Two entries overlap when one path is the other or lies below it; a glob meets a
path it matches or one above its fixed prefix (the part before the first wildcard); two globs
meet when one's fixed prefix lies within the other's -- conservatively, a collision that cannot
happen is reported rather than one that can be missed. A task with an empty scope meets nothing
(nothing is known of what it will touch).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase

from coordstore.graph import GraphIndex, work_ids, work_successors

_WILD = "*?["


def _norm(entry: str) -> str:
    parts = [p for p in entry.split("/") if p not in ("", ".")]
    return "/".join(parts)


def _is_glob(entry: str) -> bool:
    return any(c in entry for c in _WILD)


def _fixed(glob: str) -> str:
    """The directories of a glob before its first wildcard component."""
    parts = glob.split("/")
    return "/".join(parts[: next(i for i, p in enumerate(parts) if _is_glob(p))])


def _within(path: str, top: str) -> bool:
    """``path`` is ``top`` or below it (``top`` "" is the repository's root)."""
    return not top or path == top or path.startswith(top + "/")


def entries_overlap(a: str, b: str) -> bool:
    a, b = _norm(a), _norm(b)
    ga, gb = _is_glob(a), _is_glob(b)
    if not ga and not gb:
        return _within(a, b) or _within(b, a)
    if ga and gb:
        return _within(_fixed(a), _fixed(b)) or _within(_fixed(b), _fixed(a))
    glob, path = (a, b) if ga else (b, a)
    return fnmatchcase(path, glob) or _within(_fixed(glob), path)


def shared_entries(scope_a: Iterable[str], scope_b: Iterable[str]) -> list[str]:
    """The entries of ``scope_a`` that meet some entry of ``scope_b`` (empty: no collision)."""
    b = list(scope_b)
    return [e for e in scope_a if any(entries_overlap(e, f) for f in b)]


def colliding(scope: Iterable[str], held: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """Of ``held`` (task id -> its scope), the tasks whose scope meets ``scope``, with the entries
    of ``scope`` they meet."""
    scope = list(scope)
    if not scope:
        return {}
    out = {}
    for tid, other in held.items():
        shared = shared_entries(scope, other)
        if shared:
            out[tid] = shared
    return out


# ---------------------------------------------------------------------------- parallel overlaps
def _reach(ix: GraphIndex, work: list[str]) -> dict[str, int]:
    """Per work task, a bit set of the work tasks that must wait for it (transitively)."""
    bit = {t: 1 << i for i, t in enumerate(work)}
    succ = work_successors(ix)
    reach: dict[str, int] = {}
    for root in work:  # iterative post-order: deep chains must not hit the recursion limit
        stack = [(root, False)]
        while stack:
            node, done = stack.pop()
            if node in reach:
                continue
            if done:
                r = 0
                for s in succ.get(node, ()):
                    r |= bit[s] | reach[s]
                reach[node] = r
            else:
                stack.append((node, True))
                stack.extend((s, False) for s in succ.get(node, ()) if s not in reach)
    return reach


def _candidate_pairs(ix: GraphIndex, work: list[str]) -> dict[tuple[str, str], str]:
    """(a, b) in template order -> one entry they share, for every pair of work tasks whose scopes
    meet. Paths meet through a dictionary of each path's ancestors (no all-pairs comparison);
    globs, usually few, are compared with every entry."""
    pos = {t: i for i, t in enumerate(work)}
    by_path: dict[str, set[str]] = defaultdict(set)
    globs: list[tuple[str, str]] = []
    entries: list[tuple[str, str]] = []
    for t in work:
        for e in ix.tasks[t].file_scope:
            n = _norm(e)
            entries.append((t, n))
            if _is_glob(n):
                globs.append((t, n))
            else:
                by_path[n].add(t)
    out: dict[tuple[str, str], str] = {}

    def add(a: str, b: str, entry: str) -> None:
        if a != b:
            key = (a, b) if pos[a] < pos[b] else (b, a)
            out.setdefault(key, entry)

    for path, owners in by_path.items():  # equal paths, and a path below another one
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            above = "/".join(parts[:i])
            for a in by_path.get(above, ()):
                for b in owners:
                    add(a, b, above)
    for t, g in globs:
        for u, e in entries:
            if u != t and entries_overlap(g, e):
                add(t, u, g if _is_glob(e) else e)
    return out


def parallel_overlaps(ix: GraphIndex) -> list[tuple[str, str, str]]:
    """(a, b, an entry both touch) for every pair of work tasks whose scopes meet and that may run
    at the same time: neither waits for the other through the dependency graph. Template order."""
    work = work_ids(ix)
    pairs = _candidate_pairs(ix, work)
    if not pairs:
        return []
    reach = _reach(ix, work)
    bit = {t: 1 << i for i, t in enumerate(work)}
    out = [(a, b, e) for (a, b), e in pairs.items() if not (reach[a] & bit[b] or reach[b] & bit[a])]
    pos = {t: i for i, t in enumerate(work)}
    return sorted(out, key=lambda p: (pos[p[0]], pos[p[1]]))
