"""JSON Schemas of the Messages API for /openapi.json: the request's blocks, the ``Message``,
every stream event and the error envelope, under Anthropic's names (``Anthropic…`` where OpenAI
already uses the name). Only what this server reads and sends."""

from __future__ import annotations

from server.openapi_schemas import (
    BOOL,
    INT,
    OBJ,
    STR,
    Schema,
    array,
    enum,
    nullable,
    obj,
    ref,
    tagged,
)

_CACHE = {"cache_control": {**OBJ, "description": "Accepted and ignored."}}
STOP_REASONS = ("end_turn", "max_tokens", "stop_sequence", "tool_use", "model_context_window_exceeded")
ERROR_TYPES = ("invalid_request_error", "authentication_error", "permission_error", "not_found_error",
               "request_too_large", "rate_limit_error", "api_error", "overloaded_error", "timeout_error")

REQUEST: dict[str, Schema] = {
    "TextBlockParam": obj({"type": enum("text"), "text": STR}, _CACHE),
    "Base64ImageSource": obj({"type": enum("base64"), "data": STR,
                              "media_type": enum("image/jpeg", "image/png", "image/gif", "image/webp")}),
    "URLImageSource": obj({"type": enum("url"), "url": STR}, description=(
        "Fetched only where the operator allows it (image_fetch, image_fetch_domains).")),
    "ImageBlockParam": obj({"type": enum("image"), "source": tagged(
        {"base64": "Base64ImageSource", "url": "URLImageSource"})}, _CACHE),
    "DocumentBlockParam": obj({"type": enum("document"), "source": obj(
        {"type": enum("text"), "data": STR}, {"media_type": enum("text/plain")})},
        {**_CACHE, "title": STR}, "Plain-text documents (their text joins the message)."),
    "ToolUseBlockParam": obj({"type": enum("tool_use"), "id": STR, "name": STR, "input": OBJ}, _CACHE),
    "ToolResultBlockParam": obj({"type": enum("tool_result"), "tool_use_id": STR}, {
        "content": {"anyOf": [STR, array({"anyOf": [ref("TextBlockParam"), ref("ImageBlockParam")]})]},
        "is_error": BOOL, **_CACHE}),
    "ThinkingBlockParam": obj({"type": enum("thinking"), "thinking": STR}, {"signature": STR},
                              "Earlier thinking: accepted, not shown to the model again."),
    "RedactedThinkingBlockParam": obj({"type": enum("redacted_thinking"), "data": STR}),
    "ContentBlockParam": tagged({
        "text": "TextBlockParam", "image": "ImageBlockParam", "document": "DocumentBlockParam",
        "tool_use": "ToolUseBlockParam", "tool_result": "ToolResultBlockParam",
        "thinking": "ThinkingBlockParam", "redacted_thinking": "RedactedThinkingBlockParam"}),
    "MessageParam": obj({"role": enum("user", "assistant", "system"),
                         "content": {"anyOf": [STR, array(ref("ContentBlockParam"))]}}),
    "ToolParam": obj({"name": STR, "input_schema": OBJ},
                     {"type": enum("custom"), "description": STR, **_CACHE}),
}

_DELTAS: dict[str, Schema] = {
    "TextDelta": obj({"type": enum("text_delta"), "text": STR}),
    "ThinkingDelta": obj({"type": enum("thinking_delta"), "thinking": STR}),
    "SignatureDelta": obj({"type": enum("signature_delta"), "signature": STR}),
    "InputJSONDelta": obj({"type": enum("input_json_delta"), "partial_json": STR}),
}

RESPONSE: dict[str, Schema] = {
    "TextBlock": obj({"type": enum("text"), "text": STR}),
    "ThinkingBlock": obj({"type": enum("thinking"), "thinking": STR, "signature": {
        **STR, "description": "Opaque; not checked when sent back."}}),
    "ToolUseBlock": obj({"type": enum("tool_use"), "id": {**STR, "pattern": "^toolu_"}, "name": STR,
                         "input": OBJ}),
    "ContentBlock": tagged({"text": "TextBlock", "thinking": "ThinkingBlock", "tool_use": "ToolUseBlock"}),
    "MessageUsage": obj({"input_tokens": INT, "output_tokens": INT},
                        {"cache_creation_input_tokens": INT, "cache_read_input_tokens": INT}),
    "Message": obj({"id": STR, "type": enum("message"), "role": enum("assistant"), "model": STR,
                    "content": array(ref("ContentBlock")), "stop_reason": nullable(enum(*STOP_REASONS)),
                    "stop_sequence": nullable(STR), "usage": ref("MessageUsage")}),
    "MessageTokensCount": obj({"input_tokens": INT}),
    "AnthropicError": obj({"type": enum(*ERROR_TYPES), "message": STR}),
    "AnthropicErrorResponse": obj({"type": enum("error"), "error": ref("AnthropicError")},
                                  {"request_id": STR}),
    **_DELTAS,
    "ContentBlockDelta": tagged({s["properties"]["type"]["enum"][0]: n for n, s in _DELTAS.items()}),
}

_EVENTS: dict[str, Schema] = {
    "MessageStartEvent": obj({"type": enum("message_start"), "message": ref("Message")}),
    "ContentBlockStartEvent": obj({"type": enum("content_block_start"), "index": INT,
                                   "content_block": ref("ContentBlock")}),
    "ContentBlockDeltaEvent": obj({"type": enum("content_block_delta"), "index": INT,
                                   "delta": ref("ContentBlockDelta")}),
    "ContentBlockStopEvent": obj({"type": enum("content_block_stop"), "index": INT}),
    "MessageDeltaEvent": obj({"type": enum("message_delta"), "delta": obj(
        {"stop_reason": nullable(enum(*STOP_REASONS)), "stop_sequence": nullable(STR)}),
        "usage": ref("MessageUsage")}),
    "MessageStopEvent": obj({"type": enum("message_stop")}),
    "PingEvent": obj({"type": enum("ping")}),
    "ErrorEvent": obj({"type": enum("error"), "error": ref("AnthropicError")}, {"request_id": STR}),
}
EVENTS: dict[str, Schema] = {**_EVENTS, "MessageStreamEvent": tagged(
    {s["properties"]["type"]["enum"][0]: n for n, s in _EVENTS.items()},
    "One event of a message stream, sent as `event: <type>` + `data: <event>`.")}

SCHEMAS: dict[str, Schema] = {**REQUEST, **RESPONSE, **EVENTS}


def refine_request(schema: Schema) -> None:
    """``messages``, ``system`` and ``tools`` are read block by block (convert.py): publish
    their shapes."""
    props = schema["properties"]
    props["messages"] = {"type": "array", "items": ref("MessageParam"), "minItems": 1}
    props["system"] = {"anyOf": [STR, array(ref("TextBlockParam")), {"type": "null"}]}
    props["tools"] = {"anyOf": [array(ref("ToolParam")), {"type": "null"}]}
