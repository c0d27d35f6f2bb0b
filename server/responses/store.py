"""Stored responses for /v1/responses: where they live, who may read them, how long they last.

`open_store(settings)` gives the store `responses_store` names: SQLite (one file, the default),
PostgreSQL (one database shared by every replica, so any replica continues any conversation), or
None when storing is off. A record belongs to an owner, the hash of the API key that created it:
for any other owner it does not exist. Records live `responses_ttl` seconds and only the newest
`responses_max_rows` are kept. The blocking database calls run in a few worker threads, one
connection each; every database failure is raised as StoreUnavailable (the details are logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson

from server.auth import owner_for  # noqa: F401 - the owner of a record
from server.responses.store_sql import Connection, Dialect, Postgres, Row, SQLite
from server.settings import Settings, SettingsError, redact_url

log = logging.getLogger(__name__)
T = TypeVar("T")
WORKERS = 4
PRUNE_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class StoredResponse:
    id: str  # "resp_<hex>"
    owner: str  # owner_for(api_key): who may read it
    created_at: int  # unix seconds
    previous_response_id: str | None
    response: dict[str, Any]  # the Responses API response object as returned to the client
    input_items: list[dict[str, Any]]  # this request's own input items (normalised, with ids)


class StoreUnavailable(Exception):
    """The store is down, full or misconfigured: requests that need it get a 503."""


class ResponseStore(Protocol):
    async def put(self, record: StoredResponse) -> None:
        """Insert, or replace the record with the same id."""

    async def get(self, response_id: str, owner: str) -> StoredResponse | None:
        """None when missing, expired or another owner's."""

    async def chain(self, response_id: str, owner: str,
                    limit: int = 1000) -> list[StoredResponse] | None:
        """The record and its ancestors (previous_response_id), oldest first. None when any of
        them is missing, expired or another owner's, or there are more than `limit`."""

    async def delete(self, response_id: str, owner: str) -> bool:
        """False when there was nothing this owner could delete."""

    async def ping(self) -> None:
        """Raises StoreUnavailable unless the store answers."""

    async def close(self) -> None: ...


def open_store(settings: Settings) -> ResponseStore | None:
    """The store `responses_store` names (nothing is connected yet), or None for 'off'."""
    if settings.responses_store == "off":
        return None
    dialect = _dialect(settings.responses_store, settings.cache_dir)
    return SQLStore(dialect, settings.responses_ttl, settings.responses_max_rows)


def _dialect(value: str, cache_dir: Path) -> Dialect:
    if value == "sqlite":
        return SQLite(cache_dir / "responses.sqlite3")
    if value.startswith("sqlite:///") and value != "sqlite:///":
        return SQLite(Path(value.removeprefix("sqlite:///")))
    if value.startswith(("postgresql://", "postgres://")):
        try:
            return Postgres(value)
        except ValueError as exc:
            raise SettingsError(f"responses_store: {redact_url(value)}: {exc}") from None
    raise SettingsError(f"responses_store: {redact_url(value)!r} is none of 'sqlite', "
                        "'sqlite:///<path>', 'postgresql://<user>:<password>@<host>/<db>', 'off'")


class SQLStore:
    """A ResponseStore on a SQL database (see store_sql.Dialect)."""

    def __init__(self, dialect: Dialect, ttl: int, max_rows: int) -> None:
        self._dialect = dialect
        self._ttl = ttl
        self._max_rows = max_rows
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="response-store")
        self._local = threading.local()  # .conn: this worker thread's connection
        self._lock = threading.Lock()
        self._connections: set[Connection] = set()
        self._schema_ready = False
        self._closed = False
        # Pruning runs on a put, at most every PRUNE_SECONDS or after 1% of max_rows puts.
        self._prune_every = max(1, min(1000, max_rows // 100))
        self._puts = 0
        self._next_prune = 0.0

    async def put(self, record: StoredResponse) -> None:
        await self._run(lambda conn: self._dialect.upsert(conn, _row(record)))
        if self._prune_due():
            since, max_rows = self._since(), self._max_rows
            # A failed prune is logged; the record is stored and a later put prunes.
            with contextlib.suppress(StoreUnavailable):
                await self._run(lambda conn: self._dialect.prune(conn, since, max_rows))

    async def get(self, response_id: str, owner: str) -> StoredResponse | None:
        since = self._since()

        def get(conn: Connection) -> StoredResponse | None:
            row = self._dialect.select(conn, response_id, owner, since)
            return None if row is None else _record(row)

        return await self._run(get)

    async def chain(self, response_id: str, owner: str,
                    limit: int = 1000) -> list[StoredResponse] | None:
        since = self._since()

        def chain(conn: Connection) -> list[StoredResponse] | None:
            rows = self._dialect.chain(conn, response_id, owner, since, limit)
            if not rows or rows[0][3] is not None:  # the oldest found has a previous one
                return None
            return [_record(row) for row in rows]

        return await self._run(chain)

    async def delete(self, response_id: str, owner: str) -> bool:
        since = self._since()
        return await self._run(lambda conn: self._dialect.delete(conn, response_id, owner, since))

    async def ping(self) -> None:
        await self._run(self._dialect.ping)

    async def close(self) -> None:
        self._closed = True
        await asyncio.to_thread(self._shutdown)

    # --- internals ---------------------------------------------------------------------------
    def _since(self) -> int:
        """The oldest created_at still alive."""
        return int(time.time()) - self._ttl

    def _prune_due(self) -> bool:
        self._puts += 1
        now = time.monotonic()
        if self._puts < self._prune_every and now < self._next_prune:
            return False
        self._puts, self._next_prune = 0, now + PRUNE_SECONDS
        return True

    async def _run(self, op: Callable[[Connection], T]) -> T:
        if self._closed:
            raise StoreUnavailable("the response store is closed")
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._call, op)

    def _call(self, op: Callable[[Connection], T], retry: bool = True) -> T:
        """In a worker thread: `op` in one transaction; a connection found dead is replaced once."""
        conn: Connection | None = getattr(self._local, "conn", None)
        try:
            if conn is None:
                retry = False
                conn = self._connect()
            if not self._schema_ready:
                self._dialect.create_schema(conn)
                conn.commit()
                self._schema_ready = True
            result = op(conn)
            conn.commit()
            return result
        except self._dialect.errors as exc:
            if conn is not None:
                stale = retry and self._dialect.broken(conn)
                self._discard(conn)
                if stale:
                    return self._call(op, retry=False)
            log.warning("response store unavailable: %s: %s", type(exc).__name__,
                        (str(exc).strip().splitlines() or [""])[0])
            raise StoreUnavailable("the response store is unavailable") from None

    def _connect(self) -> Connection:
        conn = self._dialect.connect()
        self._local.conn = conn
        with self._lock:
            self._connections.add(conn)
        return conn

    def _discard(self, conn: Connection) -> None:
        self._local.conn = None
        with self._lock:
            self._connections.discard(conn)
        with contextlib.suppress(*self._dialect.errors):
            conn.close()

    def _shutdown(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            connections, self._connections = self._connections, set()
        for conn in connections:
            with contextlib.suppress(*self._dialect.errors):
                conn.close()


def _row(record: StoredResponse) -> Row:
    return (record.id, record.owner, record.created_at, record.previous_response_id,
            orjson.dumps(record.response).decode(), orjson.dumps(record.input_items).decode())


def _record(row: Row) -> StoredResponse:
    response_id, owner, created_at, previous, response, input_items = row
    return StoredResponse(response_id, owner, int(created_at), previous, orjson.loads(response),
                          orjson.loads(input_items))
