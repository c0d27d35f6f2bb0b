"""Anthropic content blocks → chat messages, one turn at a time (for ``convert.py``).

A user turn's ``tool_result`` blocks become ``tool`` messages (``is_error`` results start with
``Error:``), then one user message holds its text and images — images inside tool results move
there too, since Mistral tool messages hold text only. An assistant turn's text and ``tool_use``
blocks become one assistant message; earlier ``thinking`` and ``redacted_thinking`` blocks are
not shown to the model again (as in chat history). Every part remembers the Anthropic path it
came from (``Conversion.origins``), so chat-side errors can name it (``params.py``).

Tool-use ids: the ``toolu_…`` ids this server hands out carry the 9-character id the model
wrote, which is what the chat renderer gets back; any other client id goes through unchanged
and the renderer maps it to a 9-character id. Distinct client ids stay distinct, and one id
means the same call everywhere in the request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from server.anthropic.protocol import (
    Base64Source,
    RedactedThinkingBlock,
    TextBlock,
    TextSource,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    URLSource,
    check,
)
from server.errors import InvalidRequest

TOOL_ID_PREFIX = "toolu_"
_OURS = re.compile(r"^toolu_([A-Za-z0-9]{9})$")


def tool_use_id(mistral_id: str) -> str:
    """The id of a tool call the model made, as this API shows it."""
    return TOOL_ID_PREFIX + mistral_id


class ToolUseIds:
    """Client tool-use id → the id the chat request carries for it (one request)."""

    def __init__(self) -> None:
        self.chat: dict[str, str] = {}
        self.taken: set[str] = set()

    def add(self, client_id: str) -> str:
        if client_id in self.chat:
            return self.chat[client_id]
        ours = _OURS.match(client_id)
        chat_id = ours.group(1) if ours else client_id
        while chat_id in self.taken:  # "toolu_X" and a bare "X" in one request
            chat_id = "~" + chat_id  # not 9 alphanumerics: the renderer hashes it
        self.chat[client_id] = chat_id
        self.taken.add(chat_id)
        return chat_id


@dataclass
class Conversion:
    """The chat request body and where each of its parts came from (for error params)."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    origins: dict[tuple[Any, ...], str] = field(default_factory=dict)
    ids: ToolUseIds = field(default_factory=ToolUseIds)

    def add(self, message: dict[str, Any], origin: str) -> int:
        self.messages.append(message)
        k = len(self.messages) - 1
        self.origins[("msg", k)] = origin
        return k


