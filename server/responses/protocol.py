"""Wire types of ``POST /v1/responses`` requests.

Same strictness policy as chat (``server/protocol.py``): unknown top-level fields are ignored,
fields we know but cannot honour are a 400 naming them. ``input`` items stay plain dicts here;
``convert.py`` checks each one where it turns it into chat messages, so its errors point at
``input[i]...``. Sampling extras that vLLM clients send through ``extra_body`` (``top_k``,
``seed``, ``stop``, ``structured_outputs``...) pass through to the chat pipeline unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from server.errors import InvalidRequest
from server.protocol import validation_error

# chat-request fields a Responses request may carry through extra_body, with the chat meaning
PASSTHROUGH = ("top_k", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty",
               "seed", "stop", "ignore_eos", "min_tokens", "stop_token_ids", "logit_bias",
               "structured_outputs", "vllm_xargs", "include_reasoning", "thinking_token_budget")

# what OpenAI's API has and we refuse, with why
UNSUPPORTED = {
    "background": "background responses are not supported; send the request and wait, or stream it",
    "conversation": "conversations are not supported; chain responses with 'previous_response_id'",
    "prompt": "stored prompt templates are not supported; send 'instructions' and 'input'",
    "context_management": "context management is not supported",
    "max_tool_calls": "it limits built-in tool calls, which this server does not run; use "
                      "'parallel_tool_calls': false for one call per turn",
}


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextFormat(_Lenient):
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = Field(None, min_length=1, max_length=64)
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    description: str | None = None
    strict: bool | None = None

    @model_validator(mode="after")
    def _schema_present(self) -> "TextFormat":
        if self.type == "json_schema" and (self.schema_ is None or not self.name):
            raise ValueError("'json_schema' needs a 'name' and a 'schema'")
        return self


class TextParam(_Lenient):
    format: TextFormat = Field(default_factory=TextFormat)
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningParam(_Lenient):
    effort: str | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


class ResponsesRequest(_Lenient):
    model: str | None = None
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] = "auto"
    parallel_tool_calls: bool = True
    text: TextParam = Field(default_factory=TextParam)
    reasoning: ReasoningParam | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_logprobs: int | None = Field(None, ge=0, le=20)
    include: list[str] = Field(default_factory=list)
    metadata: dict[str, str] | None = None
    user: str | None = None
    previous_response_id: str | None = Field(None, min_length=1)
    store: bool = True
    stream: bool = False
    truncation: Literal["disabled"] = "disabled"  # "auto" is refused with a clearer message first
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = Field(None, max_length=64)
    extras: dict[str, Any] = Field(default_factory=dict, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _nulls_and_extras(cls, value: Any) -> Any:
        """``null`` means "not given" (SDKs send it); chat fields from extra_body are kept."""
        if not isinstance(value, dict):
            return value
        body = {k: v for k, v in value.items() if v is not None}
        body["extras"] = {k: body[k] for k in PASSTHROUGH if k in body}
        return body

    @field_validator("input")
    @classmethod
    def _input_not_empty(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("'input' must not be an empty list")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return value
        if len(value) > 16:
            raise ValueError("'metadata' holds at most 16 keys")
        for key, item in value.items():
            if len(key) > 64 or len(item) > 512:
                raise ValueError("'metadata' keys are at most 64 characters, values at most 512")
        return value

    @property
    def logprobs(self) -> bool:
        return self.top_logprobs is not None or "message.output_text.logprobs" in self.include


def parse_responses_request(body: Any) -> ResponsesRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_request_body")
    for field, why in UNSUPPORTED.items():
        if body.get(field) not in (None, False, [], {}):
            raise InvalidRequest(f"'{field}' is not supported by this server: {why}.",
                                 param=field, code="unsupported_parameter")
    if body.get("truncation") == "auto":
        raise InvalidRequest("'truncation': 'auto' is not supported: this server never drops "
                             "input; it answers 400 when the input does not fit.",
                             param="truncation", code="unsupported_parameter")
    try:
        return ResponsesRequest.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
