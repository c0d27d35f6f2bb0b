"""A Responses request (plus the stored conversation before it) as a chat-completions request.

The Responses API is a second front for the one chat pipeline: input items become chat messages,
function tools become chat tools, ``text.format`` becomes ``response_format``, and the result goes
through ``parse_request`` and ``ChatService.prepare`` like any chat request (rendering, images,
tools, constraints and sampling are not copied). Errors the chat side raises are renamed to the
Responses field they came from (``messages[3].content`` → ``input[1].content``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from server.budgets import DEFAULT, Budgets
from server.errors import APIError, InvalidRequest
from server.protocol import ChatCompletionRequest, parse_request
from server.responses.items import TEXT_TYPES
from server.responses.protocol import ResponsesRequest


@dataclass
class Conversation:
    """Chat messages, and for each the Responses field it came from (for error params)."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)
    call_ids: set[str] = field(default_factory=set)
    call_origins: dict[tuple[int, int], str] = field(default_factory=dict)  # (message, call) → field

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
        self.call_origins[(len(self.messages) - 1, len(self.messages[-1]["tool_calls"]) - 1)] = origin

    def check_outputs(self) -> None:
        """Every function call is answered (by a ``function_call_output``) before the
        conversation goes on, as OpenAI's API requires."""
        pending: dict[str, str] = {}
        for k, message in enumerate(self.messages):
            if message["role"] == "tool":
                pending.pop(message["tool_call_id"], None)
                continue
            if pending:
                break
            for j, call in enumerate(message.get("tool_calls") or []):
                pending[call["id"]] = self.call_origins[(k, j)]
        for call_id, origin in pending.items():
            raise InvalidRequest(f"No output for function call {call_id!r}: send a "
                                 "'function_call_output' item with this call_id after it.",
                                 param=origin if origin.startswith("input[") else "input",
                                 code="missing_function_call_output")


def _text_of(parts: Any, param: str) -> str:
    if isinstance(parts, str):
        return parts
    texts = []
    for j, part in enumerate(parts if isinstance(parts, list) else [None]):
        if not isinstance(part, Mapping) or not isinstance(part.get("text", part.get("refusal")), str):
            raise InvalidRequest(f"'{param}[{j}]' must be a text part.", param=f"{param}[{j}]")
        texts.append(part.get("text", part.get("refusal")))
    return "".join(texts)


def _chat_parts(content: Any, param: str) -> str | list[dict[str, Any]]:
    """A user, system or developer message's content as chat parts."""
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content if isinstance(content, list) else [None]):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind in TEXT_TYPES and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            parts.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
        else:
            raise InvalidRequest(f"'{param}[{j}]' is not a content part this server reads.",
                                 param=f"{param}[{j}]")
    return parts


