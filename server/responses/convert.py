"""A Responses request (plus the stored conversation before it) as a chat-completions request.

The Responses API is a second front for the one chat pipeline: input items become chat messages,
function tools become chat tools, ``text.format`` becomes ``response_format``, and the result goes
through ``parse_request`` and ``ChatService.prepare`` like any chat request (rendering, images,
tools, constraints and sampling are not copied). Errors the chat side raises are renamed to the
Responses field they came from (``messages[3].content`` → ``input[1].content``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from server.errors import APIError, InvalidRequest
from server.protocol import ChatCompletionRequest, parse_request
from server.responses.protocol import ResponsesRequest

# the prefix of an item id by item type (what OpenAI's ids look like)
ID_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


@dataclass
class Conversation:
    """Chat messages, and for each the Responses field it came from (for error params)."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)
    call_ids: set[str] = field(default_factory=set)

    def add(self, message: dict[str, Any], origin: str) -> None:
        self.messages.append(message)
        self.origins.append(origin)

    def add_call(self, call: dict[str, Any], origin: str) -> None:
        """Consecutive function calls (and the text before them) are one assistant turn."""
        last = self.messages[-1] if self.messages else None
        if last is not None and last["role"] == "assistant" and not last.get("_closed"):
            last.setdefault("tool_calls", []).append(call)
        else:
            self.add({"role": "assistant", "content": None, "tool_calls": [call]}, origin)
        self.call_ids.add(call["id"])


def normalise_input(req: ResponsesRequest) -> list[dict[str, Any]]:
    """This request's input as stored items: each with a type and an id."""
    if isinstance(req.input, str):
        return [{"id": new_id("msg"), "type": "message", "role": "user", "status": "completed",
                 "content": [{"type": "input_text", "text": req.input}]}]
    items = []
    for raw in req.input:
        item = dict(raw)
        kind = item.setdefault("type", "message")
        if not isinstance(item.get("id"), str) or not item["id"]:
            item["id"] = new_id(ID_PREFIX.get(kind, "item"))
        if kind == "message" and isinstance(item.get("content"), str):
            part = "output_text" if item.get("role") == "assistant" else "input_text"
            item["content"] = [{"type": part, "text": item["content"]}]
        items.append(item)
    return items


def _text_of(parts: Any, param: str) -> str:
    if isinstance(parts, str):
        return parts
    texts = []
    for j, part in enumerate(parts if isinstance(parts, list) else [None]):
        if not isinstance(part, Mapping) or not isinstance(part.get("text", part.get("refusal")), str):
            raise InvalidRequest(f"'{param}[{j}]' must be a text part.", param=f"{param}[{j}]")
        texts.append(part.get("text", part.get("refusal")))
    return "".join(texts)


