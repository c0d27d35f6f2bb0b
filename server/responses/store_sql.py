"""The SQL behind the response store, for SQLite and PostgreSQL (blocking: run in worker threads).

One table, the same on both databases; JSON is kept as text (key order and every string intact),
with its size in bytes beside it (`bytes`), so that quotas are sums over an index, never reads of
the JSON, and the microsecond it was written (`stored_at`), which orders an owner's rows for
eviction (`created_at` is in seconds: many rows share one). Reads take `since` (the oldest
created_at still alive), so an expired row is never returned even before pruning deletes it. A
table from before these columns existed gets them (filled for its rows) the first time a store
opens it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import psycopg
from psycopg.conninfo import conninfo_to_dict

# id, owner, created_at, previous_response_id, response (JSON), input_items (JSON)
Row = tuple[str, str, int, str | None, str, str]

TABLE = "mserve_responses"
COLUMNS = "id, owner, created_at, previous_response_id, response, input_items"
CREATE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (id TEXT PRIMARY KEY, owner TEXT NOT NULL, "
    "created_at BIGINT NOT NULL, previous_response_id TEXT, response TEXT NOT NULL, "
    "input_items TEXT NOT NULL, bytes BIGINT, stored_at BIGINT)"
)
INDEXES = (
    f"CREATE INDEX IF NOT EXISTS {TABLE}_created ON {TABLE} (created_at, id)",
    # per-owner quotas: an owner's rows newest first, with their sizes, from the index alone
    f"CREATE INDEX IF NOT EXISTS {TABLE}_owner ON {TABLE} (owner, stored_at, id, bytes)",
)
# Columns a table from before quotas lacks: added, then filled for the rows it has. In FILL,
# {response} and {items} are the dialect's byte length of those columns.
MIGRATIONS = {
    "bytes": f"UPDATE {TABLE} SET bytes = {{response}} + {{items}} WHERE bytes IS NULL",
    "stored_at": f"UPDATE {TABLE} SET stored_at = created_at * 1000000 WHERE stored_at IS NULL",
}
UPSERT = (
    f"INSERT INTO {TABLE} ({COLUMNS}, bytes, stored_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, created_at = excluded.created_at, "
    "previous_response_id = excluded.previous_response_id, response = excluded.response, "
    "input_items = excluded.input_items, bytes = excluded.bytes, stored_at = excluded.stored_at"
)
SELECT = f"SELECT {COLUMNS} FROM {TABLE} WHERE id = ? AND owner = ? AND created_at >= ?"
# The ids of a chain, newest first, without reading any JSON: each row with its depth and the
# bytes of the chain so far. The walk stops past `max_depth` rows or `max_bytes` bytes (the row
# that crosses the bound is returned, so that the caller sees it was crossed).
WALK = (
    "WITH RECURSIVE chain (id, previous_response_id, depth, total) AS ("
    f" SELECT id, previous_response_id, 1, COALESCE(bytes, 0) FROM {TABLE}"
    " WHERE id = ? AND owner = ? AND created_at >= ?"
    " UNION ALL"
    " SELECT r.id, r.previous_response_id, c.depth + 1, c.total + COALESCE(r.bytes, 0)"
    f" FROM {TABLE} r JOIN chain c ON r.id = c.previous_response_id"
    " WHERE r.owner = ? AND r.created_at >= ? AND c.depth <= ? AND c.total <= ?"
    ") SELECT id, previous_response_id, depth, total FROM chain ORDER BY depth"
)
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
USAGE = f"SELECT owner, COUNT(*), SUM(COALESCE(bytes, 0)) FROM {TABLE} GROUP BY owner"
# One owner's rows past its newest `max_rows`, or past its newest `max_bytes` bytes (newest by
# write time); its newest row, and the row `keep` just written, always stay (they were answered
# as stored).
TRIM_OWNER = (
    f"DELETE FROM {TABLE} WHERE id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER w AS n, "
    "SUM(COALESCE(bytes, 0)) OVER w AS total FROM "
    f"{TABLE} WHERE owner = ? WINDOW w AS (ORDER BY stored_at DESC, id DESC "
    "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)) ranked "
    "WHERE n > 1 AND id <> ? AND (n > ? OR total > ?))"
)

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
    schema_lock: str | None = None  # serialises schema creation between replicas
    has_column: str  # a row when the table has the column named by the one parameter
    # runs first in the schema transaction: on an older table, a migration and a new index read
    # every row once, which may take longer than a statement may otherwise
    migrating: str | None = None
    byte_length: str  # SQL for a text column's size in bytes ({} is the column)

    def connect(self) -> Connection:
        raise NotImplementedError

    def broken(self, conn: Connection) -> bool:
        """The connection died (server restart, network): worth one retry on a new one."""
        return False

    def _run(self, conn: Connection, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return conn.execute(sql.replace("?", self.placeholder), params)

    def create_schema(self, conn: Connection) -> None:
        for sql in (self.schema_lock, self.migrating):
            if sql:
                self._run(conn, sql)
        self._run(conn, CREATE)
        for column, fill in MIGRATIONS.items():
            if not self._run(conn, self.has_column, (column,)).fetchall():
                self._run(conn, f"ALTER TABLE {TABLE} ADD COLUMN {column} BIGINT")
                self._run(conn, fill.format(response=self.byte_length.format("response"),
                                            items=self.byte_length.format("input_items")))
        for sql in INDEXES:
            self._run(conn, sql)

    def ping(self, conn: Connection) -> None:
        self._run(conn, "SELECT 1")

    def upsert(self, conn: Connection, row: Row, nbytes: int, stored_at: int) -> None:
        self._run(conn, UPSERT, (*row, nbytes, stored_at))

    def select(self, conn: Connection, response_id: str, owner: str, since: int) -> Row | None:
        return self._run(conn, SELECT, (response_id, owner, since)).fetchone()

    def walk(self, conn: Connection, response_id: str, owner: str, since: int, max_depth: int,
             max_bytes: int) -> list[tuple[str, str | None, int, int]]:
        """(id, previous_response_id, depth, bytes so far) of the chain, newest first."""
        params = (response_id, owner, since, owner, since, max_depth, max_bytes)
        return [(r[0], r[1], int(r[2]), int(r[3])) for r in self._run(conn, WALK, params).fetchall()]

    def chain(self, conn: Connection, response_id: str, owner: str, since: int,
              limit: int) -> list[Row]:
        return self._run(conn, CHAIN, (response_id, owner, since, owner, since, limit)).fetchall()

    def delete(self, conn: Connection, response_id: str, owner: str, since: int) -> bool:
        return self._run(conn, DELETE, (response_id, owner, since)).rowcount > 0

    def expire(self, conn: Connection, since: int) -> None:
        self._run(conn, EXPIRE, (since,))

    def usage(self, conn: Connection) -> dict[str, tuple[int, int]]:
        """Rows and bytes per owner."""
        return {r[0]: (int(r[1]), int(r[2] or 0)) for r in self._run(conn, USAGE).fetchall()}

    def trim_owner(self, conn: Connection, owner: str, max_rows: int, max_bytes: int,
                   keep: str = "") -> None:
        self._run(conn, TRIM_OWNER, (owner, keep, max_rows, max_bytes))


class SQLite(Dialect):
    errors = (sqlite3.Error, OSError)
    schema_lock = "BEGIN IMMEDIATE"  # the schema (and its migration) in one write transaction
    has_column = f"SELECT 1 FROM pragma_table_info('{TABLE}') WHERE name = ?"
    byte_length = "length(CAST({} AS BLOB))"

    def __init__(self, path: Path) -> None:
        self.path = path

    def connect(self) -> Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Closed by the store's own thread at shutdown, never used by two threads at once.
        conn = sqlite3.connect(self.path, timeout=BUSY_SECONDS, check_same_thread=False)
        try:
            _use_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            conn.close()
            raise
        return conn


BUSY_SECONDS = 5


def _use_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL (it stays so) unless it already is. The switch needs the file to
    itself and SQLite answers "database is locked" at once rather than waiting, so when several
    API processes open a new file together the losers retry for up to BUSY_SECONDS."""
    deadline = time.monotonic() + BUSY_SECONDS
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_BUSY \
                    or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class Postgres(Dialect):
    errors = (psycopg.Error, OSError)
    placeholder = "%s"
    schema_lock = "SELECT pg_advisory_xact_lock(7235403262)"
    has_column = ("SELECT 1 FROM information_schema.columns WHERE table_schema = "
                  f"current_schema() AND table_name = '{TABLE}' AND column_name = ?")
    byte_length = "octet_length({})"
    migrating = "SET LOCAL statement_timeout = 0"

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
