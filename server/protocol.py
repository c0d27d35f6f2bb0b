"""Wire types of ``POST /v1/chat/completions`` requests, and how their errors read.

Strictness policy, decided once here: unknown top-level fields are accepted and ignored (clients
send platform extras through ``extra_body``); fields we know but do not support are rejected with
a 400 that names them; ranges follow OpenAI's documented limits.

Mistral API fields (what the ``mistralai`` SDK and LangChain's ``ChatMistralAI`` send) are accepted
next to OpenAI's with Mistral's meaning: ``random_seed`` (= ``seed``), ``safe_prompt``,
``prompt_mode``, ``reasoning_effort``, ``tool_choice: "any"`` (= ``"required"``), assistant
``prefix``, ``thinking`` content chunks in assistant history, and tool-call ``arguments`` as an
object. Requests from Mistral's SDK (its User-Agent) get Mistral-shaped output, and streams from
LangChain's ``ChatMistralAI`` get whole tool calls (see ``server/chat/mistral.py``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from server.budgets import DEFAULT, Budgets, check_budgets
from server.errors import InvalidRequest

TOOL_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


class ImageURL(_Lenient):
    url: str
    detail: Literal["auto", "low", "high"] | None = None  # accepted; Mistral models have no detail levels


class ImagePart(_Lenient):
    """An image: OpenAI's ``{"image_url": {"url": ...}}`` or Mistral's ``{"image_url": "..."}``."""

    type: Literal["image_url"]
    image_url: str | ImageURL

    @property
    def url(self) -> str:
        return self.image_url if isinstance(self.image_url, str) else self.image_url.url

    def url_param(self, prefix: str) -> str:
        """The ``param`` of this part's URL, e.g. ``messages[1].content[2].image_url.url``."""
        return f"{prefix}.image_url" + ("" if isinstance(self.image_url, str) else ".url")


class ThinkPart(_Lenient):
    """Mistral's ``thinking`` chunk (assistant history from Mistral's SDK); not re-rendered."""

    type: Literal["thinking"]
    thinking: list[dict[str, Any]] = Field(default_factory=list)


def _typed_parts(value: Any) -> Any:
    """vLLM's shorthand ``{"image_url": ...}`` (no ``type``) is an image part."""
    if isinstance(value, list):
        return [{**p, "type": "image_url"} if isinstance(p, dict) and "type" not in p
                and "image_url" in p else p for p in value]
    return value


# Every role parses image parts, so that an image where it cannot go gets a clear 400 that
# points at it (``check_image_roles``) rather than a schema error.
Part = Annotated[TextPart | ImagePart, Field(discriminator="type")]
Content = Annotated[str | Annotated[list[Part], Field(min_length=1)], BeforeValidator(_typed_parts)]
AssistantPart = Annotated[TextPart | ThinkPart | ImagePart, Field(discriminator="type")]


class FunctionCall(_Lenient):
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    arguments: str = "{}"

    @field_validator("arguments", mode="before")
    @classmethod
    def _object_arguments(cls, value: Any) -> Any:
        """Mistral's API also takes the arguments as a JSON object."""
        return json.dumps(value) if isinstance(value, dict) else value


class ToolCall(_Lenient):
    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(_Lenient):
    role: Literal["system", "developer"]
    content: Content
    name: str | None = None


class UserMessage(_Lenient):
    role: Literal["user"]
    content: Content
    name: str | None = None


class AssistantMessage(_Lenient):
    role: Literal["assistant"]
    content: Annotated[str | list[AssistantPart] | None, BeforeValidator(_typed_parts)] = None
    tool_calls: list[ToolCall] | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None
    prefix: bool = False
    name: str | None = None


class ToolMessage(_Lenient):
    role: Literal["tool"]
    content: Content
    tool_call_id: str = Field(min_length=1, max_length=256)
    name: str | None = None


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]


class FunctionDefinition(_Lenient):
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Lenient):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Lenient):
    name: str


class NamedToolChoice(_Lenient):
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(_Lenient):
    include_usage: bool = False


class JsonSchemaFormat(_Lenient):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_present(self) -> "ResponseFormat":
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("`json_schema` is required when type is 'json_schema'")
        return self


class StructuredOutputs(_Strict):
    json_: dict[str, Any] | str | None = Field(None, alias="json")
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    structural_tag: str | dict[str, Any] | None = None
    disable_any_whitespace: bool | None = None
    disable_additional_properties: bool | None = None
    whitespace_pattern: str | None = None


