"""What every generating route does around its service: read the body, hold an admission slot
for the whole request, and notice a client that leaves (which aborts the engine work)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from server import metrics
from server.admission import Admission
from server.errors import InvalidRequest


async def read_json(request: Request) -> Any:
    raw = await request.body()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("The request body is not valid JSON.", code="invalid_json") from None


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
