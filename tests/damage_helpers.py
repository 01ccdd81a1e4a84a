"""Damage done to real stores on disk, and fingerprints to show that reading left them alone;
shared by the read-only store tests and the read commands' tests."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

from coordstore.sqlite_schema import PAGE_SIZE


def store_path(url: str) -> Path:
    return Path(url.partition("://")[2])


def _pg_fingerprint(url: str) -> dict[str, str]:
    """sha256 of every table's rows (and the version) of a PostgreSQL store's schema, table by table."""
    import psycopg

    from coordstore.pg_conn import parse_url

    conninfo, schema = parse_url(url)
    with psycopg.connect(conninfo, autocommit=True) as c:
        tables = [r[0] for r in c.execute("SELECT table_name FROM information_schema.tables WHERE table_schema=%s "
                                          "ORDER BY table_name", (schema,))]
        return {t: hashlib.sha256(repr(c.execute(f'SELECT * FROM "{schema}"."{t}" ORDER BY 1, 2').fetchall()
                                       if t != "orch_version" else c.execute(f'SELECT * FROM "{schema}".{t}')
                                       .fetchall()).encode()).hexdigest() for t in tables}


def fingerprint(url: str) -> dict[str, str]:
    """sha256 of each file of the store (SQLite: the database file, not its -wal/-shm side files;
    PostgreSQL: of each table's rows)."""
    if url.startswith("postgresql://"):
        return _pg_fingerprint(url)
    root = store_path(url)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _foreign_sqlite(db: Path) -> None:
    db.unlink()
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE notes (x TEXT)")
        c.execute("INSERT INTO notes VALUES ('not orch')")
    c.close()


def _cut_a_middle_record(journal: Path) -> None:
    lines = journal.read_bytes().split(b"\n")
    lines[2] = lines[2][: len(lines[2]) // 2]
    journal.write_bytes(b"\n".join(lines))


# damage -> what to do to the database file
SQLITE_DAMAGE = {
    "empty": lambda db: os.truncate(db, 0),
    "cut inside a page": lambda db: os.truncate(db, db.stat().st_size - PAGE_SIZE // 2),
    "cut at a page boundary": lambda db: os.truncate(db, db.stat().st_size - 2 * PAGE_SIZE),
    "half a header": lambda db: os.truncate(db, 50),
    "not SQLite": lambda db: db.write_text("id,status\na,completed\n" * 200),
    "SQLite but not orch": _foreign_sqlite,
}

# damage -> (file of the store directory it concerns, what to do to it)
FILE_DAMAGE = {
    "journal cut inside its last record": ("journal.jsonl", lambda p: os.truncate(p, p.stat().st_size - 7)),
    "journal with a middle record cut": ("journal.jsonl", _cut_a_middle_record),
    "journal missing": ("journal.jsonl", lambda p: p.unlink()),
    "events cut inside their last record": ("events/r.jsonl", lambda p: os.truncate(p, p.stat().st_size - 7)),
    "empty store.json": ("store.json", lambda p: os.truncate(p, 0)),
}
