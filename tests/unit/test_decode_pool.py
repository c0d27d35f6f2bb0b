"""server.chat.decode_pool: the image decoders' admission (bounded) and turn order (fair)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from server.chat.decode_pool import DecodePool, QueueFull


class Gate:
    """Jobs that record their start and wait until released (one thread: a strict order)."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0

    def job(self, name: str) -> str:
        with self.lock:
            self.order.append(name)
            self.running += 1
            self.most = max(self.most, self.running)
        self.started.set()
        self.release.wait(10)
        with self.lock:
            self.running -= 1
        return name


async def until(event: threading.Event) -> None:
    assert await asyncio.get_running_loop().run_in_executor(None, event.wait, 10)


def test_admission_is_bounded_all_or_nothing():
    pool = DecodePool(threads=1, queue=3)
    first = pool.admit(2)
    with pytest.raises(QueueFull):
        pool.admit(2)
    assert pool.admitted == 2  # a refused batch takes no place
    second = pool.admit(1)
    first.close()
    second.close()
    assert pool.admitted == 0
    with pool.admit(10):  # alone, a batch of any size proceeds
        assert pool.admitted == 10
        with pytest.raises(QueueFull):
            pool.admit(1)
    assert pool.admitted == 0


def test_a_new_request_goes_before_the_next_image_of_one_already_served():
    pool, gate = DecodePool(threads=1, queue=64), Gate()

    async def main() -> None:
        with pool.admit(4) as a, pool.admit(1) as b, pool.admit(2) as c:
            big = [asyncio.ensure_future(a.run(gate.job, f"a{i}")) for i in range(4)]
            await until(gate.started)  # a0 holds the only thread
            small = asyncio.ensure_future(b.run(gate.job, "b0"))
            pair = [asyncio.ensure_future(c.run(gate.job, f"c{i}")) for i in range(2)]
            await asyncio.sleep(0)
            gate.release.set()
            assert await asyncio.gather(*big, small, *pair) == ["a0", "a1", "a2", "a3", "b0", "c0", "c1"]

    asyncio.run(main())
    # b and c had not been served when a0 ended; then the three take turns
    assert gate.order == ["a0", "b0", "c0", "a1", "c1", "a2", "a3"]


def test_never_more_jobs_than_threads_and_all_threads_for_one_request():
    pool, gate = DecodePool(threads=2, queue=64), Gate()

    async def main() -> list[str]:
        with pool.admit(6) as batch:
            jobs = [asyncio.ensure_future(batch.run(gate.job, str(i))) for i in range(6)]
            await until(gate.started)
            for _ in range(1000):  # both threads busy with this one request's images
                if pool.running == 2:
                    break
                await asyncio.sleep(0.01)
            assert pool.running == 2
            gate.release.set()
            return await asyncio.gather(*jobs)

    assert asyncio.run(main()) == [str(i) for i in range(6)]
    assert gate.most == 2


def test_dropped_images_never_run_and_errors_reach_the_request():
    pool, gate = DecodePool(threads=1, queue=64), Gate()

    def fails() -> None:
        raise ValueError("bad image")

    async def main() -> None:
        with pool.admit(3) as batch:
            first = asyncio.ensure_future(batch.run(gate.job, "first"))
            await until(gate.started)
            cancelled = asyncio.ensure_future(batch.run(gate.job, "cancelled"))
            failing = asyncio.ensure_future(batch.run(fails))
            await asyncio.sleep(0)
            cancelled.cancel()
            await asyncio.gather(cancelled, return_exceptions=True)  # its request has seen it
            gate.release.set()
            assert await first == "first"
            with pytest.raises(ValueError, match="bad image"):
                await failing
        with pool.admit(2) as closed:
            gate.release.clear()
            gate.started.clear()
            blocker = asyncio.ensure_future(closed.run(gate.job, "blocker"))
            await until(gate.started)
            left = asyncio.ensure_future(closed.run(gate.job, "left behind"))
            await asyncio.sleep(0)
        gate.release.set()  # the batch closed with "left behind" still waiting
        assert await blocker == "blocker"
        left.cancel()
        with pool.admit(1) as after:
            assert await after.run(gate.job, "after") == "after"

    asyncio.run(main())
    assert gate.order == ["first", "blocker", "after"]
    assert pool.running == 0 and pool.admitted == 0
