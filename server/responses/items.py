"""Input items in their canonical OpenAI shape: what is stored is exactly what ``input_items``
lists, and nothing else.

Each item keeps only the fields OpenAI's item schemas (``InputMessageResource``,
``OutputMessage``, ``FunctionToolCallResource``, ``FunctionToolCallOutputResource``,
``ReasoningItem``) define and this server reads; every other field is **dropped**, not refused,
as unknown top-level request fields are ignored (``server/protocol.py``). Clients send back items
they received from other servers or SDKs with fields of their own (``encrypted_content``,
``namespace``, ``caller``, ``prompt_cache_breakpoint``…), and those keep working; what a client
sends beyond the schema costs nothing in the store. Fields kept are checked here, once, so a
malformed one is a 400 naming it (``input[i].content[j].text``), never a stored surprise:

    message (user, system, developer)  id, type, status, role, content: input_text {text},
                                       input_image {image_url, detail}
    message (assistant)                id, type, status, role, content: output_text {text,
                                       annotations: [], logprobs: []} or refusal {refusal}; phase
    function_call                      id, type, status, call_id, name, arguments
    function_call_output               id, type, status, call_id, output (a string, or input_text
                                       parts)
    reasoning                          id, type, status, summary (summary_text parts), content
                                       (reasoning_text parts, when sent)

A string ``content`` becomes one text part; ``text`` parts become ``input_text`` (or
``output_text`` for the assistant); an item without an id gets one, without a status
``completed``. Annotations and logprobs of a client's assistant text are not kept.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

from server.errors import InvalidRequest
from server.responses.protocol import ResponsesRequest

Item = dict[str, Any]

# the prefix of an item id by item type (what OpenAI's ids look like)
ID_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}
STATUSES = ("in_progress", "completed", "incomplete")
ROLES = ("user", "system", "developer", "assistant")
DETAILS = ("auto", "low", "high", "original")
PHASES = ("commentary", "final_answer")
TEXT_TYPES = ("input_text", "output_text", "text")


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def canonical_input(req: ResponsesRequest) -> list[Item]:
    """This request's input as the items it stores (and ``input_items`` lists)."""
    if isinstance(req.input, str):
        return [{"id": new_id("msg"), "type": "message", "status": "completed", "role": "user",
                 "content": [{"type": "input_text", "text": req.input}]}]
    return [canonical_item(raw, f"input[{i}]") for i, raw in enumerate(req.input)]


def canonical_item(raw: Mapping[str, Any], param: str) -> Item:
    kind = raw.get("type", "message")
    if not isinstance(kind, str):
        raise InvalidRequest(f"'{param}.type' must be a string.", param=f"{param}.type")
    fields = _FIELDS.get(kind)
    if fields is None:
        raise InvalidRequest(f"Input items of type {kind!r} are not supported; this server reads "
                             "'message', 'function_call', 'function_call_output' and 'reasoning'.",
                             param=f"{param}.type", code="unsupported_item_type")
    item_id = raw.get("id")
    if not isinstance(item_id, str) or not item_id:
        item_id = new_id(ID_PREFIX[kind])
    status = raw.get("status", "completed")
    if status not in STATUSES:
        raise _one_of(f"{param}.status", STATUSES)
    return {"id": item_id, "type": kind, "status": status, **fields(raw, param)}


def _message(raw: Mapping[str, Any], param: str) -> Item:
    role = raw.get("role")
    if role not in ROLES:
        raise _one_of(f"{param}.role", ROLES)
    if role != "assistant":
        return {"role": role, "content": _input_parts(raw.get("content"), f"{param}.content")}
    item: Item = {"role": role, "content": _output_parts(raw.get("content"), f"{param}.content")}
    phase = raw.get("phase")
    if phase is not None:
        if phase not in PHASES:
            raise _one_of(f"{param}.phase", PHASES)
        item["phase"] = phase
    return item


def _input_parts(content: Any, param: str) -> list[Item]:
    if isinstance(content, str):
        return [{"type": "input_text", "text": content}]
    if not isinstance(content, list) or not content:
        raise InvalidRequest(f"'{param}' must be a string or a non-empty list of parts.", param=param)
    return [_input_part(part, f"{param}[{j}]") for j, part in enumerate(content)]


