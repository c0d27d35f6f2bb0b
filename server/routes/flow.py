"""What every generating route does around its service: read the body, hold an admission slot
for the whole request, and notice a client that leaves (which aborts the engine work)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from server import metrics
from server.admission import Admission
from server.budgets import THREAD_VALUES, loads, value_count

T = TypeVar("T")

HEAVY = "mserve.heavy"  # scope flag: this request's body is big enough to parse off the loop


async def read_json(request: Request) -> Any:
    """The body as JSON within the server's input budgets (``server.budgets``): a body with
    many values is parsed, depth-checked and later validated (``off_loop``) in a worker thread."""
    raw = await request.body()
    budgets = request.app.state.server.budgets
    if value_count(raw) > THREAD_VALUES:
        request.scope[HEAVY] = True
        return await asyncio.to_thread(loads, raw, budgets)
    return loads(raw, budgets)


async def off_loop(request: Request, work: Callable[[], T]) -> T:
    """``work()``: in a worker thread for a heavy body (validating it is proportional to its
    size), inline otherwise (a thread hop costs more than a small body's validation)."""
    if request.scope.get(HEAVY):
        return await asyncio.to_thread(work)
    return work()


async def _until_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def released(frames: AsyncIterator[bytes], admission: Admission) -> AsyncIterator[bytes]:
    """Hold the admission slot for as long as the stream runs; count clients that leave."""
    finished = False
    try:
        async for frame in frames:
            yield frame
        finished = True
    finally:
        if not finished:
            metrics.DISCONNECTS.inc()
        admission.release()


async def answer(request: Request, work: Awaitable[dict[str, Any]], admission: Admission) -> Response:
    """A non-streaming answer; if the client goes away first, the work is cancelled (which
    aborts the engine request) and the slot released."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_until_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        left = not task.done()
        if left:
            task.cancel()
            metrics.DISCONNECTS.inc()
            await asyncio.wait({task})
    finally:
        watcher.cancel()
        admission.release()
    if left:
        return Response(status_code=499)
    return JSONResponse(task.result())
