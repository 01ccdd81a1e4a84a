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

from coordstore.graph import GraphIndex, post_order, work_ids, work_successors

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
def _key(entry: str) -> str:
    """Where an entry sits in the tree: the path itself, or a glob's fixed part."""
    return _fixed(entry) if _is_glob(entry) else entry


def _above(key: str) -> list[str]:
    """``key`` and every directory above it, the root ("") included."""
    parts = key.split("/") if key else []
    return [""] + ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _closure(order: list[str], succ: Mapping[str, Iterable[str]], bit: Mapping[str, int]) -> dict[str, int]:
    """Per task, a bit set of the tasks reachable from it through ``succ`` (transitively)."""
    reach: dict[str, int] = {}
    for node in post_order(order, succ):
        r = 0
        for s in succ.get(node, ()):
            r |= bit[s] | reach[s]
        reach[node] = r
    return reach


def _partners(ix: GraphIndex, work: list[str], bit: Mapping[str, int]) -> dict[str, int]:
    """Per work task, a bit set of the tasks whose scope meets its own. Work is per distinct entry:
    an entry meets those filed at its own place in the tree or above it (found by walking up, no
    all-pairs comparison), a glob and a path below its fixed part only if the glob matches."""
    tasks_of: dict[str, list[str]] = defaultdict(list)  # normalized entry -> its tasks
    for t in work:
        for e in dict.fromkeys(_norm(x) for x in ix.tasks[t].file_scope):
            tasks_of[e].append(t)
    at: dict[str, list[str]] = defaultdict(list)  # key -> entries filed there
    for e in tasks_of:
        at[_key(e)].append(e)
    mask = {e: sum(bit[t] for t in ts) for e, ts in tasks_of.items()}
    partners = dict.fromkeys(work, 0)
    for e in tasks_of:
        for up in _above(_key(e)):
            for f in at.get(up, ()):
                if (_is_glob(e) or _is_glob(f)) and not entries_overlap(e, f):
                    continue
                for t in tasks_of[e]:
                    partners[t] |= mask[f]
                for t in tasks_of[f]:
                    partners[t] |= mask[e]
    return partners


def parallel_overlaps(ix: GraphIndex, limit: int | None = None) -> tuple[list[tuple[str, str, str]], int]:
    """Pairs of work tasks whose scopes meet and that may run at the same time (neither waits for
    the other through the dependency graph): (the first ``limit`` of them in template order, each
    as (a, b, an entry of a's that b's scope meets), and how many there are in all)."""
    work = work_ids(ix)
    bit = {t: 1 << i for i, t in enumerate(work)}
    partners = _partners(ix, work, bit)
    if not any(partners[t] & ~bit[t] for t in work):
        return [], 0
    succ = work_successors(ix)
    pred: dict[str, set[str]] = defaultdict(set)
    for a, bs in succ.items():
        for b in bs:
            pred[b].add(a)
    after, before = _closure(work, succ, bit), _closure(work, pred, bit)
    listed: list[tuple[str, str, str]] = []
    total = 0
    for i, a in enumerate(work):
        later = partners[a] & ~(after[a] | before[a]) & ~((1 << (i + 1)) - 1)  # each pair once, from its first task
        total += later.bit_count()
        while later and (limit is None or len(listed) < limit):
            low = later & -later
            b = work[low.bit_length() - 1]
            listed.append((a, b, shared_entries(ix.tasks[a].file_scope, ix.tasks[b].file_scope)[0]))
            later ^= low
    return listed, total
