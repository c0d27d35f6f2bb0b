"""The response store, on SQLite and on a real PostgreSQL server (tests/pg.py).

What /v1/responses relies on: records come back exactly as stored, only to the key that stored
them, only while they are alive (TTL, quotas); one key's traffic never evicts another key's
records; chains resolve oldest first, within their bounds, or name the missing link; a second
store on the same database (another replica) sees the same data; a table from before the quotas
is migrated; a store that is down raises StoreUnavailable, quickly.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson
import psycopg
import pytest

from server.responses.store import (
    ChainBroken, ChainTooLong, ResponseStore, StoredResponse, StoreLimits, StoreUnavailable,
    fair_shares, open_store, owner_for)
from server.settings import Settings, SettingsError
from tests.pg import PostgresServer, free_port, new_database

T = TypeVar("T")
ALICE, BOB, CAROL = owner_for("alice-key"), owner_for("bob-key"), owner_for("carol-key")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty store database of the test's own."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'responses.sqlite3'}"
    return new_database(request.getfixturevalue("postgres_url"))


def record(rid: str, owner: str = ALICE, previous: str | None = None,
           age: int = 0, text: str = "hello") -> StoredResponse:
    return StoredResponse(
        id=rid, owner=owner, created_at=int(time.time()) - age, previous_response_id=previous,
        response={"id": rid, "object": "response", "status": "completed",
                  "output": [{"type": "message", "content": [{"type": "output_text",
                                                              "text": text}]}]},
        input_items=[{"id": f"msg_{rid}", "type": "message", "role": "user", "content": text}])


def with_store(url: str, check: Callable[[ResponseStore], Awaitable[T]], **settings: Any) -> T:
    async def main() -> T:
        store = open_store(Settings(responses_store=url, **settings))
        assert store is not None
        try:
            return await asyncio.wait_for(check(store), timeout=60)
        finally:
            await store.close()

    return asyncio.run(main())


def test_owner_is_a_hash_of_the_key() -> None:
    assert owner_for(None) == owner_for("") == ""
    assert owner_for("alice-key") == hashlib.sha256(b"alice-key").hexdigest() != BOB


def test_round_trip_keeps_json_intact(url: str) -> None:
    response = {"id": "resp_1", "zeta": 1, "alpha": [1.5, -2, True, None, 2**62],
                "text": "héllo 🌍 中文 \"quoted\" \\ back\nslash \u0000 nul",
                "nested": {"b": {}, "a": []}}
    stored = StoredResponse("resp_1", ALICE, int(time.time()), None, response,
                            [{"id": "msg_1", "content": "ünï ✓"}, {"id": "msg_2"}])

    async def check(store: ResponseStore) -> None:
        await store.put(stored)
        got = await store.get("resp_1", ALICE)
        assert got == stored
        assert list(got.response) == list(response)  # key order too

    with_store(url, check)


def test_another_owner_sees_nothing(url: str) -> None:
    mine = record("resp_a")

    async def check(store: ResponseStore) -> None:
        await store.put(mine)
        assert await store.get("resp_a", BOB) is None
        assert await store.get("resp_a", "") is None
        with pytest.raises(ChainBroken) as broken:
            await store.chain("resp_a", BOB)
        assert broken.value.missing == "resp_a"
        assert await store.delete("resp_a", BOB) is False
        assert await store.get("resp_a", ALICE) == mine

    with_store(url, check)


def test_missing_and_deleted(url: str) -> None:
    async def check(store: ResponseStore) -> None:
        assert await store.get("resp_nope", ALICE) is None
        assert await store.delete("resp_nope", ALICE) is False
        await store.put(record("resp_d"))
        assert await store.delete("resp_d", ALICE) is True
        assert await store.get("resp_d", ALICE) is None
        assert await store.delete("resp_d", ALICE) is False

    with_store(url, check)


def test_put_replaces_by_id(url: str) -> None:
    async def check(store: ResponseStore) -> None:
        await store.put(record("resp_bg", text="in progress"))
        await store.put(record("resp_bg", text="done"))
        got = await store.get("resp_bg", ALICE)
        assert got is not None and got.input_items[0]["content"] == "done"

    with_store(url, check)


def test_expired_records_are_never_returned_and_deleted(url: str) -> None:
    async def check(store: ResponseStore) -> None:
        await store.put(record("resp_old", age=120))
        await store.put(record("resp_new", previous="resp_old"))
        assert await store.get("resp_old", ALICE) is None
        assert await store.delete("resp_old", ALICE) is False
        with pytest.raises(ChainBroken) as broken:  # its ancestor expired, and is named
            await store.chain("resp_new", ALICE)
        assert broken.value.missing == "resp_old"
        assert await store.get("resp_new", ALICE) is not None

    with_store(url, check, responses_ttl=60)

    async def still_there(store: ResponseStore) -> StoredResponse | None:
        return await store.get("resp_old", ALICE)

    # Deleted, not only hidden: a store with a longer TTL does not find it either.
    assert with_store(url, still_there, responses_ttl=10**6) is None


def test_max_rows_keeps_the_newest(url: str) -> None:
    async def check(store: ResponseStore) -> list[bool]:
        for i in range(5):
            await store.put(record(f"resp_{i}", age=10 - i))
        return [await store.get(f"resp_{i}", ALICE) is not None for i in range(5)]

    assert with_store(url, check, responses_max_rows=3) == [False, False, True, True, True]


def test_chain_is_oldest_first_or_names_the_missing_link(url: str) -> None:
    async def check(store: ResponseStore) -> None:
        await store.put(record("resp_1", age=3))
        await store.put(record("resp_2", previous="resp_1", age=2))
        await store.put(record("resp_3", previous="resp_2", age=1))
        chain = await store.chain("resp_3", ALICE)
        assert [r.id for r in chain] == ["resp_1", "resp_2", "resp_3"]
        assert chain[1] == await store.get("resp_2", ALICE)
        assert [r.id for r in await store.chain("resp_1", ALICE)] == ["resp_1"]
        with pytest.raises(ChainBroken) as broken:
            await store.chain("resp_missing", ALICE)
        assert broken.value.missing == "resp_missing"

        # Someone else's ancestor breaks the chain, and is named (it does not exist for ALICE).
        await store.put(record("resp_bob", owner=BOB))
        await store.put(record("resp_x", previous="resp_bob"))
        with pytest.raises(ChainBroken) as broken:
            await store.chain("resp_x", ALICE)
        assert broken.value.missing == "resp_bob"

        # So does a deleted one: the missing link is named, the newest is still readable.
        assert await store.delete("resp_2", ALICE)
        with pytest.raises(ChainBroken) as broken:
            await store.chain("resp_3", ALICE)
        assert broken.value.missing == "resp_2"
        assert await store.get("resp_3", ALICE) is not None

    with_store(url, check)


def test_chain_depth_and_bytes_are_bounded(url: str) -> None:
    async def check(store: ResponseStore) -> None:
        previous = None
        for i in range(5):
            await store.put(record(f"resp_{i}", previous=previous, age=10 - i, text="x" * 300))
            previous = f"resp_{i}"
        assert [r.id for r in await store.chain("resp_2", ALICE)] == ["resp_0", "resp_1", "resp_2"]
        with pytest.raises(ChainTooLong) as long:
            await store.chain("resp_3", ALICE)  # four records
        assert (long.value.setting, long.value.limit) == ("responses_max_chain_depth", 3)

    with_store(url, check, responses_max_chain_depth=3)

    async def by_bytes(store: ResponseStore) -> None:
        assert [r.id for r in await store.chain("resp_1", ALICE)] == ["resp_0", "resp_1"]
        with pytest.raises(ChainTooLong) as large:
            await store.chain("resp_4", ALICE)  # each record is over 600 bytes
        assert (large.value.setting, large.value.limit) == ("responses_max_chain_bytes", 2048)

    with_store(url, by_bytes, responses_max_chain_bytes=2048)


async def alive(store: ResponseStore, owner: str, ids: list[str]) -> list[str]:
    return [i for i in ids if await store.get(i, owner) is not None]


def test_a_key_over_its_row_quota_loses_its_own_oldest(url: str) -> None:
    async def check(store: ResponseStore) -> None:
        bobs = [f"resp_b{i}" for i in range(2)]
        alices = [f"resp_a{i}" for i in range(6)]
        for i, rid in enumerate(bobs):
            await store.put(record(rid, owner=BOB, age=100 - i))
        for i, rid in enumerate(alices):
            await store.put(record(rid, age=50 - i))
        assert await alive(store, ALICE, alices) == alices[-3:]
        assert await alive(store, BOB, bobs) == bobs

    with_store(url, check, responses_max_rows_per_key=3)


def test_eviction_follows_write_order_within_one_second(url: str) -> None:
    """created_at is in seconds; the row just written is never the one evicted."""
    async def check(store: ResponseStore) -> None:
        ids = [f"resp_{i}" for i in "zyxwvutsrq"]  # ids that sort against write order
        for rid in ids:
            await store.put(record(rid, owner=BOB, age=0))
            assert await store.get(rid, BOB) is not None
        assert await alive(store, BOB, ids) == ids[-2:]

    with_store(url, check, responses_max_rows_per_key=2)


def test_a_key_over_its_byte_quota_loses_its_own_oldest(url: str) -> None:
    async def check(store: ResponseStore) -> None:
        await store.put(record("resp_bob", owner=BOB, age=100, text="b" * 3000))
        alices = [f"resp_a{i}" for i in range(6)]
        for i, rid in enumerate(alices):
            await store.put(record(rid, age=50 - i, text="a" * 1000))  # ~2.3 KB a row
        kept = await alive(store, ALICE, alices)
        assert kept == alices[-len(kept):] and 1 <= len(kept) <= 2
        assert await store.get("resp_bob", BOB) is not None  # over the quota alone, but newest
        await store.put(record("resp_big", age=1, text="a" * 6000))  # bigger than the quota
        assert await alive(store, ALICE, [*alices, "resp_big"]) == ["resp_big"]  # newest stays

    with_store(url, check, responses_max_bytes_per_key=5000)


def test_global_rows_never_evict_a_key_below_its_fair_share(url: str) -> None:
    """100 cheap requests from one key must not delete another key's conversation."""
    async def check(store: ResponseStore) -> None:
        bobs = [f"resp_b{i}" for i in range(3)]
        for i, rid in enumerate(bobs):
            await store.put(record(rid, owner=BOB, previous=bobs[i - 1] if i else None,
                                   age=1000 - i))
        await store.put(record("resp_c", owner=CAROL, age=900))
        flood = [f"resp_f{i:03}" for i in range(100)]
        for i, rid in enumerate(flood):
            await store.put(record(rid, age=500 - i))
        assert [r.id for r in await store.chain(bobs[-1], BOB)] == bobs
        assert await store.get("resp_c", CAROL) is not None
        kept = await alive(store, ALICE, flood)
        assert kept == flood[-len(kept):] and len(kept) == 10 - 3 - 1

    with_store(url, check, responses_max_rows=10)


