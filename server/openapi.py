"""``GET /openapi.json``: the OpenAPI 3.1 document of every route, built once (``document``).

The generating routes read their raw bodies themselves (their 400s come from our own parsing),
so FastAPI cannot see their schemas: the request bodies published here are the server's own
pydantic models (``ChatCompletionRequest``, ``ResponsesRequest``) under OpenAI's names, and the
responses are the hand-written shapes of ``openapi_schemas``. ``/openapi.json`` and ``/docs``
are outside ``/v1``: no API key, and they work while the model loads.
"""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic.json_schema import GenerateJsonSchema, models_json_schema

from server.anthropic import schemas as anthropic
from server.anthropic.protocol import MessagesRequest
from server.completions.protocol import CompletionRequest, DetokenizeRequest, TokenizeRequest
from server.openapi_schemas import INT, SCHEMAS, STR, Schema, enum, nullable, ref
from server.protocol import ChatCompletionRequest
from server.responses.protocol import ResponsesRequest

TITLE = "mistral-serve"
try:
    VERSION = version("mistral-serve")
except PackageNotFoundError:  # running from a checkout that is not installed
    VERSION = "0.0.0"

# the request models under OpenAI's names; their parts keep their class names
PUBLIC_NAMES = {"ChatCompletionRequest": "CreateChatCompletionRequest",
                "ResponsesRequest": "CreateResponse", "MessagesRequest": "CreateMessageRequest",
                "CompletionRequest": "CreateCompletionRequest"}


class _Published(GenerateJsonSchema):
    """OpenAI's names for the request models; fields kept out of dumps (``extras``) are
    internal and left out."""

    def normalize_name(self, name: str) -> str:
        return super().normalize_name(PUBLIC_NAMES.get(name, name))

    def field_is_present(self, field: Any) -> bool:
        return not field.get("serialization_exclude") and super().field_is_present(field)


def request_schemas() -> dict[str, Schema]:
    """The request models and their parts, one definition per name (pydantic qualifies names
    that two different models share)."""
    _, top = models_json_schema(
        [(model, "validation") for model in (ChatCompletionRequest, ResponsesRequest, MessagesRequest,
                                             CompletionRequest, TokenizeRequest, DetokenizeRequest)],
        ref_template="#/components/schemas/{model}", schema_generator=_Published)
    defs: dict[str, Schema] = top["$defs"]
    _refine_create_response(defs["CreateResponse"])
    anthropic.refine_request(defs["CreateMessageRequest"])
    for name in ("CreateCompletionRequest", "TokenizeRequest", "DetokenizeRequest"):
        _nulls_allowed(defs[name])
    defs["TokenizeRequest"]["properties"]["messages"]["description"] = (
        "A chat, rendered exactly as `/v1/chat/completions` renders it (with `tools`, images and "
        "the other chat fields that shape the prompt); send this or `prompt`.")
    return defs


def _refine_create_response(schema: Schema) -> None:
    """``input`` items, ``tools`` and ``tool_choice`` stay plain dicts in the model (convert.py
    checks them): publish their shapes. Every optional field may be ``null`` (= not given)."""
    props = schema["properties"]
    props["input"] = {"anyOf": [STR, {"type": "array", "items": ref("InputItem"), "minItems": 1}],
                      "description": "Text, or a list of input items (messages, function calls "
                                     "and their outputs, reasoning)."}
    props["tools"] = {"type": "array", "items": ref("FunctionTool"),
                      "description": "Function tools (the only kind this server runs)."}
    props["tool_choice"] = {"anyOf": [enum("none", "auto", "required"), ref("ToolChoiceFunction")],
                            "default": "auto"}
    _nulls_allowed(schema)


def _nulls_allowed(schema: Schema) -> None:
    """Every optional field may be ``null`` (= not given), as SDKs send it."""
    props = schema["properties"]
    meta = ("title", "default", "description")
    for name, prop in props.items():
        if name in schema.get("required", ()) or {"type": "null"} in prop.get("anyOf", []):
            continue
        if "anyOf" in prop:
            prop["anyOf"].append({"type": "null"})
        else:
            props[name] = {**nullable({k: v for k, v in prop.items() if k not in meta}),
                           **{k: v for k, v in prop.items() if k in meta}}


def components() -> dict[str, Schema]:
    schemas = dict(SCHEMAS)
    for name, schema in anthropic.SCHEMAS.items():
        if name in schemas:
            raise RuntimeError(f"two OpenAPI schemas are named {name!r}: rename one")
        schemas[name] = schema
    for name, schema in request_schemas().items():
        if name in schemas:
            raise RuntimeError(f"two OpenAPI schemas are named {name!r}: rename one")
        schemas[name] = schema
    return schemas


# -- paths --------------------------------------------------------------------------------
def _json(name: str, description: str, **extra: Any) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": ref(name)}},
            **extra}


_RETRY = {"headers": {"Retry-After": {"description": "Seconds to wait before retrying.",
                                      "schema": INT}}}
