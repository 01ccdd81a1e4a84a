"""Stores written by an older orch, before tasks had 8 metric slots (4: in, out, cached, thinking),
open in this one. SQLite (schema version 2): a writable open adds the later slot columns, a
read-only open reads the file as it is. File store: journal task records without the later keys
read as 0."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from coordstore import open_store
from coordstore.models import Run, Task, TaskGraph
from coordstore.sqlite_schema import ADDED_TASK_COLS, DDL, SCHEMA_VERSION

T0 = 1_700_000_000_000

# the tasks table as schema version 2 wrote it (before tokens_image, tokens_audio, metric_6, metric_7)
OLD_TASKS = """CREATE TABLE IF NOT EXISTS tasks (
    run_id TEXT NOT NULL, id TEXT NOT NULL, ord INTEGER NOT NULL, status TEXT NOT NULL,
    attempt INTEGER NOT NULL, owner TEXT, assigned_by TEXT, completed_by TEXT, reason TEXT,
    priority INTEGER NOT NULL, cp_rank REAL NOT NULL, is_container INTEGER NOT NULL,
    blockers_left INTEGER NOT NULL, parent TEXT, needed TEXT, wanted TEXT,
    created_at INTEGER, claimed_at INTEGER, started_at INTEGER, completed_at INTEGER, updated_at INTEGER,
    tokens_in INTEGER NOT NULL DEFAULT 0, tokens_out INTEGER NOT NULL DEFAULT 0,
    tokens_cached INTEGER NOT NULL DEFAULT 0, tokens_thinking INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, id), UNIQUE (run_id, ord))"""


@pytest.fixture
def old_db(tmp_path) -> Path:
    """A version-2 file holding run ``r`` with two pending tasks, ``a`` carrying usage."""
    path = tmp_path / "old.db"
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    for stmt in DDL:
        c.execute(OLD_TASKS if stmt.lstrip().startswith("CREATE TABLE IF NOT EXISTS tasks (") else stmt)
    c.execute("INSERT INTO runs (id, experiment, variant, status, on_blocker_failure, created_at) "
              "VALUES ('r', 'e', 'v', 'running', 'cancel', ?)", (T0,))
    for ord_, (tid, usage) in enumerate([("a", (5, 6, 7, 8, 0.5)), ("b", (0, 0, 0, 0, 0.0))]):
        c.execute("INSERT INTO tasks (run_id, id, ord, status, attempt, priority, cp_rank, is_container, "
                  "blockers_left, created_at, updated_at, tokens_in, tokens_out, tokens_cached, tokens_thinking, "
                  "cost_usd) VALUES ('r', ?, ?, 'pending', 0, 5, 0, 0, 0, ?, ?, ?, ?, ?, ?, ?)",
                  (tid, ord_, T0, T0, *usage))
        c.execute("INSERT INTO task_defs (run_id, id, defn) VALUES ('r', ?, ?)", (tid, f'{{"title": "{tid}"}}'))
    c.execute("PRAGMA user_version=2")
    c.close()
    return path


def _columns(path: Path) -> set[str]:
    with sqlite3.connect(path) as c:
        return {r[1] for r in c.execute("PRAGMA table_info(tasks)")}


def _version(path: Path) -> int:
    with sqlite3.connect(path) as c:
        return c.execute("PRAGMA user_version").fetchone()[0]


def test_the_fixture_is_an_old_file(old_db):
    assert not set(ADDED_TASK_COLS) & _columns(old_db) and _version(old_db) == 2 < SCHEMA_VERSION


def test_a_writable_open_adds_the_slot_columns_and_keeps_the_old_counts(old_db):
    with open_store(f"sqlite://{old_db}", clock=lambda: T0 + 10) as s:
        assert s.get_task("r", "a").metrics == [5, 6, 7, 8, 0, 0, 0, 0]
        s.add_usage("r", "a", tokens_in=1, cost_usd=0.25, tokens_image=2, tokens_audio=3, metric_6=4, metric_7=5)
        a = s.get_task("r", "a")
        assert a.metrics == [6, 6, 7, 8, 2, 3, 4, 5] and a.cost_usd == 0.75
        assert s.claim_next("r", "w1").id == "a"  # claims read and return the new columns too
        assert [t.metrics for t in s.dump_run("r").tasks] == [[6, 6, 7, 8, 2, 3, 4, 5], [0] * 8]
    assert set(ADDED_TASK_COLS) <= _columns(old_db) and _version(old_db) == SCHEMA_VERSION
    with open_store(f"sqlite://{old_db}") as again:  # a migrated file opens as it is
        assert again.get_task("r", "a").metrics[4:] == [2, 3, 4, 5]


def test_a_read_only_open_reads_an_old_file_unchanged(old_db):
    before = old_db.read_bytes()
    with open_store(f"sqlite://{old_db}", readonly=True) as ro:
        assert [t.metrics for t in ro.list_tasks("r")] == [[5, 6, 7, 8, 0, 0, 0, 0], [0] * 8]
        assert ro.get_task("r", "a").cost_usd == 0.5
        assert [t.id for t in ro.dump_run("r").tasks] == ["a", "b"]
    assert old_db.read_bytes() == before and not set(ADDED_TASK_COLS) & _columns(old_db)


# ---------------------------------------------------------------------------- file store
def _strip_later_slots(journal: Path) -> int:
    """Rewrite the journal as an older orch wrote it: task records without the later slot keys."""
    lines, stripped = [], 0
    for line in journal.read_text().splitlines():
        op = json.loads(line)
        for p in op.get("p", []):
            if p[0] == "graph":
                for t in p[1]:
                    stripped += sum(t.pop(k, None) is not None for k in ADDED_TASK_COLS)
        lines.append(json.dumps(op, separators=(",", ":")))
    journal.write_text("\n".join(lines) + "\n")
    return stripped


def test_an_old_file_store_journal_reads_the_later_slots_as_0(tmp_path):
    url = f"file://{tmp_path / 'store'}"
    with open_store(url, clock=lambda: T0) as s:
        s.create_run(Run(id="r"))
        s.add_graph("r", TaskGraph(tasks=[Task(id="a", tokens_in=5), Task(id="b")]))
    assert _strip_later_slots(tmp_path / "store" / "journal.jsonl") == 8
    with open_store(url, readonly=True) as ro:
        assert [t.metrics for t in ro.list_tasks("r")] == [[5, 0, 0, 0, 0, 0, 0, 0], [0] * 8]
    with open_store(url, clock=lambda: T0 + 1) as s:
        s.add_usage("r", "a", tokens_in=1, tokens_audio=3, metric_7=4)
        assert s.get_task("r", "a").metrics == [6, 0, 0, 0, 0, 3, 0, 4]
    with open_store(url) as again:  # and a fresh instance replays the same
        assert again.dump_run("r").tasks[0].metrics == [6, 0, 0, 0, 0, 3, 0, 4]
