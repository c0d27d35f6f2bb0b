"""``POST /v1/chat/completions``: parse, admit, prepare (all validation), then JSON or SSE."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from server.protocol import parse_request
from server.routes.flow import answer, off_loop, read_json, released
from server.sse import SSEResponse

router = APIRouter()


@router.post("/v1/chat/completions")
async def create_chat_completion(request: Request) -> Response:
    state = request.app.state.server
    body = await read_json(request)
    service = state.require_service()
    state.admission.admit()  # 429 before any tokenisation
    try:
        chat_request = await off_loop(request, lambda: parse_request(
            body, headers=request.headers, budgets=state.budgets))
        prepared = await service.prepare(chat_request)
        if chat_request.stream:
            frames = await service.open_stream(prepared)
    except BaseException:
        state.admission.release()
        raise
    if chat_request.stream:
        # Streams in flight at SIGTERM finish within the drain window (state.drain waits).
        return SSEResponse(released(frames, state.admission))
    return await answer(request, service.complete(prepared), state.admission)
