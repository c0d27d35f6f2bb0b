"""``POST /v1/chat/completions``: parse, admit, prepare (all validation), then JSON or SSE."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from server import metrics
from server.admission import Admission
from server.errors import InvalidRequest
from server.protocol import parse_request
from server.sse import SSEResponse

router = APIRouter()
log = logging.getLogger("server.requests")


async def _read_json(request: Request) -> Any:
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


async def _released(frames: AsyncIterator[bytes], admission: Admission) -> AsyncIterator[bytes]:
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


@router.post("/v1/chat/completions")
async def create_chat_completion(request: Request) -> Response:
    state = request.app.state.server
    body = await _read_json(request)
    service = state.require_service()
    state.admission.admit()  # 429 before any tokenisation
    try:
        chat_request = parse_request(body, headers=request.headers)
        prepared = await service.prepare(chat_request)
        if chat_request.stream:
            frames = await service.open_stream(prepared)
    except BaseException:
        state.admission.release()
        raise
    if chat_request.stream:
        # Streams in flight at SIGTERM finish within the drain window (state.drain waits).
        return SSEResponse(_released(frames, state.admission))  # type: ignore[return-value]
    work = asyncio.ensure_future(service.complete(prepared))
    watcher = asyncio.ensure_future(_until_disconnect(request))
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
        left = not work.done()
        if left:  # the client went away: cancelling aborts the engine request
            work.cancel()
            metrics.DISCONNECTS.inc()
            await asyncio.wait({work})
    finally:
        watcher.cancel()
        state.admission.release()
    if left:
        return Response(status_code=499)
    return JSONResponse(work.result())
