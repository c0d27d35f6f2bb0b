"""A Messages API request as one chat-completions request (and chat errors back in its terms).

Anthropic's request becomes a chat request that goes through ``parse_request`` and
``ChatService.prepare`` like any other (rendering, images, tools, constraints and sampling are
not copied):

- ``system`` (text or text blocks) → the system message; text blocks are joined by blank lines;
- a user turn → its ``tool_result`` blocks as ``tool`` messages (``is_error`` results start with
  ``Error:``), then one user message with its text and images — images inside tool results
  move there too, since Mistral tool messages hold text only;
- an assistant turn → text, plus ``tool_use`` blocks as tool calls; earlier ``thinking`` and
  ``redacted_thinking`` blocks are not shown to the model again (as in chat history);
- a ``system`` message inside ``messages`` → a system message where Mistral prompts allow one
  (at the start, after a user turn; one at the very end goes before the last user turn), else
  the same text as the user's;
- ``tools`` / ``tool_choice`` (``any`` = a forced call, ``tool`` = that one,
  ``disable_parallel_tool_use`` = one call) / ``stop_sequences`` / ``output_config.format`` /
  ``thinking`` → their chat counterparts.

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
    MessagesRequest,
    RedactedThinkingBlock,
    TextBlock,
    TextSource,
    ThinkingBlock,
    MessageToolChoice,
    ToolDefinition,
    ToolResultBlock,
    ToolUseBlock,
    URLSource,
    check,
)
from server.errors import APIError, ContextLengthExceeded, InvalidRequest
from server.model import ModelInfo
from server.protocol import ChatCompletionRequest, parse_request

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


@dataclass(frozen=True)
class Converted:
    chat: ChatCompletionRequest
    conversion: Conversion
    show_thinking: bool  # thinking blocks carry their text (not display: omitted)


def _text(value: Any, path: str, *, joiner: str = "\n\n") -> str:
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
        return _text(source.get("content"), f"{path}.source.content")
    raise InvalidRequest(f"Documents with a {kind!r} source are not supported by this server "
                         "(it reads plain-text documents); send the text.",
                         param=f"{path}.source.type", code="unsupported_content_type")


class _UserTurn:
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


def _assistant(conv: Conversion, content: Any, index: int) -> dict[str, str]:
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


def _order(messages: list[Any]) -> list[int]:
    """The messages' indices in prompt order. System messages at the very end (Claude Code
    sends one after the user's) go before the last user message, so that the prompt ends with
    the user's turn, where Mistral models answer — unless that message answers tool calls."""
    k = len(messages)
    while k and isinstance(messages[k - 1], dict) and messages[k - 1].get("role") == "system":
        k -= 1
    last = messages[k - 1] if k else None
    if k == len(messages) or not isinstance(last, dict) or last.get("role") != "user":
        return list(range(len(messages)))
    blocks = last.get("content") if isinstance(last.get("content"), list) else []
    if any(isinstance(b, dict) and b.get("type") == "tool_result" for b in blocks):
        return list(range(len(messages)))
    return [*range(k - 1), *range(k, len(messages)), k - 1]


def _messages(conv: Conversion, req: MessagesRequest) -> None:
    if req.system is not None:
        conv.add({"role": "system", "content": _text(req.system, "system")}, "system")
    pending: dict[str, str] = {}  # tool uses of the previous assistant turn
    for i in _order(req.messages):
        raw = req.messages[i]
        path = f"messages.{i}"
        if not isinstance(raw, dict):
            raise InvalidRequest("Input should be an object.", param=path, code="invalid_type")
        role, content = raw.get("role"), raw.get("content")
        if "content" not in raw:
            raise InvalidRequest("Field required.", param=f"{path}.content",
                                 code="missing_required_parameter")
        if role == "user":
            turn = _UserTurn(conv, i, pending)
            if isinstance(content, str):
                turn.text(content, path)
            elif isinstance(content, list) and content:
                for j, block in enumerate(content):
                    turn.block(block, f"{path}.content.{j}")
            else:
                raise InvalidRequest("Input should be a string or a non-empty list of content "
                                     "blocks.", param=f"{path}.content", code="invalid_type")
            turn.close()
            pending = {}
            continue
        if pending:
            _UserTurn(conv, i, pending).close()  # the tool uses went unanswered: a 400
        if role == "assistant":
            pending = _assistant(conv, content, i)
        elif role == "system":
            # Mistral prompts hold system prompts at the start or after a user turn only: later
            # (after the assistant or tool results) the text comes as the user's
            where = "system" if not conv.messages or conv.messages[-1]["role"] in ("system", "user") else "user"
            conv.add({"role": where, "content": _text(content, f"{path}.content")}, path)
        else:
            raise InvalidRequest(f"Input should be 'user' or 'assistant'; got {role!r}.",
                                 param=f"{path}.role", code="invalid_value")
    if pending and conv.messages[-1].get("tool_calls"):
        raise InvalidRequest("The last message has `tool_use` blocks: send their `tool_result` "
                             "blocks in a user message before asking for the next turn.",
                             param=f"messages.{len(req.messages) - 1}")


