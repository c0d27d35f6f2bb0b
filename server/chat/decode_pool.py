"""The image decoders: a few threads shared fairly by all requests, behind a bounded queue.

Decoding and resizing run in worker threads (Pillow and OpenCV release the GIL), never on the
event loop and never in asyncio's default pool. Two rules keep one request's images from
holding up everyone else's:

- **Bounded**: at most ``queue`` images are admitted at once across requests (waiting for a
  thread, being fetched or being decoded). A request's images are admitted all together or
  not at all: ``admit`` raises ``QueueFull`` (the caller answers 429 with Retry-After) when they
  do not fit — unless nothing else is admitted, so one request of any size always proceeds.
- **Fair**: the pool hands the executor no more jobs than it has threads, and a thread that
  frees takes the next image of the request served longest ago (one not served yet first). A
  request with ten large images uses every thread while it is alone, yet another request's
  image starts as soon as a thread frees, and requests with several images take turns.

An image whose request goes away (disconnect, or an earlier image of the same request failed)
is dropped from the queue; one already decoding runs to its end and frees its thread.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_THREADS = max(1, min(4, os.cpu_count() or 1))
DEFAULT_QUEUE = 64

_executors: dict[int, ThreadPoolExecutor] = {}  # by thread count: pools of the same size share
_executors_lock = threading.Lock()


def _executor(threads: int) -> ThreadPoolExecutor:
    with _executors_lock:
        if threads not in _executors:
            _executors[threads] = ThreadPoolExecutor(max_workers=threads,
                                                     thread_name_prefix="image-decode")
        return _executors[threads]


class QueueFull(Exception):
    """The images of a request do not fit in the decode queue."""


class _Job:
    __slots__ = ("fn", "args", "loop", "future", "dropped")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.fn, self.args, self.loop = fn, args, loop
        self.future: asyncio.Future[Any] = loop.create_future()
        self.dropped = False

    def settle(self, result: Any, error: BaseException | None) -> None:
        if self.future.done():
            return
        if error is None:
            self.future.set_result(result)
        else:
            self.future.set_exception(error)


class DecodePool:
    def __init__(self, threads: int = DEFAULT_THREADS, queue: int = DEFAULT_QUEUE) -> None:
        if threads < 1 or queue < 1:
            raise ValueError("a decode pool needs at least one thread and one queue place")
        self.threads = threads
        self.queue = queue
        self._lock = threading.Lock()
        self._admitted = 0  # images of admitted batches not yet closed
        self._running = 0  # jobs handed to the executor and not finished
        self._waiting: dict[Batch, deque[_Job]] = {}  # batches with jobs waiting, by arrival
        self._turns = 0  # jobs dispatched so far: Batch.served holds its last one's number

    @property
    def admitted(self) -> int:
        return self._admitted

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        """Images waiting for a thread."""
        with self._lock:
            return sum(not job.dropped for jobs in self._waiting.values() for job in jobs)

    def admit(self, count: int) -> Batch:
        """Admit ``count`` images of one request, or raise ``QueueFull``."""
        with self._lock:
            if self._admitted and self._admitted + count > self.queue:
                raise QueueFull
            self._admitted += count
        return Batch(self, count)

    # -- internals, under self._lock ----------------------------------------------------------
    def _dispatch(self) -> None:
        while self._running < self.threads and self._waiting:
            batch = min(self._waiting, key=_served)  # the batch served longest ago (new: -1)
            jobs = self._waiting[batch]
            job = jobs.popleft()
            if not jobs:
                del self._waiting[batch]
            if job.dropped:
                continue
            self._turns += 1
            batch.served = self._turns
            self._running += 1
            _executor(self.threads).submit(self._work, job)

    def _work(self, job: _Job) -> None:
        try:
            result, error = job.fn(*job.args), None
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting request
            result, error = None, exc
        with self._lock:
            self._running -= 1
            self._dispatch()
        try:
            job.loop.call_soon_threadsafe(job.settle, result, error)
        except RuntimeError:  # the request's event loop is closed: nobody is waiting
            pass


def _served(batch: Batch) -> int:
    return batch.served


class Batch:
    """One request's admitted images: ``run`` decodes one of them; closing returns the places."""

    def __init__(self, pool: DecodePool, count: int) -> None:
        self._pool = pool
        self._count = count
        self.served = -1  # the pool's turn number of this batch's last dispatched job

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        pool = self._pool
        with pool._lock:
            pool._admitted -= self._count
            self._count = 0
            for job in pool._waiting.pop(self, ()):
                job.dropped = True

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a decode thread, when this request's turn comes."""
        pool = self._pool
        job = _Job(fn, args, asyncio.get_running_loop())
        with pool._lock:
            pool._waiting.setdefault(self, deque()).append(job)
            pool._dispatch()
        try:
            return await job.future
        except asyncio.CancelledError:
            with pool._lock:
                job.dropped = True  # still waiting: never started (running: ends on its own)
            raise
