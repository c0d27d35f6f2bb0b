"""Stored responses for /v1/responses: where they live, who may read them, how long they last.

`open_store(settings)` gives the store `responses_store` names: SQLite (one file, the default),
PostgreSQL (one database shared by every replica, so any replica continues any conversation), or
None when storing is off. A record belongs to an owner, the hash of the API key that created it:
for any other owner it does not exist. Records live `responses_ttl` seconds. The blocking
database calls run in a few worker threads, one connection each; every database failure is
raised as StoreUnavailable (the details are logged).

Quotas (`StoreLimits`), so that one tenant's traffic never evicts another tenant's responses:

- per owner, `responses_max_rows_per_key` rows and `responses_max_bytes_per_key` bytes: an owner
  over either loses its own oldest rows (never an error: SDKs store by default, and a tenant
  whose quota is full keeps working, as with a TTL). Checked in the write's own transaction, on
  an owner's first write and then after each 1% of its quota (rows or bytes) written, so the
  check costs a fraction of a millisecond per write and the quota is exceeded by at most 1%
  (per replica);
- all owners together, `responses_max_rows` and `responses_max_bytes`: when the store is over
  either, owners are trimmed to their max-min fair share (the water level below which every
  owner keeps everything), so only owners above it lose rows, their oldest first. An owner's
  newest row always stays;
- one record (input items + response) fits `responses_max_record_bytes` (and the per-key
  bytes): the service checks this before generating (400 otherwise), so a write never fails on
  size;
- a `previous_response_id` chain loads at most `responses_max_chain_depth` records and
  `responses_max_chain_bytes` bytes (ChainTooLong otherwise), walking ids and sizes before any
  JSON is read; a missing link is named (ChainBroken).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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
    input_items: list[dict[str, Any]]  # this request's own input items (canonical, with ids)
    # input_items already serialised (orjson), when the caller has it: not serialised again
    encoded_items: bytes | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class StoreLimits:
    """Retention and quotas (see the module docstring); the settings of the same names."""

    ttl: int = 30 * 24 * 3600
    max_rows: int = 100_000
    max_bytes: int = 4 * 1024**3
    max_rows_per_key: int = 10_000
    max_bytes_per_key: int = 256 * 1024**2
    max_record_bytes: int = 16 * 1024**2
    max_chain_depth: int = 1000
    max_chain_bytes: int = 64 * 1024**2

    @classmethod
    def from_settings(cls, settings: Settings) -> StoreLimits:
        return cls(**{name: getattr(settings, "responses_" + name)
                      for name in cls.__dataclass_fields__})

    @property
    def record_budget(self) -> tuple[int, str]:
        """The most bytes one record may take, and the setting that says so."""
        return min((self.max_record_bytes, "responses_max_record_bytes"),
                   (self.max_bytes_per_key, "responses_max_bytes_per_key"),
                   (self.max_bytes, "responses_max_bytes"))


class StoreUnavailable(Exception):
    """The store is down, full or misconfigured: requests that need it get a 503."""


class ChainBroken(LookupError):
    """A record of the chain is missing, expired or another owner's: `missing` is its id."""

    def __init__(self, missing: str) -> None:
        super().__init__(missing)
        self.missing = missing


class ChainTooLong(Exception):
    """The chain is longer than `setting` (``responses_max_chain_depth`` or ``_bytes``) allows."""

    def __init__(self, setting: str, limit: int) -> None:
        super().__init__(setting)
        self.setting, self.limit = setting, limit


