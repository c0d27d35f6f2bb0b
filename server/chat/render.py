"""OpenAI request → mistral-common request → validated, normalized prompt token ids.

Tool-call ids: Mistral models need ``^[a-zA-Z0-9]{9}$`` ids. Any id a client sends is mapped
deterministically (valid ids are kept, others hashed to base62 with collision probing), in both
the assistant ``tool_calls`` and the ``tool`` messages, so every client id round-trips.

Mistral API request fields that change the prompt are applied here:

- ``safe_prompt``: Mistral's documented guardrailing system prompt goes first;
- ``prompt_mode: "reasoning"``: the reasoning system prompt of the model's preset next (400 for
  models without one), then the client's own system messages;
- a final assistant message (``prefix: true`` or not) is a prefix the model continues; the answer
  holds only the continuation (the prefix is not echoed);
- ``reasoning_effort``: mistral-common's model settings, for tokenizers that have them (v15+).
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from mistral_common.exceptions import MistralCommonException
from mistral_common.protocol.instruct.chunk import ImageChunk, TextChunk
from mistral_common.protocol.instruct.messages import UserMessage
from mistral_common.protocol.instruct.request import ChatCompletionRequest as MistralRequest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
from PIL import Image

from server.chat import schemas
from server.chat.images import render_grids_only
from server.errors import ContextLengthExceeded, InvalidRequest
from server.model import ModelInfo
from server.protocol import (
    AssistantMessage,
    ChatCompletionRequest,
    ImagePart,
    TextPart,
    ToolMessage,
)

# Mistral's guardrailing system prompt, verbatim (docs.mistral.ai, "Guardrailing": toggling
# ``safe_prompt`` "will prepend your messages with the following system prompt").
MISTRAL_SAFE_PROMPT = (
    "Always assist with care, respect, and truth. Respond with utmost utility yet securely. "
    "Avoid harmful, unethical, prejudiced, or negative content. Ensure replies promote fairness "
    "and positivity."
)

_ID = re.compile(r"^[a-zA-Z0-9]{9}$")
_ALPHABET = string.ascii_letters + string.digits


def _hashed_id(client_id: str, attempt: int) -> str:
    digest = int.from_bytes(hashlib.sha256(f"{attempt}:{client_id}".encode()).digest(), "big")
    chars = []
    for _ in range(9):
        digest, rem = divmod(digest, len(_ALPHABET))
        chars.append(_ALPHABET[rem])
    return "".join(chars)


class ToolIdMap:
    """Deterministic, collision-free client id → Mistral id mapping for one request."""

    def __init__(self) -> None:
        self._forward: dict[str, str] = {}
        self._used: set[str] = set()

    def add(self, client_id: str) -> str:
        if client_id in self._forward:
            return self._forward[client_id]
        attempt = 0
        mistral_id = client_id if _ID.match(client_id) else _hashed_id(client_id, 0)
        while mistral_id in self._used:
            attempt += 1
            mistral_id = _hashed_id(client_id, attempt)
        self._forward[client_id] = mistral_id
        self._used.add(mistral_id)
        return mistral_id

    def get(self, client_id: str) -> str | None:
        return self._forward.get(client_id)


def text_of(content: str | list[Any] | None) -> str:
    """The text of a message; ``thinking`` parts (earlier reasoning) are not part of the prompt."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.text for part in content if isinstance(part, TextPart))


def _assistant(msg: AssistantMessage, ids: ToolIdMap, index: int) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "assistant", "content": text_of(msg.content) or None}
    if msg.tool_calls:
        seen: set[str] = set()
        calls = []
        for j, call in enumerate(msg.tool_calls):
            if call.id in seen:
                raise InvalidRequest(
                    f"Duplicate tool call id {call.id!r} in messages[{index}].",
                    param=f"messages[{index}].tool_calls[{j}].id")
            seen.add(call.id)
            calls.append({"id": ids.add(call.id), "type": "function",
                          "function": {"name": call.function.name,
                                       "arguments": call.function.arguments or "{}"}})
        out["tool_calls"] = calls
    return out


