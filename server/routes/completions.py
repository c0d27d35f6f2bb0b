"""``POST /v1/completions``: parse, admit, prepare (all validation), then JSON or SSE — as chat."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from server.completions.protocol import parse_completion_request
from server.routes.flow import answer, off_loop, read_json, released
from server.sse import SSEResponse

router = APIRouter()


@router.post("/v1/completions")
async def create_completion(request: Request) -> Response:
    state = request.app.state.server
    body = await read_json(request)
    state.require_service()  # 503 while loading or draining
    service = state.completions
    state.admission.admit()  # 429 before any tokenisation
    try:
        req, prompts = await off_loop(request, lambda: parse_completion_request(
            body, service.limits, state.budgets))
        prepared = await service.prepare(req, prompts)
        if req.stream:
            frames = await service.open_stream(prepared)
    except BaseException:
        state.admission.release()
        raise
    if req.stream:
        return SSEResponse(released(frames, state.admission))
    return await answer(request, service.complete(prepared), state.admission)
