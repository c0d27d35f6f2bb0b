"""Wire types of ``POST /v1/chat/completions`` requests, and how their errors read.

Strictness policy, decided once here: unknown top-level fields are accepted and ignored (clients
send platform extras through ``extra_body``); fields we know but do not support are rejected with
a 400 that names them; ranges follow OpenAI's documented limits.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from server.errors import InvalidRequest

TOOL_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


Content = str | Annotated[list[TextPart], Field(min_length=1)]


class FunctionCall(_Lenient):
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    arguments: str = "{}"


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
    content: str | list[TextPart] | None = None
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
    stop: str | Annotated[list[str], Field(max_length=16)] | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    logit_bias: dict[str, float] | None = None
    ignore_eos: bool = False
    min_tokens: int = Field(0, ge=0)
    stop_token_ids: list[int] | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputs | None = None
    include_reasoning: bool = True
    vllm_xargs: dict[str, Any] | None = None
    user: str | None = None
    request_id: str | None = Field(None, max_length=128)

    model_config = ConfigDict(extra="allow")

    @property
    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


def _param(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "list[TextPart]", "function-after[_schema_present(), ResponseFormat]"):
            continue
        elif part.startswith(("list[", "literal[", "function-")) or part in (
            "system", "developer", "user", "assistant", "tool", "NamedToolChoice", "dict[str,any]",
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
    first = dict(errors[0])
    loc = tuple(first.get("loc", ()))
    first["loc"] = loc[1:] if loc[:1] == ("body",) else loc
    message, code, param = _friendly(first)
    return InvalidRequest(message, param=param or None, code=code)


def parse_request(body: Any) -> ChatCompletionRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_type")
    for field, hint in UNSUPPORTED_FIELDS.items():
        if body.get(field) is not None:
            raise InvalidRequest(f"'{field}' is not supported: {hint}.", param=field,
                                 code="unsupported_parameter")
    body = _map_legacy_guided(body)
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