class ResponseStore(Protocol):
    limits: StoreLimits

    async def put(self, record: StoredResponse) -> None:
        """Insert, or replace the record with the same id; the owner's oldest records go when
        it is over its quota."""

    async def get(self, response_id: str, owner: str) -> StoredResponse | None:
        """None when missing, expired or another owner's."""

    async def chain(self, response_id: str, owner: str) -> list[StoredResponse]:
        """The record and its ancestors (previous_response_id), oldest first. ChainBroken when
        one of them is missing, expired or another owner's; ChainTooLong past the limits."""

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
    return SQLStore(dialect, StoreLimits.from_settings(settings))


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

    def __init__(self, dialect: Dialect, limits: StoreLimits) -> None:
        self._dialect = dialect
        self.limits = limits
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="response-store")
        self._local = threading.local()  # .conn: this worker thread's connection
        self._lock = threading.Lock()
        self._connections: set[Connection] = set()
        self._schema_ready = False
        self._closed = False
        # Pruning (expiry, global caps) runs on a put, at most every PRUNE_SECONDS or after 1% of
        # max_rows puts or 1% of max_bytes written.
        self._prune_every = max(1, min(1000, limits.max_rows // 100))
        self._prune_bytes = max(1, limits.max_bytes // 100)
        self._puts = self._bytes = 0
        self._next_prune = 0.0
        # Per-owner quotas are checked on an owner's first put, then after 1% of them.
        self._owner_every = max(1, min(100, limits.max_rows_per_key // 100))
        self._owner_bytes = max(1, limits.max_bytes_per_key // 100)
        self._owner_writes: dict[str, tuple[int, int]] = {}  # puts, bytes since its last check

    async def put(self, record: StoredResponse) -> None:
        limits = self.limits

        def put(conn: Connection) -> int:
            row, nbytes = _row(record)
            self._dialect.upsert(conn, row, nbytes, time.time_ns() // 1000)
            if self._owner_due(record.owner, nbytes):
                self._dialect.trim_owner(conn, record.owner, limits.max_rows_per_key,
                                         limits.max_bytes_per_key, keep=record.id)
            return nbytes

        nbytes = await self._run(put)
        if self._prune_due(nbytes):
            # A failed prune is logged; the record is stored and a later put prunes.
            with contextlib.suppress(StoreUnavailable):
                await self._run(self._prune)

    async def get(self, response_id: str, owner: str) -> StoredResponse | None:
        since = self._since()

        def get(conn: Connection) -> StoredResponse | None:
            row = self._dialect.select(conn, response_id, owner, since)
            return None if row is None else _record(row)

        return await self._run(get)

    async def chain(self, response_id: str, owner: str) -> list[StoredResponse]:
        since, limits = self._since(), self.limits

        def chain(conn: Connection) -> list[StoredResponse] | Exception:
            walk = self._dialect.walk(conn, response_id, owner, since, limits.max_chain_depth,
                                      limits.max_chain_bytes)
            if not walk:
                return ChainBroken(response_id)
            _, previous, depth, total = walk[-1]
            if depth > limits.max_chain_depth:
                return ChainTooLong("responses_max_chain_depth", limits.max_chain_depth)
            if total > limits.max_chain_bytes:
                return ChainTooLong("responses_max_chain_bytes", limits.max_chain_bytes)
            if previous is not None:
                return ChainBroken(previous)
            # Within bounds: now the JSON (a link deleted meanwhile breaks the chain there).
            rows = self._dialect.chain(conn, response_id, owner, since, len(walk))
            if not rows:
                return ChainBroken(response_id)
            if rows[0][3] is not None:
                return ChainBroken(rows[0][3])
            return [_record(row) for row in rows]

        found = await self._run(chain)
        if isinstance(found, Exception):
            raise found
        return found

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
        return int(time.time()) - self.limits.ttl

    def _prune_due(self, nbytes: int) -> bool:
        self._puts += 1
        self._bytes += nbytes
        now = time.monotonic()
        if self._puts < self._prune_every and self._bytes < self._prune_bytes \
                and now < self._next_prune:
            return False
        self._puts, self._bytes, self._next_prune = 0, 0, now + PRUNE_SECONDS
        return True

    def _owner_due(self, owner: str, nbytes: int) -> bool:
        """In a worker thread: whether this put checks its owner's quota."""
        with self._lock:
            puts, written = self._owner_writes.get(owner, (self._owner_every, self._owner_bytes))
            puts, written = puts + 1, written + nbytes
            due = puts >= self._owner_every or written >= self._owner_bytes
            self._owner_writes[owner] = (0, 0) if due else (puts, written)
            return due

    def _prune(self, conn: Connection) -> None:
        """Expired rows go; then, over a global cap, owners above their fair share are trimmed."""
        self._dialect.expire(conn, self._since())
        for owner, (rows, nbytes) in fair_shares(self._dialect.usage(conn), self.limits).items():
            self._dialect.trim_owner(conn, owner, rows, nbytes)

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


def fair_shares(usage: dict[str, tuple[int, int]],
                limits: StoreLimits) -> dict[str, tuple[int, int]]:
    """The owners to trim, each with the (rows, bytes) it may keep: its per-key quota, lowered
    to the max-min fair share when all owners together are over a global cap. Owners at or below
    the fair share are not in the answer: another owner's traffic never evicts their rows."""
    row_level = _water_level([min(r, limits.max_rows_per_key) for r, _ in usage.values()],
                             limits.max_rows)
    byte_level = _water_level([min(b, limits.max_bytes_per_key) for _, b in usage.values()],
                              limits.max_bytes)
    keep = (min(limits.max_rows_per_key, row_level), min(limits.max_bytes_per_key, byte_level))
    return {owner: keep for owner, (rows, nbytes) in usage.items()
            if rows > keep[0] or nbytes > keep[1]}


def _water_level(usages: list[int], cap: int) -> int:
    """The largest level L with sum(min(u, L)) <= cap: trimming everyone to L fits the cap and
    takes nothing from owners at or below L (`cap` itself when everything fits)."""
    if sum(usages) <= cap:
        return cap
    remaining, left = cap, len(usages)
    for usage in sorted(usages):
        if usage * left > remaining:
            return remaining // left
        remaining -= usage
        left -= 1
    return cap  # not reached: the sum is over the cap


def _row(record: StoredResponse) -> tuple[Row, int]:
    """The row, and its size in bytes (what the quotas count)."""
    response = orjson.dumps(record.response)
    items = (record.encoded_items if record.encoded_items is not None
             else orjson.dumps(record.input_items))
    return (record.id, record.owner, record.created_at, record.previous_response_id,
            response.decode(), items.decode()), len(response) + len(items)


def _record(row: Row) -> StoredResponse:
    response_id, owner, created_at, previous, response, input_items = row
    return StoredResponse(response_id, owner, int(created_at), previous, orjson.loads(response),
                          orjson.loads(input_items))