def _tool(msg: ToolMessage, ids: ToolIdMap, index: int) -> dict[str, Any]:
    mistral_id = ids.get(msg.tool_call_id)
    if mistral_id is None:
        raise InvalidRequest(
            f"messages[{index}] has tool_call_id {msg.tool_call_id!r}, which matches no tool "
            "call of an earlier assistant message.", param=f"messages[{index}].tool_call_id")
    out = {"role": "tool", "tool_call_id": mistral_id, "content": text_of(msg.content)}
    if msg.name:
        out["name"] = msg.name
    return out


def _user(content: str | list[Any], images: Iterator[Image.Image]) -> dict[str, Any]:
    """A user message; one with images also carries its mistral-common chunks in order
    (``_chunks``), which ``Renderer.render`` puts in place of the text."""
    out: dict[str, Any] = {"role": "user", "content": text_of(content)}
    if isinstance(content, list) and any(isinstance(p, ImagePart) for p in content):
        out["_chunks"] = [ImageChunk(image=next(images)) if isinstance(p, ImagePart)
                          else TextChunk(text=p.text) for p in content
                          if isinstance(p, ImagePart) or p.text]
    return out


def to_openai_messages(request: ChatCompletionRequest,
                       images: Sequence[Image.Image] = ()) -> list[dict[str, Any]]:
    """OpenAI-shaped dicts for mistral-common; ``images``: the decoded images in prompt order."""
    ids = ToolIdMap()
    pending = iter(images)
    messages: list[dict[str, Any]] = []
    for i, msg in enumerate(request.messages):
        if msg.role in ("system", "developer"):
            messages.append({"role": "system", "content": text_of(msg.content)})
        elif msg.role == "user":
            messages.append(_user(msg.content, pending))
        elif msg.role == "assistant":
            messages.append(_assistant(msg, ids, i))
        else:
            messages.append(_tool(msg, ids, i))
    return messages


def _tools(request: ChatCompletionRequest) -> list[dict[str, Any]] | None:
    if not request.tools:
        return None
    return [{"type": "function", "function": {
        "name": t.function.name,
        "description": t.function.description or "",
        "parameters": t.function.parameters or {"type": "object", "properties": {}},
    }} for t in request.tools]


@dataclass(frozen=True, slots=True)
class Prompt:
    token_ids: list[int]
    continues_assistant: bool


