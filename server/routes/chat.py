"""``POST /v1/chat/completions``: parse, prepare (all validation), then JSON or SSE."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse

from server.errors import InvalidRequest
from server.protocol import parse_request

router = APIRouter()


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


@router.post("/v1/chat/completions")
async def create_chat_completion(request: Request) -> Response:
    state = request.app.state.server
    body = await _read_json(request)
    chat_request = parse_request(body)
    service = state.require_service()
    prepared = service.prepare(chat_request)
    headers = {"X-Request-Id": request.headers.get("x-request-id") or prepared.request_id}
    if chat_request.stream:
        frames = await service.open_stream(prepared)
        # Streams in flight at SIGTERM may finish within the drain window (uvicorn waits 30 s).
        return EventSourceResponse(frames, sep="\n", ping=15, headers=headers,
                                   shutdown_grace_period=25)
    work = asyncio.ensure_future(service.complete(prepared))
    watcher = asyncio.ensure_future(_until_disconnect(request))
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not work.done():  # the client went away: cancelling aborts the engine request
        work.cancel()
        return Response(status_code=499)
    return JSONResponse(work.result(), headers=headers)