ERRORS: dict[int, tuple[str, Schema]] = {
    400: ("BadRequest", _json("ErrorResponse", "Invalid request; `param` names the field.")),
    401: ("Unauthorized", _json("ErrorResponse", "Missing or wrong API key (servers with keys).")),
    404: ("NotFound", _json("ErrorResponse", "No such model or response (or another key's).")),
    413: ("PayloadTooLarge", _json("ErrorResponse", "The body exceeds the server's max_body_bytes.")),
    429: ("Overloaded", _json("ErrorResponse", "The server is at capacity.", **_RETRY)),
    500: ("ServerError", _json("ErrorResponse", "The engine failed.")),
    503: ("Unavailable", _json("ErrorResponse", "The model is loading, the server is draining, or "
                                                "the response store is down.", **_RETRY)),
    504: ("Timeout", _json("ErrorResponse", "The request did not finish within request_timeout.")),
}
GENERATING = (400, 401, 404, 413, 429, 500, 503, 504)
SECURED = [{"bearerAuth": []}]
# /v1/messages answers in Anthropic's envelope, with its error types
_ANTHROPIC = {400: "invalid_request_error; the message starts with the field's path",
              401: "authentication_error", 404: "not_found_error (no such model)",
              413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
              503: "overloaded_error: loading or draining", 504: "timeout_error"}
ANTHROPIC_ERRORS: dict[int, tuple[str, Schema]] = {
    code: ("Anthropic" + ERRORS[code][0], _json("AnthropicErrorResponse", text, **(
        _RETRY if code in (429, 503) else {}))) for code, text in _ANTHROPIC.items()}
ANTHROPIC_SECURED = [{"bearerAuth": []}, {"apiKeyAuth": []}]


ANTHROPIC_MODELS = ("With an `anthropic-version` header (Anthropic's SDKs send it), Anthropic's "
                    "Models API instead: `ModelInfo` objects, pages with `has_more`, `first_id` "
                    "and `last_id` (`limit`, `after_id`, `before_id`), and Anthropic's errors.")


def _op(op_id: str, summary: str, tag: str, ok: Schema, errors: tuple[int, ...] = (), *,
        body: str | None = None, secured: bool = True, anthropic: bool = False,
        **extra: Any) -> Schema:
    table = ANTHROPIC_ERRORS if anthropic else ERRORS
    op: Schema = {"operationId": op_id, "summary": summary, "tags": [tag], **extra,
                  "responses": {"200": ok, **{str(code): {"$ref": f"#/components/responses/"
                                                          f"{table[code][0]}"} for code in errors}}}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(body)}}}
    if secured:
        op["security"] = ANTHROPIC_SECURED if anthropic else SECURED
    return op


def _streamed(json_name: str, event_name: str, description: str) -> Schema:
    return {"description": description, "content": {
        "application/json": {"schema": ref(json_name)},
        "text/event-stream": {"schema": ref(event_name)}}}


