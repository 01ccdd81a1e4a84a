"""One scan of the process table per supervisor tick, and a process's descendants read from it.

``stats()`` of every agent each tick needs each agent's whole tree, and psutil's
``children(recursive=True)`` reads /proc/<pid>/stat of every process on the machine per call: 64
agents made 64 full scans a tick. The agents of one tick share one scan (``descendants(root,
tick)``); ``tick`` None always scans afresh (what ``stop()`` wants).
"""

from __future__ import annotations

import time

import psutil

# psutil create_time has clock-tick (10 ms) resolution: half a tick survives any float
# round-trip yet never confuses two distinct start times
CREATE_TIME_TOLERANCE_S = 0.005
_tree_cache: tuple[object, float, dict[int, list[int]]] = (None, 0.0, {})
SCAN_REUSE_S = 1.0  # never older than this, whatever the tick says (a test's clock may stand still)


def _child_pids(tick: object | None) -> dict[int, list[int]]:
    """ppid -> its children's pids, from one scan of the process table (that of ``tick`` when
    one was made for it; a new one for ``tick`` None)."""
    global _tree_cache
    now = time.monotonic()
    if tick is None or _tree_cache[0] != tick or now - _tree_cache[1] > SCAN_REUSE_S:
        kids: dict[int, list[int]] = {}
        for pid, ppid in psutil._ppid_map().items():
            kids.setdefault(ppid, []).append(pid)
        _tree_cache = (tick, now, kids)
    return _tree_cache[2]


def descendants(root: psutil.Process, tick: object | None) -> list[psutil.Process]:
    """``root.children(recursive=True)`` from the scan of ``tick`` (``_child_pids``)."""
    kids = _child_pids(tick)
    try:
        born = root.create_time()
    except psutil.Error:
        return []
    out, todo, seen = [], list(kids.get(root.pid, ())), set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            child = psutil.Process(pid)
            if child.create_time() < born - CREATE_TIME_TOLERANCE_S:
                continue  # the pid was reused since the scan by a process older than the tree
        except psutil.Error:
            continue  # gone since the scan: so are its children, or they were re-parented
        out.append(child)
        todo.extend(kids.get(pid, ()))
    return out
