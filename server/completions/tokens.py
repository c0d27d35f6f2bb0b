"""``/tokenize`` and ``/detokenize`` in vLLM's shapes, over the same tokenizer as generation.

A text ``prompt`` is tokenized as ``/v1/completions`` does (BOS unless ``add_special_tokens`` is
false); chat ``messages`` (with ``tools``, images, ``reasoning_effort``…) are rendered by the chat
pipeline itself (``ChatService.prompt_ids``), so ``count`` is the ``usage.prompt_tokens`` of the
same chat request. A prompt longer than the context is counted, not refused.
"""

from __future__ import annotations

from typing import Any

from server.completions.protocol import TokenizeRequest, parse_detokenize_request
from server.completions.service import CompletionService
from server.errors import ModelNotFound
from server.protocol import ChatCompletionRequest


def _check_model(service: CompletionService, name: str | None) -> None:
    if not service.model.accepts(name):
        raise ModelNotFound(f"The model '{name}' does not exist. This server serves "
                            f"'{service.model.id}'.", param="model")


async def tokenize(service: CompletionService, req: TokenizeRequest,
                   chat: ChatCompletionRequest | None) -> dict[str, Any]:
    """``chat``: the request parsed as a chat request when it has ``messages``."""
    _check_model(service, req.model)
    if chat is not None:
        ids = await service.chat.prompt_ids(chat)
    else:
        assert req.prompt is not None
        ids = await service.encode(req.prompt, bos=req.add_special_tokens, param="prompt")
    out: dict[str, Any] = {"count": len(ids), "max_model_len": service.max_model_len,
                           "tokens": ids}
    if req.return_token_strs:
        out["token_strs"] = [service.vocab.token_text(t) for t in ids]
    return out


def detokenize(service: CompletionService, body: Any) -> dict[str, Any]:
    req = parse_detokenize_request(body, service.max_model_len)
    _check_model(service, req.model)
    if req.tokens:
        service.check_ids(req.tokens, "tokens")
    return {"prompt": service.decode(req.tokens)}