def text_of(value: Any, path: str, *, joiner: str = "\n\n") -> str:
    """A string, or a list of text blocks joined."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise InvalidRequest("Input should be a string or a list of text blocks.", param=path,
                             code="invalid_type")
    return joiner.join(check(TextBlock, block, f"{path}.{j}").text for j, block in enumerate(value))


def _kind(block: Any, path: str) -> str:
    if not isinstance(block, dict):
        raise InvalidRequest("Input should be an object.", param=path, code="invalid_type")
    kind = block.get("type")
    if not isinstance(kind, str):
        raise InvalidRequest("Field required.", param=f"{path}.type", code="missing_required_parameter")
    return kind


def _image_part(block: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    """An image block as a chat image part, and the param of its data or URL."""
    source = block.get("source")
    kind = _kind(source, f"{path}.source")
    if kind == "base64":
        src = check(Base64Source, source, f"{path}.source")
        return ({"type": "image_url", "image_url": {"url": f"data:{src.media_type};base64,{src.data}"}},
                f"{path}.source.data")
    if kind == "url":
        url = check(URLSource, source, f"{path}.source").url
        return {"type": "image_url", "image_url": {"url": url}}, f"{path}.source.url"
    if kind == "file":
        raise InvalidRequest("Images by file_id are not supported (this server has no Files API); "
                             "send the image as a 'base64' or 'url' source.",
                             param=f"{path}.source.type", code="unsupported_parameter")
    raise InvalidRequest(f"Unknown image source type {kind!r}; expected 'base64' or 'url'.",
                         param=f"{path}.source.type")


def _document_text(block: dict[str, Any], path: str) -> str:
    source = block.get("source")
    kind = _kind(source, f"{path}.source")
    if kind == "text":
        return check(TextSource, source, f"{path}.source").data
    if kind == "content":
        return text_of(source.get("content"), f"{path}.source.content")
    raise InvalidRequest(f"Documents with a {kind!r} source are not supported by this server "
                         "(it reads plain-text documents); send the text.",
                         param=f"{path}.source.type", code="unsupported_content_type")


class UserTurn:
    """One user message: tool results first (as tool messages), then text and images."""

    def __init__(self, conv: Conversion, index: int, answers: dict[str, str]) -> None:
        self.conv, self.path, self.answers = conv, f"messages.{index}", answers
        self.parts: list[tuple[dict[str, Any], str, str | None]] = []  # part, origin, url param
        self.results: list[tuple[dict[str, Any], str]] = []

    def text(self, text: str, origin: str) -> None:
        if self.parts and self.parts[-1][0]["type"] == "text":
            self.parts[-1][0]["text"] += "\n\n" + text
        else:
            self.parts.append(({"type": "text", "text": text}, origin, None))

    def block(self, block: Any, path: str) -> None:
        kind = _kind(block, path)
        if kind == "text":
            self.text(check(TextBlock, block, path).text, path)
        elif kind == "image":
            part, url_param = _image_part(block, path)
            self.parts.append((part, path, url_param))
        elif kind == "document":
            self.text(_document_text(block, path), path)
        elif kind == "tool_result":
            self.tool_result(check(ToolResultBlock, block, path), path)
        elif kind in ("tool_use", "thinking", "redacted_thinking"):
            raise InvalidRequest(f"A user message cannot hold '{kind}' blocks (they are the "
                                 "assistant's).", param=f"{path}.type")
        else:
            raise InvalidRequest(f"Content blocks of type {kind!r} are not supported by this "
                                 "server; it reads text, image, document (text) and tool_result "
                                 "blocks in user messages.", param=f"{path}.type",
                                 code="unsupported_content_type")

    def tool_result(self, result: ToolResultBlock, path: str) -> None:
        if result.tool_use_id not in self.answers:
            raise InvalidRequest(
                f"unexpected `tool_use_id` found in `tool_result` blocks: {result.tool_use_id}. "
                "Each `tool_result` block must have a corresponding `tool_use` block in the "
                "previous message.", param=f"{path}.tool_use_id")
        self.answers.pop(result.tool_use_id)
        texts: list[str] = []
        content = result.content
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for j, block in enumerate(content):
                where = f"{path}.content.{j}"
                kind = _kind(block, where)
                if kind == "text":
                    texts.append(check(TextBlock, block, where).text)
                elif kind == "image":  # Mistral tool messages are text: the image follows them
                    part, url_param = _image_part(block, where)
                    self.parts.append((part, where, url_param))
                elif kind == "document":
                    texts.append(_document_text(block, where))
                else:
                    raise InvalidRequest(f"'{kind}' blocks in a tool result are not supported; "
                                         "send text or images.", param=f"{where}.type",
                                         code="unsupported_content_type")
        elif content is not None:
            raise InvalidRequest("Input should be a string or a list of content blocks.",
                                 param=f"{path}.content", code="invalid_type")
        text = "\n\n".join(texts)
        if result.is_error:
            text = f"Error: {text}" if text else "Error"
        self.results.append(({"role": "tool", "tool_call_id": self.conv.ids.add(result.tool_use_id),
                              "content": text}, path))

    def close(self) -> None:
        if self.answers:
            raise InvalidRequest(
                "`tool_use` ids were found without `tool_result` blocks immediately after: "
                f"{', '.join(self.answers)}. Each `tool_use` block must have a corresponding "
                "`tool_result` block in the next message.", param=self.path)
        for message, origin in self.results:
            k = self.conv.add(message, origin)
            self.conv.origins[("tool", k)] = origin
        if not self.parts:
            return
        k = self.conv.add({"role": "user", "content": [p for p, _, _ in self.parts]}, self.path)
        for j, (_, origin, url_param) in enumerate(self.parts):
            self.conv.origins[("part", k, j)] = origin
            if url_param:
                self.conv.origins[("url", k, j)] = url_param


def assistant_turn(conv: Conversion, content: Any, index: int) -> dict[str, str]:
    """An assistant turn; returns its tool-use ids (client id → block path) to be answered."""
    path = f"messages.{index}"
    if isinstance(content, str):
        conv.add({"role": "assistant", "content": content}, path)
        return {}
    if not isinstance(content, list):
        raise InvalidRequest("Input should be a string or a list of content blocks.",
                             param=f"{path}.content", code="invalid_type")
    texts: list[str] = []
    calls: list[tuple[dict[str, Any], str]] = []
    uses: dict[str, str] = {}
    for j, block in enumerate(content):
        where = f"{path}.content.{j}"
        kind = _kind(block, where)
        if kind == "text":
            texts.append(check(TextBlock, block, where).text)
        elif kind == "tool_use":
            use = check(ToolUseBlock, block, where)
            if use.id in uses:
                raise InvalidRequest(f"Duplicate tool_use id {use.id!r}.", param=f"{where}.id")
            uses[use.id] = where
            calls.append(({"id": conv.ids.add(use.id), "type": "function", "function": {
                "name": use.name, "arguments": orjson.dumps(use.input).decode()}}, where))
        elif kind == "thinking":
            check(ThinkingBlock, block, where)
        elif kind == "redacted_thinking":
            check(RedactedThinkingBlock, block, where)
        else:
            raise InvalidRequest(f"Content blocks of type {kind!r} are not supported in assistant "
                                 "messages; this server reads text, tool_use, thinking and "
                                 "redacted_thinking.", param=f"{where}.type",
                                 code="unsupported_content_type")
    if not texts and not calls:
        return {}  # only earlier thinking: nothing the model would see
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
    if calls:
        message["tool_calls"] = [call for call, _ in calls]
    k = conv.add(message, path)
    for c, (_, origin) in enumerate(calls):
        conv.origins[("call", k, c)] = origin
    return uses
