"""JSON Schemas of what the server sends back (and of Responses input items), for /openapi.json.

Hand-written and compact, after OpenAI's OpenAPI document: OpenAI's names and required fields,
but only what this server sends (no audio, annotations, moderation or built-in tool items).
Objects stay open (no ``additionalProperties: false``), as OpenAI's are.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]
STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}
OBJ: Schema = {"type": "object"}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def enum(*values: str) -> Schema:
    return {"type": "string", "enum": list(values)}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None,
        description: str | None = None) -> Schema:
    out: Schema = {"type": "object", "properties": {**required, **(optional or {})}}
    if required:
        out["required"] = list(required)
    if description:
        out["description"] = description
    return out


def tagged(mapping: dict[str, str], description: str | None = None) -> Schema:
    """One of several schemas, told apart by their ``type`` value."""
    out: Schema = {"oneOf": [ref(n) for n in mapping.values()], "discriminator": {
        "propertyName": "type", "mapping": {k: ref(n)["$ref"] for k, n in mapping.items()}}}
    if description:
        out["description"] = description
    return out


# -- chat completions ---------------------------------------------------------------------
_TOP = obj({"token": STR, "logprob": NUM, "bytes": nullable(array(INT))})
_CONTENT = {"anyOf": [STR, array({"anyOf": [ref("TextChunk"), ref("ThinkChunk")]}), {"type": "null"}],
            "description": "Text. For Mistral's SDK (User-Agent `mistral-client-…`) a message with "
                           "reasoning has a list of `thinking` and `text` chunks instead."}
FINISH = enum("stop", "length", "tool_calls")
CHAT: dict[str, Schema] = {
    "ChatCompletionTokenLogprob": obj({"token": STR, "logprob": NUM, "bytes": nullable(array(INT)),
                                       "top_logprobs": array(_TOP)}),
    "ChatCompletionChoiceLogprobs": obj({"content": nullable(array(ref("ChatCompletionTokenLogprob"))),
                                         "refusal": nullable(array(ref("ChatCompletionTokenLogprob")))}),
    "ChatCompletionMessageToolCall": obj({"id": STR, "type": enum("function"), "function": obj(
        {"name": STR, "arguments": {**STR, "description": "The arguments as a JSON string."}})}),
    "ChatCompletionMessageToolCallChunk": obj({"index": INT}, {"id": STR, "type": enum("function"),
                                              "function": obj({}, {"name": STR, "arguments": STR})}),
    "TextChunk": obj({"type": enum("text"), "text": STR}),
    "ThinkChunk": obj({"type": enum("thinking"), "thinking": array(ref("TextChunk"))}),
    "ChatCompletionResponseMessage": obj(
        {"role": enum("assistant"), "content": _CONTENT, "refusal": nullable(STR)},
        {"reasoning": {**STR, "description": "The model's reasoning (reasoning models)."},
         "tool_calls": array(ref("ChatCompletionMessageToolCall"))}),
    "CompletionUsage": obj({"prompt_tokens": INT, "completion_tokens": INT, "total_tokens": INT}),
    "CreateChatCompletionResponse": obj({
        "id": STR, "object": enum("chat.completion"), "created": INT, "model": STR,
        "choices": array(obj({"index": INT, "message": ref("ChatCompletionResponseMessage"),
                              "logprobs": nullable(ref("ChatCompletionChoiceLogprobs")),
                              "finish_reason": FINISH})),
        "usage": ref("CompletionUsage")}),
    "ChatCompletionStreamResponseDelta": obj({}, {
        "role": enum("assistant"), "content": _CONTENT, "reasoning": STR,
        "tool_calls": array(ref("ChatCompletionMessageToolCallChunk"))}),
    "CreateChatCompletionStreamResponse": obj(
        {"id": STR, "object": enum("chat.completion.chunk"), "created": INT, "model": STR,
         "choices": array(obj({"index": INT, "delta": ref("ChatCompletionStreamResponseDelta"),
                               "finish_reason": nullable(FINISH)},
                              {"logprobs": nullable(ref("ChatCompletionChoiceLogprobs"))}))},
        {"usage": {**nullable(ref("CompletionUsage")), "description": "With "
                   "`stream_options.include_usage`: null on every chunk but the last, whose "
                   "`choices` is empty."}},
        description="One `data:` event of a chat completion stream. The stream ends with "
                    "`data: [DONE]`; an error after the first event is sent as an `ErrorResponse` "
                    "event before it."),
}

# -- text completions and tokens ------------------------------------------------------------
COMPLETIONS: dict[str, Schema] = {
    "CompletionLogprobs": obj(
        {"tokens": array(STR), "token_logprobs": array(nullable(NUM)),
         "top_logprobs": array(nullable({**OBJ, "additionalProperties": NUM})),
         "text_offset": array(INT)},
        description="OpenAI's legacy logprobs, one entry per token. With `echo`, the prompt's "
                    "tokens come first; the first has no context (`null`)."),
    "CompletionChoice": obj({"index": INT, "text": STR,
                             "logprobs": nullable(ref("CompletionLogprobs")),
                             "finish_reason": {**nullable(enum("stop", "length")), "description":
                                               "null on stream chunks before the last one"}}),
    "CreateCompletionResponse": obj(
        {"id": STR, "object": enum("text_completion"), "created": INT, "model": STR,
         "choices": array(ref("CompletionChoice"))},
        {"usage": ref("CompletionUsage")},
        description="A text completion, and the shape of every stream chunk too (`usage` only "
                    "in the answer and in the last chunk of a stream with "
                    "`stream_options.include_usage`, whose `choices` is empty). A stream ends "
                    "with `data: [DONE]`; an error after the first chunk is an `ErrorResponse` "
                    "event before it."),
    "TokenizeResponse": obj({"count": INT, "max_model_len": INT, "tokens": array(INT)},
                            {"token_strs": array(STR)}),
    "DetokenizeResponse": obj({"prompt": STR}),
}

# -- responses ----------------------------------------------------------------------------
STATUS = enum("in_progress", "completed", "incomplete")
_TEXT_PART = obj({"type": enum("input_text", "output_text", "text"), "text": STR})
RESPONSES: dict[str, Schema] = {
    "LogProb": ref("ChatCompletionTokenLogprob"),
    "OutputTextContent": obj({"type": enum("output_text"), "text": STR, "annotations": array(OBJ),
                              "logprobs": array(ref("LogProb"))}),
    "ReasoningTextContent": obj({"type": enum("reasoning_text"), "text": STR}),
    "OutputMessage": obj({"id": STR, "type": enum("message"), "status": STATUS,
                          "role": enum("assistant"), "content": array(ref("OutputTextContent"))}),
    "FunctionToolCall": obj({"type": enum("function_call"), "call_id": STR, "name": STR,
                             "arguments": STR}, {"id": STR, "status": STATUS}),
    "ReasoningItem": obj({"type": enum("reasoning"), "summary": array(OBJ)},
                         {"id": STR, "status": STATUS, "content": array(ref("ReasoningTextContent"))}),
    "OutputItem": tagged({"message": "OutputMessage", "function_call": "FunctionToolCall",
                          "reasoning": "ReasoningItem"}),
    "FunctionTool": obj({"type": enum("function"), "name": STR},
                        {"description": nullable(STR), "parameters": nullable(OBJ),
                         "strict": nullable(BOOL)}),
    "ToolChoiceFunction": obj({"type": enum("function"), "name": STR}),
    "InputContent": {"anyOf": [_TEXT_PART,
                               obj({"type": enum("input_image"), "image_url": STR},
                                   {"detail": enum("low", "high", "auto")},
                                   "An image as a `data:` URL (http(s) URLs only where the "
                                   "server allows fetching)."),
                               obj({"type": enum("refusal"), "refusal": STR})]},
    "EasyInputMessage": obj({"role": enum("user", "assistant", "system", "developer"),
                             "content": {"anyOf": [STR, {**array(ref("InputContent")), "minItems": 1}]}},
                            {"type": enum("message"), "id": STR, "status": STATUS}),
    "FunctionCallOutputItemParam": obj(
        {"type": enum("function_call_output"), "call_id": STR,
         "output": {"anyOf": [STR, array(ref("InputContent"))]}}, {"id": STR, "status": STATUS}),
    "InputItem": {"anyOf": [ref("EasyInputMessage"), ref("FunctionToolCall"),
                            ref("FunctionCallOutputItemParam"), ref("ReasoningItem")]},
    "ItemResource": {"allOf": [ref("InputItem"), obj({"id": STR, "type": STR})]},
    "ResponseItemList": obj({"object": enum("list"), "data": array(ref("ItemResource")),
                             "has_more": BOOL, "first_id": nullable(STR), "last_id": nullable(STR)}),
    "ResponseUsage": obj({"input_tokens": INT,
                          "input_tokens_details": obj({"cached_tokens": INT, "cache_write_tokens": INT}),
                          "output_tokens": INT, "output_tokens_details": obj({"reasoning_tokens": INT}),
                          "total_tokens": INT}),
    "ResponseError": obj({"code": STR, "message": STR}),
    "Response": obj({
        "id": STR, "object": enum("response"), "created_at": INT,
        "status": enum("in_progress", "completed", "incomplete", "failed"),
        "completed_at": nullable(INT), "error": nullable(ref("ResponseError")),
        "incomplete_details": nullable(obj({"reason": enum("max_output_tokens", "content_filter")})),
        "instructions": nullable(STR), "max_output_tokens": nullable(INT), "model": STR,
        "output": array(ref("OutputItem")), "output_text": nullable(STR),
        "parallel_tool_calls": BOOL, "previous_response_id": nullable(STR),
        "reasoning": nullable(obj({"effort": nullable(STR), "summary": nullable(STR)})),
        "store": BOOL, "temperature": NUM, "top_p": NUM, "text": obj({"format": ref("TextFormat")}),
        "tool_choice": {"anyOf": [enum("none", "auto", "required"), ref("ToolChoiceFunction")]},
        "tools": array(ref("FunctionTool")), "top_logprobs": nullable(INT),
        "truncation": enum("disabled"), "metadata": {**OBJ, "additionalProperties": STR},
        "background": BOOL, "max_tool_calls": nullable(INT), "service_tier": STR,
        "safety_identifier": nullable(STR), "prompt_cache_key": nullable(STR),
    }, {"usage": ref("ResponseUsage"), "user": STR},
        description="A model response. `usage` is there once the response is finished."),
    "DeletedResponse": obj({"id": STR, "object": enum("response"), "deleted": {**BOOL, "enum": [True]}}),
}


def _event(kind: str, **fields: Schema) -> Schema:
    return obj({"type": enum(kind), "sequence_number": INT, **fields})


_AT = {"item_id": STR, "output_index": INT}
_PART = {"oneOf": [ref("OutputTextContent"), ref("ReasoningTextContent")]}
EVENTS: dict[str, Schema] = {
    "ResponseCreatedEvent": _event("response.created", response=ref("Response")),
    "ResponseInProgressEvent": _event("response.in_progress", response=ref("Response")),
    "ResponseCompletedEvent": _event("response.completed", response=ref("Response")),
    "ResponseIncompleteEvent": _event("response.incomplete", response=ref("Response")),
    "ResponseFailedEvent": _event("response.failed", response=ref("Response")),
    "ResponseOutputItemAddedEvent": _event("response.output_item.added", output_index=INT,
                                           item=ref("OutputItem")),
    "ResponseOutputItemDoneEvent": _event("response.output_item.done", output_index=INT,
                                          item=ref("OutputItem")),
    "ResponseContentPartAddedEvent": _event("response.content_part.added", **_AT,
                                            content_index=INT, part=_PART),
    "ResponseContentPartDoneEvent": _event("response.content_part.done", **_AT, content_index=INT,
                                           part=_PART),
    "ResponseTextDeltaEvent": _event("response.output_text.delta", **_AT, content_index=INT,
                                     delta=STR, logprobs=array(ref("LogProb"))),
    "ResponseTextDoneEvent": _event("response.output_text.done", **_AT, content_index=INT,
                                    text=STR, logprobs=array(ref("LogProb"))),
    "ResponseReasoningTextDeltaEvent": _event("response.reasoning_text.delta", **_AT,
                                              content_index=INT, delta=STR),
    "ResponseReasoningTextDoneEvent": _event("response.reasoning_text.done", **_AT,
                                             content_index=INT, text=STR),
    "ResponseFunctionCallArgumentsDeltaEvent": _event("response.function_call_arguments.delta",
                                                      **_AT, delta=STR),
    "ResponseFunctionCallArgumentsDoneEvent": _event("response.function_call_arguments.done",
                                                     **_AT, name=STR, arguments=STR),
}
EVENTS["ResponseStreamEvent"] = tagged(
    {s["properties"]["type"]["enum"][0]: name for name, s in EVENTS.items()},
    "One event of a response stream, sent as `event: <type>` + `data: <event>`. A failure "
    "after the first event ends the stream with `response.failed`.")

# -- models, errors, probes ---------------------------------------------------------------
OTHER: dict[str, Schema] = {
    "Model": obj({"id": STR, "object": enum("model"), "created": INT, "owned_by": STR,
                  "type": enum("base"), "capabilities": {**OBJ, "additionalProperties": BOOL},
                  "aliases": array(STR)},
                 {"max_context_length": INT, "default_model_temperature": NUM},
                 "An OpenAI model that is also a Mistral `BaseModelCard`."),
    "ListModelsResponse": obj({"object": enum("list"), "data": array(ref("Model"))}),
    "Error": obj({"message": STR, "type": STR, "param": nullable(STR), "code": nullable(STR)}),
    "ErrorResponse": obj({"error": ref("Error")}),
    "HealthStatus": obj({"status": enum("ok")}),
    "ReadyStatus": obj({"status": enum("loading", "ready", "draining", "failed")}),
    "ServerStatus": obj({"phase": enum("loading", "ready", "draining", "failed"), "model": STR,
                         "uptime_s": NUM, "load_time_s": nullable(NUM),
                         "loading_for_s": nullable(NUM), "inflight_requests": INT,
                         "error": nullable(STR)},
                        {"api_process": INT, "api_processes": array(obj({
                            "pid": INT, "phase": enum("loading", "ready", "draining", "failed"),
                            "inflight_requests": INT}))}),
}

SCHEMAS: dict[str, Schema] = {**CHAT, **COMPLETIONS, **RESPONSES, **EVENTS, **OTHER}