def _path_param(name: str, description: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": STR}


def paths() -> Schema:
    response_id = _path_param("response_id", "The id of a stored response (`resp_…`).")
    items_query = [
        {"name": "limit", "in": "query", "schema": {**INT, "minimum": 1, "maximum": 100, "default": 20}},
        {"name": "order", "in": "query", "schema": {**enum("asc", "desc"), "default": "desc"}},
        {"name": "after", "in": "query", "schema": STR, "description": "List the items after this id."},
    ]
    ready = _op("ready", "Readiness", "Operations",
                _json("ReadyStatus", "The engine is loaded and healthy."), secured=False)
    ready["responses"]["503"] = _json("ReadyStatus", "Not ready: loading, draining or failed.",
                                      **_RETRY)
    return {
        "/v1/chat/completions": {"post": _op(
            "createChatCompletion", "Create a chat completion", "Chat",
            _streamed("CreateChatCompletionResponse", "CreateChatCompletionStreamResponse",
                      "The completion; with `stream: true`, `data:` events of chunks."),
            GENERATING, body="CreateChatCompletionRequest",
            description="Unknown fields are ignored; fields this server knows but does not support "
                        "(`functions`, `audio`, `prediction`, …) are a 400 naming them. Mistral "
                        "API fields (`random_seed`, `safe_prompt`, `prompt_mode`) work too.")},
        "/v1/completions": {"post": _op(
            "createCompletion", "Create a text completion", "Completions",
            _streamed("CreateCompletionResponse", "CreateCompletionResponse",
                      "The completion; with `stream: true`, `data:` events of chunks."),
            GENERATING, body="CreateCompletionRequest",
            description="The prompt is raw text (BOS first, no chat template) or token ids; the "
                        "text is what the model wrote (no tool or reasoning parsing). vLLM's "
                        "sampling extras (`top_k`, `min_p`, `structured_outputs`, `stop_token_ids`, "
                        "`skip_special_tokens`, `include_stop_str_in_output`…) work as in chat.")},
        "/tokenize": {"post": _op(
            "tokenize", "Tokenize a prompt or a chat", "Tokens",
            _json("TokenizeResponse", "The prompt's token ids."), (400, 401, 404, 413, 503),
            body="TokenizeRequest",
            description="vLLM's shape. `count` of a `messages` request is the `usage.prompt_tokens` "
                        "of the same chat request.")},
        "/detokenize": {"post": _op(
            "detokenize", "Token ids to text", "Tokens",
            _json("DetokenizeResponse", "The text (control tokens skipped)."),
            (400, 401, 404, 413, 503), body="DetokenizeRequest")},
        "/v1/responses": {"post": _op(
            "createResponse", "Create a model response", "Responses",
            _streamed("Response", "ResponseStreamEvent",
                      "The response; with `stream: true`, typed events."),
            GENERATING, body="CreateResponse",
            description="Function tools only. `background`, `conversation`, `prompt`, "
                        "`max_tool_calls` and `truncation: auto` are a 400; chat sampling fields "
                        "(`top_k`, `seed`, `stop`, `structured_outputs`, …) are honoured as in chat.")},
        "/v1/responses/{response_id}": {
            "parameters": [response_id],
            "get": _op("getResponse", "Get a stored response", "Responses",
                       _json("Response", "The stored response."), (401, 404, 503)),
            "delete": _op("deleteResponse", "Delete a stored response", "Responses",
                          _json("DeletedResponse", "Deleted."), (401, 404, 503))},
        "/v1/responses/{response_id}/input_items": {"parameters": [response_id], "get": _op(
            "listInputItems", "List a stored response's input items", "Responses",
            _json("ResponseItemList", "A page of input items."), (400, 401, 404, 503),
            parameters=items_query)},
        "/v1/messages": {"post": _op(
            "createMessage", "Create a message (Anthropic's Messages API)", "Messages",
            _streamed("Message", "MessageStreamEvent",
                      "The message; with `stream: true`, typed events."),
            GENERATING, body="CreateMessageRequest", anthropic=True,
            description="For Anthropic's SDKs and Claude Code. Unknown fields, `cache_control` "
                        "and `anthropic-beta` headers are ignored; server tools, `mcp_servers` "
                        "and PDF documents are a 400. `thinking` turns a reasoning model's "
                        "thinking on or off. Errors use Anthropic's envelope.")},
        "/v1/messages/count_tokens": {"post": _op(
            "countMessageTokens", "Count the tokens of a message request", "Messages",
            _json("MessageTokensCount", "The prompt's tokens, as `usage.input_tokens` counts them."),
            (400, 401, 404, 413, 429, 503), body="CreateMessageRequest", anthropic=True,
            description="The same body as `/v1/messages` (`max_tokens` may be left out).")},
        "/v1/models": {"get": _op("listModels", "List models", "Models",
                                  _json("ListModelsResponse", "The served model and its aliases."),
                                  (401,), description=ANTHROPIC_MODELS)},
        "/v1/models/{model_id}": {"get": _op(
            "retrieveModel", "Retrieve a model", "Models", _json("Model", "The model card."),
            (401, 404), parameters=[_path_param("model_id", "A model id or alias; it may contain "
                                                "`/`, sent as is.")],
            description=ANTHROPIC_MODELS)},
        "/health": {"get": _op("health", "Liveness", "Operations",
                               _json("HealthStatus", "The process answers."), secured=False)},
        "/ready": {"get": ready},
        "/status": {"get": _op("status", "Startup progress and load", "Operations",
                               _json("ServerStatus", "Phase, timings, requests in flight."),
                               secured=False)},
        "/metrics": {"get": _op(
            "metrics", "Prometheus metrics", "Operations",
            {"description": "`mserve:*` and `vllm:*` metrics, Prometheus text format.",
             "content": {"text/plain": {"schema": STR}}}, (401,),
            description="Needs the API key unless the server runs with `metrics_open`.")},
    }


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI document (built on first use, then the same object: do not modify it)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": VERSION, "description": (
            "OpenAI-compatible chat completions, text completions and Responses API, vLLM's "
            "`/tokenize` and `/detokenize`, and Anthropic's Messages API, for Mistral models on "
            "vLLM. Errors use OpenAI's envelope (`ErrorResponse`), on `/v1/messages` Anthropic's "
            "(`AnthropicErrorResponse`). Every response carries `X-Request-Id` (the request's "
            "own, when it sends one).")},
        "tags": [{"name": t} for t in ("Chat", "Completions", "Responses", "Messages", "Tokens",
                                       "Models", "Operations")],
        "paths": paths(),
        "components": {
            "schemas": components(),
            "responses": {**dict(ERRORS.values()), **dict(ANTHROPIC_ERRORS.values())},
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer", "description": (
                    "One of the server's API keys (`api_keys`, `api_key_file`); `x-api-key: "
                    "<key>` is accepted too. One credential per request (two are a 400). Checked "
                    "only when the server has keys; without keys every route is open.")},
                "apiKeyAuth": {"type": "apiKey", "in": "header", "name": "x-api-key",
                               "description": "The same key, as Anthropic's clients send it."}},
        },
    }
