"""Mistral's API response shape, for Mistral's own SDK (``mistralai``).

The OpenAI shape stays the default: every response and chunk validates against OpenAI's schemas,
reasoning is the ``reasoning`` string field, and tool calls stream incrementally (name first,
then argument fragments). Mistral's SDK parses responses with pydantic models that *ignore*
unknown fields, so an OpenAI-shaped answer would silently lose the reasoning, and its stream
``ToolCall`` requires ``function.name`` in every tool-call delta. Requests that come from
Mistral's SDK (``User-Agent: mistral-client-…``) therefore get what Mistral's API sends:

- reasoning as a ``thinking`` content chunk: ``content`` becomes
  ``[{"type": "thinking", "thinking": [{"type": "text", "text": …}]}, {"type": "text", …}]``
  (a plain string when the answer has no reasoning, as Mistral's API does); in a stream, each
  reasoning delta is ``content: [{"type": "thinking", …}]`` and answer text stays a string;
- each tool call whole, in one delta just before the choice's ``finish_reason``;
- stream usage in a final chunk (``stream_options.include_usage`` defaults to true).

LangChain's ``ChatMistralAI`` (recognised by its streaming request headers, see
``protocol.is_langchain_mistral_stream``) reads streamed tool calls the same way, so its streams
get whole tool calls too; everything else it gets is the OpenAI shape, which it also reads.
"""

from __future__ import annotations

import copy
from typing import Any


def thinking_chunk(text: str) -> dict[str, Any]:
    return {"type": "thinking", "thinking": [{"type": "text", "text": text}]}


def mistral_message(message: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-shaped assistant message with its reasoning as Mistral content chunks."""
    if "reasoning" not in message:
        return message
    out = {k: v for k, v in message.items() if k != "reasoning"}
    parts = [thinking_chunk(message["reasoning"])]
    if message.get("content"):
        parts.append({"type": "text", "text": message["content"]})
    out["content"] = parts
    return out


def mistral_response(body: dict[str, Any]) -> dict[str, Any]:
    """A non-streaming chat completion in Mistral's shape."""
    choices = [{**c, "message": mistral_message(c["message"])} for c in body["choices"]]
    return {**body, "choices": choices}


class MistralDeltas:
    """One stream's OpenAI deltas → Mistral's: whole tool calls, and thinking chunks if asked."""

    def __init__(self, *, thinking_chunks: bool = True) -> None:
        self.thinking_chunks = thinking_chunks
        self._calls: dict[int, dict[int, dict[str, Any]]] = {}  # choice → call index → call

    def convert(self, choice: int, deltas: list[dict[str, Any]], *, finished: bool
                ) -> list[dict[str, Any]]:
        calls = self._calls.setdefault(choice, {})
        out: list[dict[str, Any]] = []
        for delta in deltas:
            if "reasoning" in delta and self.thinking_chunks:
                out.append({"content": [thinking_chunk(delta["reasoning"])]})
            elif "tool_calls" in delta:
                for call in delta["tool_calls"]:
                    if "id" in call:
                        calls[call["index"]] = copy.deepcopy(call)
                    else:
                        calls[call["index"]]["function"]["arguments"] += call["function"]["arguments"]
            else:
                out.append(delta)
        if finished and calls:
            out.append({"tool_calls": [calls[i] for i in sorted(calls)]})
            calls.clear()
        return out
