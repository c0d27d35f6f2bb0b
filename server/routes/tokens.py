"""``POST /tokenize`` and ``POST /detokenize`` (vLLM's shapes; API keys as every route)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from server.completions import tokens
from server.completions.protocol import parse_tokenize_request
from server.protocol import parse_request
from server.routes.flow import off_loop, read_json

router = APIRouter()


@router.post("/tokenize")
async def tokenize(request: Request) -> dict[str, Any]:
    state = request.app.state.server
    body = await read_json(request)
    state.require_service()
    req = parse_tokenize_request(body)
    chat = None
    if req.messages is not None:  # the very chat request (its images, tools, reasoning fields)
        chat = await off_loop(request, lambda: parse_request(body, budgets=state.budgets))
    return await tokens.tokenize(state.completions, req, chat)


@router.post("/detokenize")
async def detokenize(request: Request) -> dict[str, Any]:
    state = request.app.state.server
    body = await read_json(request)
    state.require_service()
    return tokens.detokenize(state.completions, body)
