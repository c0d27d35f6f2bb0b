"""Chat-side errors in the Messages API's terms: ``messages[3].tool_calls[0].function.name`` is
reported as ``messages.1.content.2.name``, ``tools[0].function.parameters`` as
``tools.0.input_schema``, and a prompt over the context in Anthropic's words (which Claude Code
reads to compact the conversation)."""

from __future__ import annotations

import re

from server.anthropic.blocks import Conversion
from server.errors import APIError, ContextLengthExceeded

_PATH = re.compile(r"messages\[(\d+)\](?:\.(tool_calls|content)\[(\d+)\])?((?:\.\w+)*)")
_FIELDS = [  # chat field (prefix) → Anthropic field
    (re.compile(r"^tools\[(\d+)\]\.function\.parameters"), r"tools.\1.input_schema"),
    (re.compile(r"^tools\[(\d+)\]\.function"), r"tools.\1"),
    (re.compile(r"^tool_choice\.function"), "tool_choice"),
    (re.compile(r"^response_format\.json_schema\.schema"), "output_config.format.schema"),
    (re.compile(r"^response_format(\.json_schema)?"), "output_config.format"),
    (re.compile(r"^thinking_token_budget$"), "thinking.budget_tokens"),
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
