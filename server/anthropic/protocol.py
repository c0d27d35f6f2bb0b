"""Wire types of Anthropic's Messages API requests (``POST /v1/messages`` and
``/v1/messages/count_tokens``), and how their errors read.

Strictness, decided once here: unknown fields are accepted and ignored at every level — what
Claude Code and the ``anthropic`` SDK send that does not apply to a local model
(``context_management``, ``service_tier``, ``container``, ``cache_control`` on blocks,
``citations``…) — while a field this server would have to silently break (``mcp_servers``,
server tools, PDF documents) is a 400 naming it. Types are checked strictly (``"10"`` is not a
number). A 400's ``param`` is the field's path the way Anthropic writes it:
``messages.1.content.0.source.media_type``.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from server.errors import InvalidRequest

T = TypeVar("T", bound=BaseModel)

# vLLM sampling fields a request may add through the SDK's extra_body, with their chat meaning
# (as vLLM's own /v1/messages takes vllm_xargs); Anthropic's own fields are not overridden
PASSTHROUGH = ("min_p", "repetition_penalty", "presence_penalty", "frequency_penalty", "seed",
               "ignore_eos", "min_tokens", "stop_token_ids", "structured_outputs", "vllm_xargs")


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


def invalid(exc: ValidationError, path: str = "") -> InvalidRequest:
    """The first pydantic error as a 400 whose ``param`` is the dotted path of the field."""
    err = exc.errors()[0]
    param = ".".join(p for p in (path, ".".join(str(p) for p in err["loc"])) if p) or None
    if err["type"] == "missing":
        return InvalidRequest("Field required.", param=param, code="missing_required_parameter")
    if err["type"] in ("model_type", "model_attributes_type", "dict_type") and not err["loc"]:
        return InvalidRequest("Input should be an object.", param=param, code="invalid_type")
    code = "invalid_type" if err["type"].endswith(("_type", "_parsing")) else "invalid_value"
    return InvalidRequest(err["msg"].removeprefix("Value error, ") + ".", param=param, code=code)


def check(model: type[T], value: Any, path: str = "") -> T:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise invalid(exc, path) from None


# -- content blocks (checked one by one in convert.py, where their place is known) -------------
class TextBlock(_Lenient):
    type: Literal["text"]
    text: str


class Base64Source(_Lenient):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str = Field(min_length=1)


class URLSource(_Lenient):
    type: Literal["url"]
    url: str = Field(min_length=1)


class ToolUseBlock(_Lenient):
    type: Literal["tool_use"]
    id: str = Field(min_length=1, max_length=256)
    name: str = Field(min_length=1)
    input: dict[str, Any]


class ToolResultBlock(_Lenient):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1, max_length=256)
    content: Any = None  # a string or text/image blocks (convert.py)
    is_error: bool = False


class ThinkingBlock(_Lenient):
    """Earlier thinking echoed back. Not shown to the model again (as in chat history), so its
    ``signature`` is not checked either."""

    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(_Lenient):
    type: Literal["redacted_thinking"]
    data: str


class TextSource(_Lenient):
    type: Literal["text"]
    data: str


# -- request fields ------------------------------------------------------------------------
class ToolDefinition(_Lenient):
    type: Literal["custom"] | None = None
    name: str = Field(min_length=1)
    description: str | None = None
    input_schema: dict[str, Any]
    strict: bool | None = None


class MessageToolChoice(_Lenient):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = Field(None, min_length=1)
    disable_parallel_tool_use: bool = False


class ThinkingConfig(_Lenient):
    type: Literal["enabled", "disabled", "adaptive", "between_tools"]
    budget_tokens: int | None = Field(None, ge=1024)
    display: Literal["summarized", "omitted"] | None = None


class JSONOutputFormat(_Lenient):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(_Lenient):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None  # accepted, not used
    format: JSONOutputFormat | None = None


class MessageMetadata(_Lenient):
    user_id: str | None = Field(None, max_length=256)


class MessagesRequest(_Lenient):
    """Both routes' body: ``max_tokens`` is required by ``/v1/messages`` only (checked in
    ``parse_messages_request``); ``messages``, ``system``, ``tools`` and ``tool_choice`` are
    read block by block in convert.py."""

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    messages: list[Any] = Field(min_length=1, max_length=100_000)
    system: Any = None  # a string or text blocks (convert.py)
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    metadata: MessageMetadata | None = None
    stream: bool = False
    tools: list[Any] | None = None
    tool_choice: MessageToolChoice | None = None
    thinking: ThinkingConfig | None = None
    output_config: OutputConfig | None = None
    output_format: JSONOutputFormat | None = None  # the structured-outputs beta's name for it
    mcp_servers: list[Any] | None = None
    extras: dict[str, Any] = Field(default_factory=dict, exclude=True)  # PASSTHROUGH fields

    @property
    def output_schema(self) -> dict[str, Any] | None:
        fmt = self.output_config.format if self.output_config and self.output_config.format else self.output_format
        return fmt.schema_ if fmt is not None else None


def parse_messages_request(body: Any, *, count_only: bool = False) -> MessagesRequest:
    """The checked request; ``count_only``: ``/v1/messages/count_tokens`` (no ``max_tokens``)."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_type")
    body = {k: v for k, v in body.items() if v is not None}  # null: not given
    body["extras"] = {k: body.pop(k) for k in PASSTHROUGH if k in body}
    req = check(MessagesRequest, body)
    if req.max_tokens is None and not count_only:
        raise InvalidRequest("Field required.", param="max_tokens", code="missing_required_parameter")
    if req.mcp_servers:
        raise InvalidRequest("MCP connectors are not supported by this server; connect MCP "
                             "servers in your client and send their tools as 'tools'.",
                             param="mcp_servers", code="unsupported_parameter")
    if req.system is not None and not isinstance(req.system, (str, list)):
        raise InvalidRequest("Input should be a string or a list of text blocks.", param="system",
                             code="invalid_type")
    if req.tool_choice is not None and req.tool_choice.type == "tool" and not req.tool_choice.name:
        raise InvalidRequest("Field required.", param="tool_choice.name",
                             code="missing_required_parameter")
    thinking = req.thinking
    if thinking is not None and thinking.type == "enabled":
        if thinking.budget_tokens is None:
            raise InvalidRequest("Field required.", param="thinking.budget_tokens",
                                 code="missing_required_parameter")
        if req.max_tokens is not None and thinking.budget_tokens >= req.max_tokens:
            raise InvalidRequest("`max_tokens` must be greater than `thinking.budget_tokens`.",
                                 param="thinking.budget_tokens")
    return req