def _tools(req: MessagesRequest) -> list[dict[str, Any]]:
    tools = []
    for i, raw in enumerate(req.tools or []):
        if isinstance(raw, dict) and raw.get("type") not in (None, "custom"):
            raise InvalidRequest(f"Tools of type {raw.get('type')!r} are Anthropic's server tools, "
                                 "which this server does not run; declare client tools (name, "
                                 "description, input_schema).", param=f"tools.{i}.type",
                                 code="unsupported_tool")
        tool = check(ToolDefinition, raw, f"tools.{i}")
        function = {"name": tool.name, "parameters": tool.input_schema}
        if tool.description is not None:
            function["description"] = tool.description
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(choice: MessageToolChoice) -> dict[str, Any]:
    fields: dict[str, Any] = {"parallel_tool_calls": not choice.disable_parallel_tool_use}
    if choice.type == "tool":
        fields["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    else:
        fields["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
    return fields


def _thinking(req: MessagesRequest, model: ModelInfo) -> dict[str, Any]:
    """``thinking`` as the chat fields that turn a reasoning model's thinking on or off.

    Not given: the model's own habit (a reasoning model thinks, and its thinking is returned).
    On (``enabled``, ``adaptive``, ``between_tools``): ``reasoning_effort: high`` where the
    tokenizer has model settings (v15+), else the preset's reasoning system prompt if it has one.
    ``disabled``: ``reasoning_effort: none`` (v15+), else ``[THINK]`` is made unreachable
    (``logit_bias``), and thinking text is dropped from the answer in any case. Models that do
    not reason ignore it, as Anthropic documents for models without thinking.
    """
    thinking = req.thinking
    if thinking is None or not model.reasoning:
        return {}
    version = model.tokenizer.instruct_tokenizer.tokenizer.version
    settings = bool(getattr(version, "supports_model_settings", False))
    if thinking.type != "disabled":
        if settings:
            return {"reasoning_effort": "high"}
        return {"prompt_mode": "reasoning"} if model.reasoning_system_prompt else {}
    fields: dict[str, Any] = {"include_reasoning": False}
    think = model.vocab.special_id("[THINK]")
    if settings:
        fields["reasoning_effort"] = "none"
    elif think is not None:
        fields["logit_bias"] = {str(think): -100}
    return fields


def chat_body(req: MessagesRequest, conv: Conversion, model: ModelInfo, *,
              accept_claude_models: bool) -> dict[str, Any]:
    name = req.model
    if accept_claude_models and name.startswith("claude-"):
        name = model.id
    body: dict[str, Any] = {
        **req.extras,
        "model": name, "messages": conv.messages, "max_tokens": req.max_tokens,
        "temperature": req.temperature, "top_p": req.top_p, "top_k": req.top_k,
        "stop": req.stop_sequences or None, "stream": req.stream,
        "user": req.metadata.user_id if req.metadata else None,
        **_thinking(req, model),
    }
    tools = _tools(req)
    if tools:
        body["tools"] = tools
        if req.tool_choice is not None:
            body.update(_tool_choice(req.tool_choice))
    elif req.tool_choice is not None and req.tool_choice.type in ("any", "tool"):
        raise InvalidRequest(f"'tool_choice' {req.tool_choice.type!r} needs 'tools'.",
                             param="tool_choice.type")
    schema = req.output_schema
    if schema is not None:
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "output", "schema": schema, "strict": True}}
    return {k: v for k, v in body.items() if v is not None}


