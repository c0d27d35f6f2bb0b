"""``POST /v1/messages`` (Anthropic's Messages API: JSON or SSE events) and
``POST /v1/messages/count_tokens``. Errors on these paths use Anthropic's envelope
(``server.errors.ENVELOPES``); the API key may come as ``x-api-key`` (``FrontDoor``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from server.anthropic.protocol import parse_messages_request
from server.anthropic.service import MessagesService
from server.routes.flow import answer, off_loop, read_json, released
from server.sse import SSEResponse

router = APIRouter()


def _service(request: Request) -> MessagesService:
    state = request.app.state.server
    state.require_service()  # 503 (overloaded_error) while loading or draining
    return state.messages


@router.post("/v1/messages")
async def create_message(request: Request) -> Response:
    state = request.app.state.server
    body = await read_json(request)
    service = _service(request)
    state.admission.admit()  # 429 before any tokenisation
    try:
        req = await off_loop(request, lambda: parse_messages_request(body))
        run = await service.start(req)
        if req.stream:
            frames = await service.open_stream(run)
    except BaseException:
        state.admission.release()
        raise
    if req.stream:
        return SSEResponse(released(frames, state.admission))
    return await answer(request, service.complete(run), state.admission)


@router.post("/v1/messages/count_tokens")
async def count_tokens(request: Request) -> dict[str, Any]:
    state = request.app.state.server
    body = await read_json(request)
    service = _service(request)
    state.admission.admit()  # rendering (and decoding images) is work too
    try:
        req = await off_loop(request, lambda: parse_messages_request(body, count_only=True))
        return await service.count_tokens(req)
    finally:
        state.admission.release()