def add_item(conv: Conversation, item: Mapping[str, Any], param: str) -> None:
    """One item into the conversation: a canonical input item (``items.py`` checked its shape),
    or a stored one (inputs, and outputs the server wrote; rows stored before items were
    canonical hold the shapes that were accepted then, which this reads too)."""
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        content = item.get("content")
        if role == "assistant":
            conv.add({"role": "assistant", "content": _text_of(content, f"{param}.content")}, param)
        elif role in ("user", "system", "developer"):
            conv.add({"role": role, "content": _chat_parts(content, f"{param}.content")}, param)
        else:
            raise InvalidRequest(f"'{param}.role' is not a role this server reads.",
                                 param=f"{param}.role")
    elif kind == "function_call":
        conv.add_call({"id": item.get("call_id"), "type": "function",
                       "function": {"name": item.get("name"), "arguments": item.get("arguments")}},
                      param)
    elif kind == "function_call_output":
        call_id = item.get("call_id")
        if not isinstance(call_id, str) or call_id not in conv.call_ids:
            raise InvalidRequest(f"No function call with call_id {call_id!r} comes before this "
                                 "output (in 'input' or the 'previous_response_id' chain).",
                                 param=f"{param}.call_id", code="unknown_call_id")
        conv.add({"role": "tool", "tool_call_id": call_id,
                  "content": _text_of(item.get("output"), f"{param}.output")}, param)
    elif kind == "reasoning":
        return  # earlier reasoning is not shown to Mistral models again (as in chat history)
    else:
        raise InvalidRequest(f"Items of type {kind!r} are not supported.", param=f"{param}.type",
                             code="unsupported_item_type")
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
            items: Sequence[Mapping[str, Any]],
            budgets: Budgets = DEFAULT) -> tuple[ChatCompletionRequest, Conversation]:
    """``history``: earlier items (stored inputs and outputs, oldest first); ``items``: this
    request's canonical input (``items.canonical_input``). Returns the chat request and the conversation (where each
    message came from, for ``rename_param``); raises 4xx errors with Responses params."""
    conv = Conversation()
    if req.instructions:
        conv.add({"role": "system", "content": req.instructions}, "instructions")
    for item in history:
        add_item(conv, item, "previous_response_id")
    for i, item in enumerate(items):
        add_item(conv, item, "input" if isinstance(req.input, str) else f"input[{i}]")
    conv.check_outputs()
    try:
        return parse_request(chat_body(req, conv), budgets=budgets), conv
    except APIError as err:
        raise rename_param(err, conv) from None


_CHAT_TO_RESPONSES = [
    (re.compile(r"^tools\[(\d+)\]\.function(.*)$"), r"tools[\1]\2"),
    (re.compile(r"^response_format\.json_schema(.*)$"), r"text.format\1"),
    (re.compile(r"^response_format(.*)$"), r"text.format\1"),
    (re.compile(r"^tool_choice\.function(.*)$"), r"tool_choice\1"),
    (re.compile(r"^max_(completion_)?tokens$"), "max_output_tokens"),
    (re.compile(r"^reasoning_effort$"), "reasoning.effort"),
    (re.compile(r"^logprobs$"), "top_logprobs"),
    (re.compile(r"^messages$"), "input"),
]
_MESSAGE = re.compile(r"messages\[(\d+)\]((?:\.tool_calls\[(\d+)\])?)([.\w\[\]]*)")
_CALL_FIELDS = {".function.name": ".name", ".function.arguments": ".arguments", ".id": ".call_id"}
# chat field names a message may quote, as the Responses request calls them
_CHAT_NAMES = (("'response_format'", "'text.format'"), ("'max_tokens'", "'max_output_tokens'"),
               ("'max_completion_tokens'", "'max_output_tokens'"), ("'messages'", "'input'"))


def _from_message(found: re.Match[str], conv: Conversation) -> str:
    """``messages[k]…`` (or ``messages[k].tool_calls[j]…``) → the input item it came from."""
    k = int(found.group(1))
    origin = conv.origins[k] if k < len(conv.origins) else "input"
    rest = found.group(4)
    if found.group(3) is not None:
        origin = conv.call_origins.get((k, int(found.group(3))), origin)
        rest = _CALL_FIELDS.get(rest, "")
    if not origin.startswith("input["):
        return origin
    return origin + rest.replace(".image_url.url", ".image_url")


def rename_param(err: APIError, conv: Conversation) -> APIError:
    """A chat-side error as the Responses request would name it."""
    param = err.param
    if param:
        found = _MESSAGE.fullmatch(param)
        if found:
            param = _from_message(found, conv)
        else:
            for pattern, repl in _CHAT_TO_RESPONSES:
                if pattern.match(param):
                    param = pattern.sub(repl, param)
                    break
        if not found and err.param != "messages":  # message paths are rewritten just below
            err.message = err.message.replace(err.param, param)
        err.param = param
    err.message = _MESSAGE.sub(lambda m: _from_message(m, conv), err.message)
    for chat_name, name in _CHAT_NAMES:
        err.message = err.message.replace(chat_name, name)
    return err