class Renderer:
    """Renders requests with the model's own mistral-common tokenizer."""

    def __init__(self, tokenizer: MistralTokenizer, max_model_len: int, *,
                 model_id: str = "this model", reasoning_model: bool = False,
                 reasoning_system_prompt: str | None = None) -> None:
        render_grids_only(tokenizer)  # image grids from the image size; vLLM does the pixels
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.model_id = model_id
        self.reasoning_model = reasoning_model
        self.reasoning_system_prompt = reasoning_system_prompt

    @classmethod
    def for_model(cls, model: ModelInfo, max_model_len: int) -> "Renderer":
        return cls(model.tokenizer, max_model_len, model_id=model.id,
                   reasoning_model=model.reasoning,
                   reasoning_system_prompt=model.reasoning_system_prompt)

    def _system_prefix(self, request: ChatCompletionRequest) -> list[str]:
        """System prompt text the Mistral API fields put before the client's own."""
        texts = [MISTRAL_SAFE_PROMPT] if request.safe_prompt else []
        if request.prompt_mode == "reasoning":
            if not self.reasoning_model:
                raise InvalidRequest(
                    f"'prompt_mode': 'reasoning' needs a reasoning model; '{self.model_id}' is not "
                    "one.", param="prompt_mode")
            if not self.reasoning_system_prompt:
                raise InvalidRequest(
                    f"'prompt_mode': 'reasoning' is not available for '{self.model_id}': its "
                    "preset sets no reasoning system prompt (reasoning_system_prompt).",
                    param="prompt_mode")
            texts.append(self.reasoning_system_prompt)
        return texts

    def _settings(self, request: ChatCompletionRequest) -> dict[str, Any]:
        """``reasoning_effort`` as mistral-common model settings (tokenizer v15+ only)."""
        effort = request.reasoning_effort
        if effort is None:
            return {}
        inner = self.tokenizer.instruct_tokenizer.tokenizer
        version = inner.version
        if not version.supports_model_settings:
            raise InvalidRequest(
                f"'reasoning_effort' is not supported by '{self.model_id}': its tokenizer "
                f"({version.value}) has no model settings (v15 and later do).",
                param="reasoning_effort", code="unsupported_parameter")
        builder = inner.model_settings_builder
        field = builder.reasoning_effort if builder is not None else None
        allowed = [str(getattr(v, "value", v)) for v in field.values] if field is not None else []
        if not allowed:
            raise InvalidRequest(f"'reasoning_effort' is not supported by '{self.model_id}'.",
                                 param="reasoning_effort", code="unsupported_parameter")
        if effort not in allowed:
            raise InvalidRequest(
                f"Invalid value for 'reasoning_effort': {effort!r}; '{self.model_id}' accepts "
                f"{', '.join(repr(v) for v in allowed)}.", param="reasoning_effort",
                code="invalid_value")
        return {"reasoning_effort": effort}

    def render(self, request: ChatCompletionRequest, *, include_tools: bool,
               images: Sequence[Image.Image] = (), check_length: bool = True) -> Prompt:
        """The prompt; ``check_length=False`` counts a prompt longer than the context instead
        of refusing it (``/tokenize``)."""
        settings = self._settings(request)
        messages = _with_system_prefix(to_openai_messages(request, images),
                                       self._system_prefix(request))
        chunks = {k: m.pop("_chunks") for k, m in enumerate(messages) if "_chunks" in m}
        last = request.messages[-1]
        prefix = last.role == "assistant"
        if prefix and messages[-1].get("tool_calls"):
            raise InvalidRequest(
                "The last message is an assistant message with tool calls: add the tool results "
                "(role 'tool') before asking for the next turn.", param="messages")
        if prefix and not messages[-1]["content"]:
            raise InvalidRequest("A final assistant message (a prefix to continue) must have content.",
                                 param=f"messages[{len(request.messages) - 1}].content")
        try:
            mistral_request = MistralRequest.from_openai(
                messages=messages,
                tools=_tools(request) if include_tools else None,
                continue_final_message=prefix,
                **settings,
            )
            for k, content in chunks.items():  # from_openai keeps the messages one to one
                mistral_request.messages[k] = UserMessage(content=content)
            with schemas.known_tools(request):
                tokens = self.tokenizer.encode_chat_completion(mistral_request).tokens
        except (MistralCommonException, ValueError, TypeError, KeyError) as exc:
            raise InvalidRequest(_clean(exc), param="messages") from None
        if check_length and len(tokens) >= self.max_model_len:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self.max_model_len} tokens. However, "
                f"your messages resulted in {len(tokens)} tokens. Please reduce the length of "
                "the messages.", param="messages")
        return Prompt(token_ids=tokens, continues_assistant=prefix)


def _with_system_prefix(messages: list[dict[str, Any]], texts: list[str]) -> list[dict[str, Any]]:
    """One system prompt: the prefix texts, then the client's leading system message if any."""
    if not texts:
        return messages
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": "\n\n".join([*texts, messages[0]["content"]])},
                *messages[1:]]
    return [{"role": "system", "content": "\n\n".join(texts)}, *messages]


def _clean(exc: Exception) -> str:
    """mistral-common's validation messages are user-facing; pydantic dumps are not."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "validation error" in text:
        return "The messages are not a valid conversation for this model."
    return f"Invalid conversation: {text}"
