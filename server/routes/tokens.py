"""``POST /tokenize`` and ``POST /detokenize`` (vLLM's shapes; API keys as for ``/v1``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from server.completions import tokens
from server.routes.flow import read_json

router = APIRouter()


@router.post("/tokenize")
async def tokenize(request: Request) -> dict[str, Any]:
    state = request.app.state.server
    body = await read_json(request)
    state.require_service()
    return await tokens.tokenize(state.completions, body)


@router.post("/detokenize")
async def detokenize(request: Request) -> dict[str, Any]:
    state = request.app.state.server
    body = await read_json(request)
    state.require_service()
    return tokens.detokenize(state.completions, body)