# Known fields we do not implement: a clear 400 beats silently different behaviour.
UNSUPPORTED_FIELDS = {
    "functions": "use `tools` instead of the deprecated `functions`",
    "function_call": "use `tool_choice` instead of the deprecated `function_call`",
    "audio": "audio output is not supported",
    "modalities": "only text output is supported",
    "prediction": "predicted outputs are not supported",
    "guardrails": "guardrails (moderation) are not supported; use 'safe_prompt' for Mistral's "
                  "safety system prompt",
    "top_prompt_logprobs": "prompt logprobs are not supported",
    "use_beam_search": "beam search is not supported",
    "prompt_logprobs": "prompt logprobs are not supported",
    "chat_template": "Mistral models are rendered with mistral-common; custom templates are not supported",
    "guided_whitespace_pattern": "JSON whitespace is a server setting (compact_json)",
}
# vLLM's removed guided_* fields (silently ignored by vLLM >= 0.12): honoured here.
LEGACY_GUIDED = {"guided_json": "json", "guided_regex": "regex", "guided_choice": "choice",
                 "guided_grammar": "grammar"}


def _map_legacy_guided(body: dict[str, Any]) -> dict[str, Any]:
    given = {k: body[k] for k in LEGACY_GUIDED if body.get(k) is not None}
    if not given:
        return body
    if body.get("structured_outputs") is not None:
        field = next(iter(given))
        raise InvalidRequest(f"'{field}' cannot be combined with 'structured_outputs'; use only "
                             "'structured_outputs'.", param=field)
    body = {k: v for k, v in body.items() if k not in LEGACY_GUIDED}
    body["structured_outputs"] = {LEGACY_GUIDED[k]: v for k, v in given.items()}
    return body


class ChatCompletionRequest(_Lenient):
    model: str | None = None
    messages: Annotated[list[Message], Field(min_length=1)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=128)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    stop: str | list[str] | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    logit_bias: dict[str, float] | None = None
    ignore_eos: bool = False
    min_tokens: int = Field(0, ge=0)
    stop_token_ids: list[int] | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required", "any"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputs | None = None
    include_reasoning: bool = True
    thinking_token_budget: int | None = Field(None, ge=0)
    vllm_xargs: dict[str, Any] | None = None
    user: str | None = None
    request_id: str | None = Field(None, max_length=128)
    # Mistral API fields
    random_seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    safe_prompt: bool = False
    prompt_mode: Literal["reasoning"] | None = None
    reasoning_effort: str | None = None

    model_config = ConfigDict(extra="allow")
    _mistral_output: bool = PrivateAttr(False)
    _whole_tool_calls: bool = PrivateAttr(False)
    _fit_max_tokens: bool = PrivateAttr(False)

    @field_validator("tool_choice", mode="after")
    @classmethod
    def _any_is_required(cls, value: Any) -> Any:
        return "required" if value == "any" else value

    @field_validator("safe_prompt", mode="before")
    @classmethod
    def _null_is_false(cls, value: Any) -> Any:
        return False if value is None else value

    @property
    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def mistral_output(self) -> bool:
        """Answer in Mistral's API shape (thinking chunks, whole tool calls): Mistral's SDK."""
        return self._mistral_output

    @property
    def fit_max_tokens(self) -> bool:
        """A ``max_tokens`` beyond the context left is cut to fit instead of a 400 (Anthropic's
        Messages API: the answer then stops with ``model_context_window_exceeded``)."""
        return self._fit_max_tokens

    @property
    def whole_tool_calls(self) -> bool:
        """Stream each tool call in one delta (clients that cannot join argument fragments)."""
        return self._whole_tool_calls or self._mistral_output


def _param(loc: tuple[Any, ...]) -> str:
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif i >= 2 and str(loc[i - 2]).startswith("list[tagged-union["):
            continue  # the discriminator tag of a content part ("text", "thinking")
        elif part in ("str", "list[TextPart]", "function-after[_schema_present(), ResponseFormat]"):
            continue
        elif part.startswith(("list[", "literal[", "function-")) or part in (
            "system", "developer", "user", "assistant", "tool", "NamedToolChoice", "dict[str,any]",
            "ImageURL",
        ):
            continue
        else:
            out += ("." if out else "") + part
    return out


def _friendly(err: dict[str, Any]) -> tuple[str, str, str]:
    """(message, code, param) for one pydantic error, in OpenAI's words."""
    kind, param = err["type"], _param(tuple(err["loc"]))
    if kind == "missing":
        return f"Missing required parameter: '{param}'.", "missing_required_parameter", param
    if kind == "union_tag_invalid" and ".content[" in param:
        tag = err.get("ctx", {}).get("tag")
        expected = err.get("ctx", {}).get("expected_tags", "'text', 'image_url'")
        return (f"Invalid content part type {tag!r} in '{param}': expected one of {expected}.",
                "invalid_value", param)
    if kind == "union_tag_not_found" and ".content[" in param:
        return (f"Missing required parameter: '{param}.type'.", "missing_required_parameter",
                f"{param}.type")
    if kind == "union_tag_invalid":
        tag = err.get("ctx", {}).get("tag")
        return (f"Invalid role {tag!r} in '{param}': expected one of 'system', 'developer', "
                "'user', 'assistant', 'tool'.", "invalid_value", param)
    if kind == "union_tag_not_found":
        param += ".role"
        return f"Missing required parameter: '{param}'.", "missing_required_parameter", param
    if kind == "too_short" and param == "messages":
        return "'messages' must contain at least one message.", "invalid_value", param
    if kind == "json_invalid":
        return "The request body is not valid JSON.", "invalid_json", param
    if kind in ("model_attributes_type", "model_type") and not param:
        return "The request body must be a JSON object.", "invalid_type", param
    msg = err["msg"].removeprefix("Value error, ")
    code = "invalid_type" if kind.endswith("_type") or kind.endswith("_parsing") else "invalid_value"
    return f"Invalid value for '{param}': {msg}.", code, param