def test_global_bytes_never_evict_a_key_below_its_fair_share(url: str) -> None:
    async def check(store: ResponseStore) -> None:
        await store.put(record("resp_bob", owner=BOB, age=1000, text="b" * 200_000))
        flood = [f"resp_f{i:02}" for i in range(12)]
        for i, rid in enumerate(flood):
            await store.put(record(rid, age=500 - i, text="a" * 100_000))
        assert await store.get("resp_bob", BOB) is not None
        kept = await alive(store, ALICE, flood)
        # 1 MiB for everyone: BOB's ~400 KB stays, ALICE keeps what is left (~200 KB a row)
        assert kept == flood[-len(kept):] and 1 <= len(kept) <= 3

    with_store(url, check, responses_max_bytes=1024**2)


def test_fair_shares_trim_only_owners_above_the_water_level() -> None:
    limits = StoreLimits(max_rows=60, max_rows_per_key=1000, max_bytes=10**9,
                         max_bytes_per_key=10**9)
    usage = {"a": (100, 1), "b": (3, 1), "c": (50, 1)}
    # b keeps its 3; a and c share the remaining 57 (28 each, the largest level that fits)
    assert fair_shares(usage, limits) == {"a": (28, 10**9), "c": (28, 10**9)}
    assert fair_shares({"a": (60, 1)}, limits) == {}  # at the cap: nothing to do
    # per-key quotas apply even when the store is far from full
    assert fair_shares(usage, StoreLimits(max_rows_per_key=40)) == {"a": (40, 256 * 1024**2),
                                                                     "c": (40, 256 * 1024**2)}
    bytes_only = StoreLimits(max_bytes=1000, max_bytes_per_key=800)
    assert fair_shares({"a": (1, 900), "b": (1, 100)}, bytes_only) == {"a": (10_000, 800)}
    assert fair_shares({"a": (1, 900), "b": (1, 300)}, bytes_only) == {"a": (10_000, 700)}