def to_chat(req: MessagesRequest, model: ModelInfo, *, accept_claude_models: bool = False) -> Converted:
    """The chat request for ``req``; raises 4xx errors with Anthropic params."""
    conv = Conversion()
    _messages(conv, req)
    body = chat_body(req, conv, model, accept_claude_models=accept_claude_models)
    try:
        chat = parse_request(body)
    except APIError as err:
        raise rename(err, conv) from None
    chat._fit_max_tokens = True
    show = not (req.thinking is not None and req.thinking.display == "omitted")
    return Converted(chat, conv, show)


# -- chat-side errors in this API's terms ------------------------------------------------------
_PATH = re.compile(r"messages\[(\d+)\](?:\.(tool_calls|content)\[(\d+)\])?((?:\.\w+)*)")
_FIELDS = [  # chat field (prefix) → Anthropic field
    (re.compile(r"^tools\[(\d+)\]\.function\.parameters"), r"tools.\1.input_schema"),
    (re.compile(r"^tools\[(\d+)\]\.function"), r"tools.\1"),
    (re.compile(r"^tool_choice\.function"), "tool_choice"),
    (re.compile(r"^response_format\.json_schema\.schema"), "output_config.format.schema"),
    (re.compile(r"^response_format(\.json_schema)?"), "output_config.format"),
    (re.compile(r"^(reasoning_effort|prompt_mode|include_reasoning|logit_bias)$"), "thinking"),
    (re.compile(r"^parallel_tool_calls$"), "tool_choice.disable_parallel_tool_use"),
    (re.compile(r"^stop$"), "stop_sequences"),
    (re.compile(r"^user$"), "metadata.user_id"),
    (re.compile(r"^max_completion_tokens$"), "max_tokens"),
]
_CALL_FIELDS = {".function.name": ".name", ".function.arguments": ".input", ".id": ".id"}
_TOOL_FIELDS = {".tool_call_id": ".tool_use_id", ".content": ".content"}
_PROMPT_TOO_LONG = re.compile(r"maximum context length is (\d+) tokens\. However, your messages "
                              r"resulted in (\d+) tokens")


def _message_param(found: re.Match[str], conv: Conversion) -> str:
    k, kind, j, rest = int(found.group(1)), found.group(2), found.group(3), found.group(4)
    origin = conv.origins.get(("msg", k), "messages")
    if kind == "tool_calls":
        return conv.origins.get(("call", k, int(j)), origin) + _CALL_FIELDS.get(rest, "")
    if kind == "content":
        if rest.startswith(".image_url") and ("url", k, int(j)) in conv.origins:
            return conv.origins[("url", k, int(j))]
        return conv.origins.get(("part", k, int(j)), origin)
    if ("tool", k) in conv.origins:
        return origin + _TOOL_FIELDS.get(rest, "")
    return origin + (rest if rest in (".content",) else "")


def anthropic_param(param: str, conv: Conversion) -> str:
    found = _PATH.fullmatch(param)
    if found:
        return _message_param(found, conv)
    for pattern, repl in _FIELDS:
        if pattern.search(param):
            param = pattern.sub(repl, param, count=1)
            break
    return re.sub(r"\[(\d+)\]", r".\1", param)


def rename(err: APIError, conv: Conversion) -> APIError:
    """A chat-side error as this request would name it (param and message)."""
    if isinstance(err, ContextLengthExceeded):
        found = _PROMPT_TOO_LONG.search(err.message)
        if found:  # Anthropic's words, which Claude Code reads to compact the conversation
            err.message = f"prompt is too long: {found.group(2)} tokens > {found.group(1)} maximum"
            err.param = None
            return err
    if err.param:
        old, err.param = err.param, anthropic_param(err.param, conv)
        err.message = err.message.replace(f"'{old}'", f"'{err.param}'")
    err.message = _PATH.sub(lambda m: _message_param(m, conv), err.message)
    for chat_name, name in (("'stop'", "'stop_sequences'"), ("'response_format'", "'output_config.format'")):
        err.message = err.message.replace(chat_name, name)
    return err
