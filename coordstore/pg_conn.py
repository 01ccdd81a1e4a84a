"""PostgreSQL backend, part 1: the URL, opening a connection, error translation, and the adapter that
lets the SQL shared with SQLite (``sql_*`` modules, written with ``?`` placeholders) run on psycopg 3.

URL: ``postgresql://[user@]host[:port]/db[?schema=NAME]`` (``postgres://`` too). ``schema`` is
orch's own parameter (default ``orch``): every table lives in that PostgreSQL schema; the rest of the
URL goes to psycopg as it is.
"""

from __future__ import annotations

import functools
import logging
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg

from coordstore.errors import StoreError, StoreURLError

# psycopg warns on stderr when a pipeline ends on a lost connection ("error ignored terminating
# <Pipeline [BAD]>"); the store reports that loss itself as one StoreError, so the warning only
# doubles a runner's or worker's one-line message
logging.getLogger("psycopg").addHandler(logging.NullHandler())

DEFAULT_SCHEMA = "orch"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# the database's clock in integer ms: clock_timestamp(), not now() (a transaction's start)
CLOCK_MS = "(extract(epoch from clock_timestamp()) * 1000)::bigint"


def parse_url(url: str) -> tuple[str, str]:
    """(conninfo for psycopg, schema name) of a store URL; StoreURLError for a bad one."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres") or not parts.netloc:
        raise StoreURLError(f"store URL {url!r}: expected postgresql://[user@]host[:port]/database[?schema=NAME]")
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [v for k, v in query if k == "schema"]
    schema = schemas[-1] if schemas else DEFAULT_SCHEMA
    if not _IDENT.fullmatch(schema):
        raise StoreURLError(f"store URL {url!r}: schema {schema!r} is not a plain identifier (letters, digits, _)")
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(("postgresql", parts.netloc, parts.path, rest, parts.fragment)), schema


def where(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    if len(netloc) == 2 and ":" in netloc[0]:
        netloc[0] = netloc[0].split(":", 1)[0] + ":***"
    return urlunsplit((parts.scheme, "@".join(netloc), parts.path, parts.query, parts.fragment))


def translate(e: psycopg.Error, url: str) -> StoreError:
    """One clear line naming the store; callers raise it ``from`` the original."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, psycopg.errors.IntegrityError):
        return StoreError(f"store {where(url)}: integrity constraint failed ({msg})")
    if isinstance(e, psycopg.errors.ReadOnlySqlTransaction):
        return StoreError(f"store {where(url)}: opened read-only ({msg})")
    if isinstance(e, psycopg.OperationalError):
        return StoreError(f"store {where(url)}: cannot reach PostgreSQL ({msg})")
    return StoreError(f"store {where(url)}: postgresql error: {msg}")


@functools.lru_cache(maxsize=512)
def pg_sql(sql: str) -> str:
    """Shared SQL in PostgreSQL's words: ``?`` -> ``%s`` (a literal % doubled), and CROSS JOIN ... ON
    (SQLite's way to fix the join order) as a plain JOIN."""
    return sql.replace("%", "%%").replace("?", "%s").replace(" CROSS JOIN ", " JOIN ")


class PGConn:
    """A psycopg connection that speaks the shared SQL: ``execute``/``executemany`` return the cursor
    (``fetchone``, ``fetchall``, iteration), as sqlite3's do. Autocommit: transactions are explicit."""

    __slots__ = ("raw",)

    def __init__(self, raw: psycopg.Connection):
        self.raw = raw

    def execute(self, sql: str, params: tuple | list = ()) -> psycopg.Cursor:
        return self.raw.execute(pg_sql(sql), params or None)

    def executemany(self, sql: str, rows) -> psycopg.Cursor:
        cur = self.raw.cursor()
        cur.executemany(pg_sql(sql), rows)
        return cur

    def pipeline(self):
        return self.raw.pipeline()


def connect(conninfo: str, schema: str, url: str, readonly: bool = False) -> PGConn:
    """An autocommit connection whose search_path is the store's schema (read-only sessions for readers)."""
    try:
        raw = psycopg.connect(conninfo, autocommit=True, prepare_threshold=2)
    except psycopg.Error as e:
        raise translate(e, url) from e
    try:
        with raw.pipeline():
            raw.execute(f'SET search_path TO "{schema}"')
            if readonly:
                raw.execute("SET default_transaction_read_only = on")
    except psycopg.Error as e:
        raw.close()
        raise translate(e, url) from e
    return PGConn(raw)