def _user_parts(content: Any, param: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        raise InvalidRequest(f"'{param}' must be a string or a non-empty list of parts.", param=param)
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "input_image":
            if part.get("file_id") and not part.get("image_url"):
                raise InvalidRequest("Images by 'file_id' are not supported (this server has no "
                                     "files API); send the image as a data: URL in 'image_url'.",
                                     param=f"{where}.file_id", code="unsupported_parameter")
            url = part.get("image_url")
            if not isinstance(url, str):
                raise InvalidRequest(f"'{where}.image_url' must be a URL string.",
                                     param=f"{where}.image_url")
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif kind in ("input_file", "input_audio"):
            raise InvalidRequest(f"'{kind}' parts are not supported by this server.",
                                 param=f"{where}.type", code="unsupported_content_type")
        else:
            raise InvalidRequest(f"'{where}' is not a content part this server reads "
                                 "(input_text, input_image).", param=where)
    return parts


def add_item(conv: Conversation, item: Mapping[str, Any], param: str) -> None:
    """One input (or stored output) item into the conversation."""
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in ("user", "system", "developer", "assistant"):
            raise InvalidRequest(f"'{param}.role' must be one of 'user', 'assistant', 'system', "
                                 "'developer'.", param=f"{param}.role")
        content = item.get("content")
        if role == "assistant":
            conv.add({"role": "assistant", "content": _text_of(content, f"{param}.content")}, param)
        else:
            conv.add({"role": role, "content": _user_parts(content, f"{param}.content")}, param)
    elif kind == "function_call":
        for key in ("call_id", "name", "arguments"):
            if not isinstance(item.get(key), str) or (key != "arguments" and not item[key]):
                raise InvalidRequest(f"'{param}.{key}' must be a string.", param=f"{param}.{key}")
        conv.add_call({"id": item["call_id"], "type": "function",
                       "function": {"name": item["name"], "arguments": item["arguments"]}}, param)
    elif kind == "function_call_output":
        call_id = item.get("call_id")
        if call_id not in conv.call_ids:
            raise InvalidRequest(f"No function call with call_id {call_id!r} comes before this "
                                 "output (in 'input' or the 'previous_response_id' chain).",
                                 param=f"{param}.call_id", code="unknown_call_id")
        output = item.get("output")
        text = output if isinstance(output, str) else _text_of(output, f"{param}.output")
        conv.add({"role": "tool", "tool_call_id": call_id, "content": text}, param)
    elif kind == "reasoning":
        return  # earlier reasoning is not shown to Mistral models again (as in chat history)
    else:
        raise InvalidRequest(f"Input items of type {kind!r} are not supported; this server reads "
                             "'message', 'function_call', 'function_call_output' and 'reasoning'.",
                             param=f"{param}.type", code="unsupported_item_type")
    if conv.messages and kind != "function_call":
        conv.messages[-1]["_closed"] = kind != "message" or item.get("role") != "assistant"


def _tools(req: ResponsesRequest) -> list[dict[str, Any]]:
    tools = []
    for i, tool in enumerate(req.tools):
        kind = tool.get("type")
        if kind != "function":
            raise InvalidRequest(f"Tools of type {kind!r} are not supported; this server runs "
                                 "only 'function' tools (your code runs them).",
                                 param=f"tools[{i}].type", code="unsupported_tool")
        function = {k: tool[k] for k in ("name", "description", "parameters", "strict")
                    if tool.get(k) is not None}
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(req: ResponsesRequest) -> Any:
    choice = req.tool_choice
    if isinstance(choice, str):
        return choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise InvalidRequest(f"'tool_choice' of type {choice.get('type')!r} is not supported; use "
                         "'auto', 'none', 'required' or {'type': 'function', 'name': ...}.",
                         param="tool_choice", code="unsupported_tool_choice")


def _response_format(req: ResponsesRequest) -> dict[str, Any] | None:
    fmt = req.text.format
    if fmt.type == "json_object":
        return {"type": "json_object"}
    if fmt.type == "json_schema":
        spec = {"name": fmt.name, "schema": fmt.schema_, "strict": fmt.strict,
                "description": fmt.description}
        return {"type": "json_schema", "json_schema": {k: v for k, v in spec.items() if v is not None}}
    return None


def chat_body(req: ResponsesRequest, conv: Conversation) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": req.model,
        "messages": [{k: v for k, v in m.items() if k != "_closed"} for m in conv.messages],
        "max_tokens": req.max_output_tokens, "temperature": req.temperature, "top_p": req.top_p,
        "parallel_tool_calls": req.parallel_tool_calls, "user": req.user,
        "response_format": _response_format(req),
        "reasoning_effort": req.reasoning.effort if req.reasoning else None,
        **req.extras,
    }
    tools = _tools(req)
    if tools:
        body["tools"] = tools
    if tools or req.tool_choice != "auto":
        body["tool_choice"] = _tool_choice(req)
    if req.logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = req.top_logprobs or 0
    return {k: v for k, v in body.items() if v is not None}


def to_chat(req: ResponsesRequest, history: Sequence[Mapping[str, Any]],
            items: Sequence[Mapping[str, Any]]) -> tuple[ChatCompletionRequest, list[str]]:
    """``history``: earlier items (stored inputs and outputs, oldest first); ``items``: this
    request's normalised input. Returns the chat request and each message's origin (for
    ``rename_param``); raises 4xx errors with Responses params."""
    conv = Conversation()
    if req.instructions:
        conv.add({"role": "system", "content": req.instructions}, "instructions")
    for item in history:
        add_item(conv, item, "previous_response_id")
    for i, item in enumerate(items):
        add_item(conv, item, "input" if isinstance(req.input, str) else f"input[{i}]")
    try:
        return parse_request(chat_body(req, conv)), conv.origins
    except APIError as err:
        raise rename_param(err, conv.origins) from None


_CHAT_TO_RESPONSES = [
    (re.compile(r"^messages\[(\d+)\](.*)$"), None),
    (re.compile(r"^tools\[(\d+)\]\.function(.*)$"), r"tools[\1]\2"),
    (re.compile(r"^response_format\.json_schema(.*)$"), r"text.format\1"),
    (re.compile(r"^response_format(.*)$"), r"text.format\1"),
    (re.compile(r"^tool_choice\.function(.*)$"), r"tool_choice\1"),
    (re.compile(r"^max_(completion_)?tokens$"), "max_output_tokens"),
    (re.compile(r"^reasoning_effort$"), "reasoning.effort"),
    (re.compile(r"^logprobs$"), "top_logprobs"),
]


def rename_param(err: APIError, origins: Sequence[str]) -> APIError:
    """A chat-side error as the Responses request would name it."""
    original = param = err.param
    if param:
        for pattern, repl in _CHAT_TO_RESPONSES:
            found = pattern.match(param)
            if not found:
                continue
            if repl is None:  # a message: where it came from, same content index
                k = int(found.group(1))
                origin = origins[k] if k < len(origins) else "input"
                rest = found.group(2).replace(".image_url.url", ".image_url")
                param = origin + (rest if origin.startswith("input[") else "")
            else:
                param = pattern.sub(repl, param)
            break
        err.param = param
        err.message = err.message.replace(original, param)
    for chat_name, name in _CHAT_NAMES:
        err.message = err.message.replace(chat_name, name)
    return err


# chat field names a message may quote, as the Responses request calls them
_CHAT_NAMES = (("'response_format'", "'text.format'"), ("'max_tokens'", "'max_output_tokens'"),
               ("'max_completion_tokens'", "'max_output_tokens'"))