def validation_error(exc: ValidationError | list[dict[str, Any]]) -> InvalidRequest:
    """The first pydantic error as a clear OpenAI-style 400 (no pydantic dump)."""
    errors = exc.errors() if isinstance(exc, ValidationError) else exc
    # A content list fails the ``str`` branch too: report what is wrong inside the list.
    parts = [e for e in errors if not (e["type"] == "string_type" and e["loc"][-1:] == ("str",))]
    first = dict(parts[0] if parts and errors[0]["loc"][-1:] == ("str",) else errors[0])
    loc = tuple(first.get("loc", ()))
    first["loc"] = loc[1:] if loc[:1] == ("body",) else loc
    message, code, param = _friendly(first)
    return InvalidRequest(message, param=param or None, code=code)


MISTRAL_SDK_AGENT = "mistral-client-"  # mistral-client-python/<version>, mistral-client-typescript/…


def is_mistral_sdk(headers: Mapping[str, str]) -> bool:
    return (headers.get("user-agent") or "").lower().startswith(MISTRAL_SDK_AGENT)


def is_langchain_mistral_stream(headers: Mapping[str, str]) -> bool:
    """LangChain's ``ChatMistralAI`` streams through httpx-sse on a bare httpx client.

    It reads each streamed tool-call delta as a whole call (as Mistral's API sends them): an
    argument fragment without an id becomes a separate call with a random id. Whole calls are
    valid OpenAI deltas too, so recognising it by these request headers is harmless to others.
    """
    return ((headers.get("user-agent") or "").startswith("python-httpx/")
            and headers.get("cache-control") == "no-store"
            and headers.get("accept") == "text/event-stream")


def image_parts(req: ChatCompletionRequest) -> list[tuple[int, int, ImagePart]]:
    """(message index, part index, part) of every image part, in prompt order."""
    return [(i, j, part) for i, msg in enumerate(req.messages) if isinstance(msg.content, list)
            for j, part in enumerate(msg.content) if isinstance(part, ImagePart)]


def check_image_roles(req: ChatCompletionRequest) -> None:
    """Images go in user messages only, and every image part has a URL."""
    for i, j, part in image_parts(req):
        role = req.messages[i].role
        if role != "user":
            raise InvalidRequest(
                f"messages[{i}] is {'an' if role == 'assistant' else 'a'} {role} message with an "
                "image part: images are accepted "
                "only in user messages.", param=f"messages[{i}].content[{j}]", code="invalid_value")
        if not part.url.strip():
            raise InvalidRequest(f"messages[{i}].content[{j}] has an empty image URL.",
                                 param=part.url_param(f"messages[{i}].content[{j}]"),
                                 code="invalid_image_url")


def _apply_mistral_fields(req: ChatCompletionRequest) -> None:
    """Mistral's names for OpenAI's fields, checked against each other."""
    if req.random_seed is not None:
        if req.seed is not None and req.seed != req.random_seed:
            raise InvalidRequest(
                f"'seed' ({req.seed}) and 'random_seed' ({req.random_seed}) are the same setting "
                "with different values; send one of them.", param="random_seed")
        req.seed = req.random_seed
    last = len(req.messages) - 1
    for i, msg in enumerate(req.messages):
        if isinstance(msg, AssistantMessage) and msg.prefix and i != last:
            raise InvalidRequest("Only the last message may be an assistant message with "
                                 "'prefix': true.", param=f"messages[{i}].prefix")


def parse_request(body: Any, *, headers: Mapping[str, str] | None = None,
                  budgets: Budgets = DEFAULT) -> ChatCompletionRequest:
    """The validated request; ``headers`` (lower-case names) tell which client sent it."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_type")
    for field, hint in UNSUPPORTED_FIELDS.items():
        if body.get(field) is not None:
            raise InvalidRequest(f"'{field}' is not supported: {hint}.", param=field,
                                 code="unsupported_parameter")
    body = _map_legacy_guided(body)
    try:
        req = ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
    _apply_mistral_fields(req)
    check_image_roles(req)
    check_budgets(req, budgets)
    headers = headers or {}
    if is_mistral_sdk(headers):
        req._mistral_output = True
        if req.stream and req.stream_options is None:  # Mistral's API always streams usage
            req.stream_options = StreamOptions(include_usage=True)
    req._whole_tool_calls = req.stream and is_langchain_mistral_stream(headers)
    return req
