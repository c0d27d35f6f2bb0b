"""``/v1/responses``: create (JSON or typed SSE events), retrieve, delete, list input items.

Stored responses belong to the API key that created them: another key gets a 404."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from server.auth import owner
from server.responses.protocol import parse_responses_request
from server.responses.service import ResponsesService, StoredResponses
from server.routes.flow import answer, off_loop, read_json, released
from server.sse import SSEResponse

router = APIRouter()


def _service(request: Request) -> ResponsesService:
    state = request.app.state.server
    state.require_service()  # 503 while loading or draining
    return state.responses


@router.post("/v1/responses")
async def create_response(request: Request) -> Response:
    state = request.app.state.server
    body = await read_json(request)
    service = _service(request)
    state.admission.admit()
    try:
        req = await off_loop(request, lambda: parse_responses_request(body))
        run = await service.start(req, owner(request))
    except BaseException:
        state.admission.release()
        raise
    if req.stream:
        return SSEResponse(released(service.stream(run), state.admission))
    return await answer(request, service.complete(run), state.admission)


def _stored(request: Request) -> StoredResponses:
    return request.app.state.server.stored  # the store only: no engine needed


@router.get("/v1/responses/{response_id}")
async def get_response(request: Request, response_id: str) -> dict[str, Any]:
    return await _stored(request).get(response_id, owner(request))


@router.delete("/v1/responses/{response_id}")
async def delete_response(request: Request, response_id: str) -> dict[str, Any]:
    return await _stored(request).delete(response_id, owner(request))


@router.get("/v1/responses/{response_id}/input_items")
async def list_input_items(request: Request, response_id: str,
                           limit: int = Query(20, ge=1, le=100),
                           order: Literal["asc", "desc"] = "desc",
                           after: str | None = None) -> dict[str, Any]:
    return await _stored(request).input_items(response_id, owner(request), limit=limit,
                                               order=order, after=after)