def test_rows_know_their_size(url: str) -> None:
    async def check(store: ResponseStore) -> None:
        await store.put(record("resp_1", text="héllo"))
        got = await store.get("resp_1", ALICE)
        assert got is not None
        return got

    got = with_store(url, check)
    expected = len(orjson.dumps(got.response)) + len(orjson.dumps(got.input_items))
    assert raw_query(url, "SELECT bytes FROM mserve_responses WHERE id = 'resp_1'") == [(expected,)]


OLD_SCHEMA = ("CREATE TABLE mserve_responses (id TEXT PRIMARY KEY, owner TEXT NOT NULL, "
              "created_at BIGINT NOT NULL, previous_response_id TEXT, response TEXT NOT NULL, "
              "input_items TEXT NOT NULL)",
              "CREATE INDEX mserve_responses_created ON mserve_responses (created_at, id)")


def raw_query(url: str, sql: str, *statements: tuple[str, tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    if url.startswith("sqlite:///"):
        conn: Any = sqlite3.connect(url.removeprefix("sqlite:///"))
    else:
        conn = psycopg.connect(url)
    try:
        for statement, params in statements:
            conn.execute(statement.replace("?", "%s") if not url.startswith("sqlite") else
                         statement, params)
        rows = [tuple(r) for r in conn.execute(sql).fetchall()]
        conn.commit()
        return rows
    finally:
        conn.close()


def test_a_table_from_before_quotas_is_migrated(url: str) -> None:
    response, items = '{"id": "resp_old", "output": []}', '[{"id": "msg_1", "content": "héllo"}]'
    raw_query(url, "SELECT 1", *((sql, ()) for sql in OLD_SCHEMA),
              ("INSERT INTO mserve_responses VALUES (?, ?, ?, ?, ?, ?)",
               ("resp_old", ALICE, int(time.time()) - 10, None, response, items)))
    assert raw_query(url, "SELECT COUNT(*) FROM mserve_responses") == [(1,)]

    async def check(store: ResponseStore) -> None:
        got = await store.get("resp_old", ALICE)
        assert got is not None and got.input_items == [{"id": "msg_1", "content": "héllo"}]
        await store.put(record("resp_new", previous="resp_old"))
        assert [r.id for r in await store.chain("resp_new", ALICE)] == ["resp_old", "resp_new"]

    with_store(url, check)
    size = len(response.encode()) + len(items.encode())
    assert raw_query(url, "SELECT bytes, stored_at / 1000000 - created_at FROM mserve_responses "
                          "WHERE id = 'resp_old'") == [(size, 0)]
    # A second store (another replica, a restart) finds the column there and changes nothing.
    with_store(url, lambda store: store.ping(), responses_max_rows_per_key=1)
    assert raw_query(url, "SELECT id FROM mserve_responses ORDER BY id") == [("resp_new",),
                                                                             ("resp_old",)]


def test_concurrent_puts_and_reads(url: str) -> None:
    async def check(store: ResponseStore) -> None:
        ids = [f"resp_c{i}" for i in range(40)]
        await asyncio.gather(*(store.put(record(i)) for i in ids))
        found = await asyncio.gather(*(store.get(i, ALICE) for i in ids))
        assert [r.id if r else None for r in found] == ids

    with_store(url, check)


def test_a_second_store_on_the_same_database_sees_the_same_data(url: str) -> None:
    """What replicas rely on: any of them continues a conversation another one stored."""
    async def check(first: ResponseStore) -> None:
        second = open_store(Settings(responses_store=url))
        assert second is not None
        try:
            await first.put(record("resp_1"))
            await second.put(record("resp_2", previous="resp_1"))
            chain = await first.chain("resp_2", ALICE)
            assert [r.id for r in chain or []] == ["resp_1", "resp_2"]
            assert await second.delete("resp_1", ALICE)
            assert await first.get("resp_1", ALICE) is None
        finally:
            await second.close()

    with_store(url, check)


async def assert_unavailable(store: ResponseStore) -> None:
    with pytest.raises(StoreUnavailable):
        await store.ping()
    with pytest.raises(StoreUnavailable):
        await store.put(record("resp_1"))
    with pytest.raises(StoreUnavailable):
        await store.get("resp_1", ALICE)


def test_postgres_that_is_not_there_is_unavailable_at_once() -> None:
    with_store(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", assert_unavailable)


def test_sqlite_on_an_unwritable_path_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with_store(f"sqlite:///{tmp_path / 'a-file' / 'responses.sqlite3'}", assert_unavailable)


def test_sqlite_opened_while_another_process_writes_a_new_file(tmp_path: Path) -> None:
    """Several API processes opening one new file: while one holds a write, another's switch to
    WAL waits for it (SQLite refuses that switch at once instead of waiting: CI saw the put fail
    with "database is locked"), then it stores and reads."""
    path = tmp_path / "responses.sqlite3"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE other (x)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO other VALUES (1)")
    release = threading.Timer(0.3, other.execute, ("COMMIT",))
    release.start()

    async def check(store: ResponseStore) -> None:
        await store.put(record("resp_1"))
        assert (await store.get("resp_1", ALICE)) is not None

    try:
        with_store(f"sqlite:///{path}", check)
    finally:
        release.join()
        other.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_postgres_store_recovers_after_a_restart(postgres_server: PostgresServer) -> None:
    url = new_database(postgres_server.url)

    async def check(store: ResponseStore) -> None:
        await asyncio.gather(*(store.put(record(f"resp_{i}")) for i in range(8)))  # warm workers
        postgres_server.stop()
        try:
            await assert_unavailable(store)
        finally:
            postgres_server.start()
        found = await asyncio.gather(*(store.get(f"resp_{i}", ALICE) for i in range(8)))
        assert all(found)
        await store.ping()

    with_store(url, check)


def test_open_store(tmp_path: Path) -> None:
    assert open_store(Settings(responses_store="off")) is None

    async def check(store: ResponseStore) -> None:
        await store.ping()

    with_store("sqlite", check, cache_dir=tmp_path / "cache")
    assert (tmp_path / "cache" / "responses.sqlite3").is_file()

    for bad in ("mysql://u@h/db", "sqlite://", "sqlite:///", "postgresql://u:hunter2@[::1/db",
                "postgresql://u:hunter2@h:port/db", "postgres://h/db?nope=1"):
        with pytest.raises(SettingsError, match="responses_store") as info:
            open_store(Settings(responses_store=bad))
        assert "hunter2" not in str(info.value)


def test_an_owners_quota_is_checked_on_its_first_write_then_every_percent() -> None:
    from server.responses.store import SQLStore
    from server.responses.store_sql import SQLite

    store = SQLStore(SQLite(Path("/nonexistent/never-opened.db")),
                     StoreLimits(max_rows_per_key=500, max_bytes_per_key=100_000))
    due = [store._owner_due(ALICE, 10) for _ in range(11)]
    assert due == [True, False, False, False, False, True, False, False, False, False, True]
    assert store._owner_due(BOB, 10) is True  # each owner on its own
    assert [store._owner_due(ALICE, 600) for _ in range(2)] == [False, True]  # 1% of the bytes


def _process_writes(url: str, name: str, start: Any, count: int) -> list[str]:
    """In a process of its own: after ``start``, store ``count`` records, each following the
    previous one of the *other* process when it is there, then read back all of them."""
    other = "b" if name == "a" else "a"

    async def main() -> list[str]:
        store = open_store(Settings(responses_store=url))
        assert store is not None
        try:
            for i in range(count):
                previous = f"resp_{other}{i - 1}" if i else None
                if previous and await store.get(previous, ALICE) is None:
                    previous = None
                await store.put(record(f"resp_{name}{i}", previous=previous))
            found = await asyncio.gather(*(store.get(f"resp_{n}{i}", ALICE)
                                           for n in (name, other) for i in range(count)))
            return [r.id for r in found if r is not None]
        finally:
            await store.close()

    start.wait(30)
    return asyncio.run(main())


def test_sqlite_shared_by_processes(tmp_path: Path) -> None:
    """What several API processes (api_processes > 1) rely on: two processes writing one new
    SQLite file at once (schema, WAL switch, interleaved writes) both succeed, and each reads
    what the other stored."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    url = f"sqlite:///{tmp_path / 'responses.sqlite3'}"
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(2, mp_context=context) as pool:
        start = manager.Event()
        futures = [pool.submit(_process_writes, url, name, start, 60) for name in ("a", "b")]
        time.sleep(2)  # both processes imported and waiting
        start.set()
        seen = [f.result(timeout=120) for f in futures]

    async def check(store: ResponseStore) -> None:
        for name in ("a", "b"):
            chain = await store.chain(f"resp_{name}59", ALICE)  # links across processes resolve
            assert chain is not None and chain[-1].id == f"resp_{name}59"
        assert len({r.id for r in chain}) == len(chain)

    with_store(url, check)
    assert all(len(ids) >= 60 for ids in seen)
    assert max(len(ids) for ids in seen) == 120  # the one that finished last read all of both
