"""``GET /v1/models`` and ``GET /v1/models/{id}``.

Each entry is an OpenAI ``Model`` (``id``, ``object``, ``created``, ``owned_by``) that is also
a Mistral ``BaseModelCard`` (what the ``mistralai`` SDK validates): ``type: "base"``,
``capabilities`` from the model's preset, ``max_context_length`` (the engine's once loaded),
``aliases`` (the other ids this server accepts for the model) and, when the preset has one,
``default_model_temperature``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from server.errors import ModelNotFound
from server.model import ModelInfo

router = APIRouter()


def card_capabilities(model: ModelInfo) -> dict[str, bool]:
    """Mistral's capability flags: the preset's values, else what the model's format offers;
    ``vision`` is whether this server takes images for the model (``ModelInfo.vision``)."""
    preset = model.capabilities
    return {
        "completion_chat": preset.get("chat", True),
        "function_calling": preset.get("function_calling", True),
        "reasoning": model.reasoning,
        "vision": model.vision,
        "completion_fim": model.fim,
        "fine_tuning": False,
    }


def model_card(model: ModelInfo, model_id: str, created: int,
               max_context_length: int | None = None) -> dict[str, Any]:
    ids = [model.id, *model.aliases]
    card: dict[str, Any] = {
        "id": model_id, "object": "model", "created": created, "owned_by": "mistralai",
        "type": "base", "capabilities": card_capabilities(model),
        "aliases": [i for i in ids if i != model_id],
    }
    context = max_context_length or model.max_context_length
    if context:
        card["max_context_length"] = context
    if isinstance(model.defaults.get("temperature"), (int, float)):
        card["default_model_temperature"] = model.defaults["temperature"]
    return card


def _context_length(state: Any) -> int | None:
    engine = getattr(state, "engine", None)
    return getattr(engine, "max_model_len", None) if engine is not None else None


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    state = request.app.state.server
    created = int(state.started_at)
    ids = [state.model.id, *state.model.aliases]
    context = _context_length(state)
    return {"object": "list", "data": [model_card(state.model, i, created, context) for i in ids]}


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    state = request.app.state.server
    if model_id != state.model.id and model_id not in state.model.aliases:
        raise ModelNotFound(f"The model '{model_id}' does not exist.", param="model")
    return model_card(state.model, model_id, int(state.started_at), _context_length(state))
