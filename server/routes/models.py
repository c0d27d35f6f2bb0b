"""``GET /v1/models`` and ``GET /v1/models/{id}``.

Each entry is an OpenAI ``Model`` (``id``, ``object``, ``created``, ``owned_by``) that is also
a Mistral ``BaseModelCard`` (what the ``mistralai`` SDK validates): ``type: "base"``,
``capabilities`` from the model's preset, ``max_context_length`` (the engine's once loaded),
``aliases`` (the other ids this server accepts for the model) and, when the preset has one,
``default_model_temperature``.

Anthropic's clients (they send ``anthropic-version`` on every request) get Anthropic's Models
API instead: ``ModelInfo`` objects (``type: "model"``, ``id``, ``display_name``, ``created_at``,
``max_input_tokens``…) in a page (``has_more``, ``first_id``, ``last_id``; ``limit``,
``after_id``, ``before_id``), and errors in Anthropic's envelope.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request

from server.errors import InvalidRequest, ModelNotFound, is_anthropic_client
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
    if is_anthropic_client(request.scope["headers"]):
        return _anthropic_page(request, ids, created, context)
    return {"object": "list", "data": [model_card(state.model, i, created, context) for i in ids]}


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    state = request.app.state.server
    if model_id != state.model.id and model_id not in state.model.aliases:
        raise ModelNotFound(f"The model '{model_id}' does not exist.", param="model")
    if is_anthropic_client(request.scope["headers"]):
        return anthropic_model(model_id, int(state.started_at), _context_length(state))
    return model_card(state.model, model_id, int(state.started_at), _context_length(state))


def anthropic_model(model_id: str, created: int, context: int | None) -> dict[str, Any]:
    """An Anthropic ``ModelInfo``; the context bounds both the input and ``max_tokens``."""
    info: dict[str, Any] = {
        "type": "model", "id": model_id, "display_name": model_id,
        "created_at": datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "lifecycle": "active", "deprecated_at": None, "retires_at": None,
    }
    if context:
        info["max_input_tokens"] = info["max_tokens"] = context
    return info


def _anthropic_page(request: Request, ids: list[str], created: int,
                    context: int | None) -> dict[str, Any]:
    query = request.query_params
    raw = query.get("limit", "20")
    # ASCII digits, few of them: int() refuses "²" (a digit to isdigit) and 5000-digit strings
    limit = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 4 else 0
    if not 1 <= limit <= 1000:
        raise InvalidRequest("'limit' must be an integer from 1 to 1000.", param="limit")
    after, before = query.get("after_id"), query.get("before_id")
    if after is not None and before is not None:
        raise InvalidRequest("Give 'after_id' or 'before_id', not both.", param="before_id")
    start, stop = 0, len(ids)
    for name, cursor in (("after_id", after), ("before_id", before)):
        if cursor is not None and cursor not in ids:
            raise InvalidRequest(f"'{name}' names no model of this server.", param=name)
    if after is not None:
        start = ids.index(after) + 1
    if before is not None:
        stop = ids.index(before)
        start = max(0, stop - limit)
    chosen = ids[start:stop][:limit]
    data = [anthropic_model(i, created, context) for i in chosen]
    more = start + len(chosen) < len(ids) if before is None else start > 0
    return {"data": data, "has_more": more, "first_id": chosen[0] if chosen else None,
            "last_id": chosen[-1] if chosen else None}
