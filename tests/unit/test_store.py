"""The response store, on SQLite and on a real PostgreSQL server (tests/pg.py).

What /v1/responses relies on: records come back exactly as stored, only to the key that stored
them, only while they are alive (TTL, max rows); chains resolve oldest first or not at all; a
second store on the same database (another replica) sees the same data; a store that is down
raises StoreUnavailable, quickly.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from server.responses.store import (
    ResponseStore, StoredResponse, StoreUnavailable, open_store, owner_for)
from server.settings import Settings, SettingsError
from tests.pg import PostgresServer, free_port, new_database

T = TypeVar("T")
ALICE, BOB = owner_for("alice-key"), owner_for("bob-key")


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
        assert await store.chain("resp_a", BOB) is None
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
        assert await store.chain("resp_new", ALICE) is None  # its ancestor expired
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


def test_chain_is_oldest_first_or_none(url: str) -> None:
    async def check(store: ResponseStore) -> None:
        await store.put(record("resp_1", age=3))
        await store.put(record("resp_2", previous="resp_1", age=2))
        await store.put(record("resp_3", previous="resp_2", age=1))
        chain = await store.chain("resp_3", ALICE)
        assert chain is not None and [r.id for r in chain] == ["resp_1", "resp_2", "resp_3"]
        assert chain[1] == await store.get("resp_2", ALICE)
        assert [r.id for r in await store.chain("resp_1", ALICE) or []] == ["resp_1"]
        assert await store.chain("resp_missing", ALICE) is None
        assert await store.chain("resp_3", ALICE, limit=2) is None  # longer than the limit

        # Someone else's ancestor breaks the chain.
        await store.put(record("resp_bob", owner=BOB))
        await store.put(record("resp_x", previous="resp_bob"))
        assert await store.chain("resp_x", ALICE) is None

        # So does a deleted one.
        assert await store.delete("resp_2", ALICE)
        assert await store.chain("resp_3", ALICE) is None

    with_store(url, check)


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
