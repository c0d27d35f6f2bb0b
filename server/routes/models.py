"""``GET /v1/models`` and ``GET /v1/models/{id}``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from server.errors import ModelNotFound
from server.model import ModelInfo

router = APIRouter()


def model_card(model: ModelInfo, model_id: str, created: int) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "mistralai"}


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    state = request.app.state.server
    created = int(state.started_at)
    ids = [state.model.id, *state.model.aliases]
    return {"object": "list", "data": [model_card(state.model, i, created) for i in ids]}


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    state = request.app.state.server
    if model_id != state.model.id and model_id not in state.model.aliases:
        raise ModelNotFound(f"The model '{model_id}' does not exist.", param="model")
    return model_card(state.model, model_id, int(state.started_at))