def _input_part(part: Any, where: str) -> Item:
    kind = part.get("type") if isinstance(part, Mapping) else None
    if kind in TEXT_TYPES and isinstance(part.get("text"), str):
        return {"type": "input_text", "text": part["text"]}
    if kind == "input_image":
        if part.get("file_id") and not part.get("image_url"):
            raise InvalidRequest("Images by 'file_id' are not supported (this server has no "
                                 "files API); send the image as a data: URL in 'image_url'.",
                                 param=f"{where}.file_id", code="unsupported_parameter")
        url = part.get("image_url")
        if not isinstance(url, str):
            raise InvalidRequest(f"'{where}.image_url' must be a URL string.",
                                 param=f"{where}.image_url")
        detail = part.get("detail") or "auto"
        if detail not in DETAILS:
            raise _one_of(f"{where}.detail", DETAILS)
        return {"type": "input_image", "image_url": url, "detail": detail}
    if kind in ("input_file", "input_audio"):
        raise InvalidRequest(f"'{kind}' parts are not supported by this server.",
                             param=f"{where}.type", code="unsupported_content_type")
    raise InvalidRequest(f"'{where}' is not a content part this server reads "
                         "(input_text, input_image).", param=where)


def _output_parts(content: Any, param: str) -> list[Item]:
    if isinstance(content, str):
        content = [{"type": "output_text", "text": content}]
    if not isinstance(content, list):
        raise InvalidRequest(f"'{param}' must be a string or a list of output_text parts.",
                             param=param)
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind in (*TEXT_TYPES, None) and isinstance(part, Mapping) \
                and isinstance(part.get("text"), str):
            parts.append({"type": "output_text", "text": part["text"], "annotations": [],
                          "logprobs": []})
        elif kind in ("refusal", None) and isinstance(part, Mapping) \
                and isinstance(part.get("refusal"), str):
            parts.append({"type": "refusal", "refusal": part["refusal"]})
        else:
            raise InvalidRequest(f"'{param}[{j}]' must be a text part.", param=f"{param}[{j}]")
    return parts


def _function_call(raw: Mapping[str, Any], param: str) -> Item:
    for key in ("call_id", "name", "arguments"):
        if not isinstance(raw.get(key), str) or (key != "arguments" and not raw[key]):
            raise InvalidRequest(f"'{param}.{key}' must be a string.", param=f"{param}.{key}")
    return {"call_id": raw["call_id"], "name": raw["name"], "arguments": raw["arguments"]}


def _function_call_output(raw: Mapping[str, Any], param: str) -> Item:
    call_id, output = raw.get("call_id"), raw.get("output")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest(f"'{param}.call_id' must be the string call_id of a function call.",
                             param=f"{param}.call_id")
    where = f"{param}.output"
    if output is None:
        raise InvalidRequest(f"'{where}' is required: the function's result, as a string or a "
                             "list of input_text parts.", param=where, code="missing_required_parameter")
    if isinstance(output, str):
        return {"call_id": call_id, "output": output}
    if not isinstance(output, list):
        raise InvalidRequest(f"'{where}' must be a string or a list of input_text parts.", param=where)
    parts = []
    for j, part in enumerate(output):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind in ("input_image", "input_file"):
            raise InvalidRequest(f"'{kind}' in a function's output is not supported by this server; "
                                 "return text.", param=f"{where}[{j}].type",
                                 code="unsupported_content_type")
        if kind not in (*TEXT_TYPES, None) or not isinstance(part.get("text"), str):
            raise InvalidRequest(f"'{where}[{j}]' must be a text part.", param=f"{where}[{j}]")
        parts.append({"type": "input_text", "text": part["text"]})
    return {"call_id": call_id, "output": parts}


def _reasoning(raw: Mapping[str, Any], param: str) -> Item:
    item: Item = {"summary": _texts(raw.get("summary", []), f"{param}.summary", "summary_text")}
    if raw.get("content") is not None:
        item["content"] = _texts(raw["content"], f"{param}.content", "reasoning_text")
    return item


def _texts(parts: Any, param: str, kind: str) -> list[Item]:
    if not isinstance(parts, list):
        raise InvalidRequest(f"'{param}' must be a list of {kind} parts.", param=param)
    for j, part in enumerate(parts):
        if not isinstance(part, Mapping) or part.get("type", kind) != kind \
                or not isinstance(part.get("text"), str):
            raise InvalidRequest(f"'{param}[{j}]' must be a {kind} part.", param=f"{param}[{j}]")
    return [{"type": kind, "text": part["text"]} for part in parts]


def _one_of(param: str, values: tuple[str, ...]) -> InvalidRequest:
    return InvalidRequest(f"'{param}' must be one of {', '.join(map(repr, values))}.", param=param)


_FIELDS: dict[str, Callable[[Mapping[str, Any], str], Item]] = {
    "message": _message, "function_call": _function_call,
    "function_call_output": _function_call_output, "reasoning": _reasoning,
}
