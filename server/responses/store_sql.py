"""The SQL behind the response store, for SQLite and PostgreSQL (blocking: run in worker threads).

One table, the same on both databases; JSON is kept as text (key order and every string intact).
Reads take `since` (the oldest created_at still alive), so an expired row is never returned even
before pruning deletes it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import psycopg
from psycopg.conninfo import conninfo_to_dict

# id, owner, created_at, previous_response_id, response (JSON), input_items (JSON)
Row = tuple[str, str, int, str | None, str, str]

TABLE = "mserve_responses"
COLUMNS = "id, owner, created_at, previous_response_id, response, input_items"
SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (id TEXT PRIMARY KEY, owner TEXT NOT NULL, "
    "created_at BIGINT NOT NULL, previous_response_id TEXT, response TEXT NOT NULL, "
    "input_items TEXT NOT NULL)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_created ON {TABLE} (created_at, id)",
)
UPSERT = (
    f"INSERT INTO {TABLE} ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
    "owner = excluded.owner, created_at = excluded.created_at, "
    "previous_response_id = excluded.previous_response_id, response = excluded.response, "
    "input_items = excluded.input_items"
)
SELECT = f"SELECT {COLUMNS} FROM {TABLE} WHERE id = ? AND owner = ? AND created_at >= ?"
# The record, then each previous one (same owner, alive), at most `limit` rows; oldest first.
CHAIN = (
    f"WITH RECURSIVE chain ({COLUMNS}, depth) AS ("
    f" SELECT {COLUMNS}, 1 FROM {TABLE} WHERE id = ? AND owner = ? AND created_at >= ?"
    " UNION ALL"
    " SELECT r.id, r.owner, r.created_at, r.previous_response_id, r.response, r.input_items,"
    f" c.depth + 1 FROM {TABLE} r JOIN chain c ON r.id = c.previous_response_id"
    " WHERE r.owner = ? AND r.created_at >= ? AND c.depth < ?"
    f") SELECT {COLUMNS} FROM chain ORDER BY depth DESC"
)
DELETE = f"DELETE FROM {TABLE} WHERE id = ? AND owner = ? AND created_at >= ?"
EXPIRE = f"DELETE FROM {TABLE} WHERE created_at < ?"
# Everything past the newest `max_rows` rows; {no_limit} is the dialect's "no LIMIT".
TRIM = (f"DELETE FROM {TABLE} WHERE id IN (SELECT id FROM {TABLE} "
        "ORDER BY created_at DESC, id DESC LIMIT {no_limit} OFFSET ?)")

# Applied to PostgreSQL URLs that do not set them: a store that is down fails fast, not hangs.
PG_DEFAULTS = {"connect_timeout": 5, "tcp_user_timeout": 10_000,
               "options": "-c statement_timeout=10000 -c lock_timeout=5000"}


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    def execute(self, sql: Any, params: Sequence[Any] = ..., /) -> Cursor: ...
    def commit(self) -> None: ...
    def close(self) -> None: ...


class Dialect:
    """One database: how to connect, its errors, and the few ways its SQL differs."""

    errors: tuple[type[Exception], ...]
    placeholder = "?"
    no_limit = "-1"
    schema_lock: str | None = None  # serialises schema creation between replicas

    def connect(self) -> Connection:
        raise NotImplementedError

    def broken(self, conn: Connection) -> bool:
        """The connection died (server restart, network): worth one retry on a new one."""
        return False

    def _run(self, conn: Connection, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return conn.execute(sql.replace("?", self.placeholder), params)

    def create_schema(self, conn: Connection) -> None:
        for sql in ((self.schema_lock,) if self.schema_lock else ()) + SCHEMA:
            self._run(conn, sql)

    def ping(self, conn: Connection) -> None:
        self._run(conn, "SELECT 1")

    def upsert(self, conn: Connection, row: Row) -> None:
        self._run(conn, UPSERT, row)

    def select(self, conn: Connection, response_id: str, owner: str, since: int) -> Row | None:
        return self._run(conn, SELECT, (response_id, owner, since)).fetchone()

    def chain(self, conn: Connection, response_id: str, owner: str, since: int,
              limit: int) -> list[Row]:
        return self._run(conn, CHAIN, (response_id, owner, since, owner, since, limit)).fetchall()

    def delete(self, conn: Connection, response_id: str, owner: str, since: int) -> bool:
        return self._run(conn, DELETE, (response_id, owner, since)).rowcount > 0

    def prune(self, conn: Connection, since: int, max_rows: int) -> None:
        self._run(conn, EXPIRE, (since,))
        self._run(conn, TRIM.format(no_limit=self.no_limit), (max_rows,))


class SQLite(Dialect):
    errors = (sqlite3.Error, OSError)

    def __init__(self, path: Path) -> None:
        self.path = path

    def connect(self) -> Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Closed by the store's own thread at shutdown, never used by two threads at once.
        conn = sqlite3.connect(self.path, timeout=5, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn


class Postgres(Dialect):
    errors = (psycopg.Error, OSError)
    placeholder = "%s"
    no_limit = "ALL"
    schema_lock = "SELECT pg_advisory_xact_lock(7235403262)"

    def __init__(self, url: str) -> None:
        """Raises ValueError for a URL libpq cannot parse."""
        try:
            given = conninfo_to_dict(url)
        except psycopg.Error:
            raise ValueError("not a valid PostgreSQL URL") from None
        if not all(p.isdigit() for p in str(given.get("port", "0")).split(",")):
            raise ValueError("the port is not a number")
        self.url = url
        self.options = {k: v for k, v in PG_DEFAULTS.items() if k not in given}

    def connect(self) -> Connection:
        return psycopg.connect(self.url, **self.options)

    def broken(self, conn: Connection) -> bool:
        return isinstance(conn, psycopg.Connection) and conn.broken
