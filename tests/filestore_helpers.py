"""What the file backend's tests share: a store URL and its journal under a directory, a flat graph,
and the fork context their processes start with."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from coordstore.models import Task, TaskGraph

FORK = mp.get_context("fork")  # children inherit the test's imports; each opens its own store


def url_of(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'store'}"


def journal(tmp_path: Path) -> Path:
    return tmp_path / "store" / "journal.jsonl"


def flat_graph(n: int, prefix: str = "t") -> TaskGraph:
    return TaskGraph(tasks=[Task(id=f"{prefix}{i:04d}", priority=i % 7) for i in range(n)])
