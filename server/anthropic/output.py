"""Parser steps → an Anthropic ``Message`` and its stream events, from one builder.

A stream sends the events as they come; a non-streaming request keeps only the finished
message, so the two cannot drift apart. Content blocks open and close as the kind of output
changes, in the model's order (thinking → text → tool_use …):

    message_start
      content_block_start → content_block_delta (thinking_delta*, signature_delta) → content_block_stop
      content_block_start → content_block_delta (text_delta*)                      → content_block_stop
      content_block_start → content_block_delta (input_json_delta*)                → content_block_stop
    message_delta (stop_reason, stop_sequence, usage) → message_stop

Tool input: the argument text streams as ``input_json_delta`` fragments for as long as it is a
valid prefix of a JSON object (``JsonPrefix``; every client's partial-JSON parser accepts it); the block's
``input`` is that streamed text parsed the way Anthropic's SDK parses it (``allow_partial``), so
a model's malformed arguments end the fragments early instead of breaking the client, and the
JSON answer and the stream agree.

A thinking block's ``signature`` is an opaque digest of its text. It is never checked: thinking
sent back in later turns is not shown to the model again.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import uuid
from typing import Any

from pydantic_core import from_json

from parsers.events import ContentDelta, ReasoningDelta, ToolArgsDelta, ToolCallStart
from server.anthropic.blocks import tool_use_id
from server.anthropic.jsonprefix import JsonPrefix
from server.chat.choice import Step

Event = dict[str, Any]


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def signature(thinking: str) -> str:
    return base64.b64encode(b"mserve1" + hashlib.sha256(thinking.encode()).digest()).decode()


def parse_input(text: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        value = from_json(text, allow_partial=True)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class _Block:
    def __init__(self, index: int, block: dict[str, Any]) -> None:
        self.index = index
        self.block = block  # the dict in the message's content
        self.kind: str = block["type"]
        self.parts: list[str] = []  # text / thinking / argument text sent
        self.held = ""  # argument text not yet sent (whitespace only so far)
        self.broken = False  # the arguments stopped being JSON: nothing more is sent
        self.json = JsonPrefix()  # whether the argument text can still begin a JSON object

    def text(self) -> str:
        return "".join(self.parts)


STOP_REASONS = {"stop": "end_turn", "tool_calls": "tool_use", "length": "max_tokens"}


class MessageBuilder:
    def __init__(self, model: str, input_tokens: int, *, show_thinking: bool = True) -> None:
        self.usage: dict[str, Any] = {"input_tokens": input_tokens, "output_tokens": 0,
                                      "cache_creation_input_tokens": 0,
                                      "cache_read_input_tokens": 0}
        self.message: dict[str, Any] = {
            "id": new_message_id(), "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": None, "stop_sequence": None, "usage": self.usage}
        self.show_thinking = show_thinking
        self.current: _Block | None = None
        self.calls: dict[int, _Block] = {}  # parser tool index → its block

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> list[Event]:
        return [{"type": "message_start", "message": copy.deepcopy(self.message)}]

    def push(self, step: Step) -> list[Event]:
        events: list[Event] = []
        for ev in step.events:
            if isinstance(ev, ContentDelta):
                if ev.text:
                    self._append(self._open("text", events), ev.text, "text_delta", "text", events)
            elif isinstance(ev, ReasoningDelta):
                block = self._open("thinking", events)
                if ev.text and self.show_thinking:
                    self._append(block, ev.text, "thinking_delta", "thinking", events)
                else:
                    block.parts.append(ev.text)
            elif isinstance(ev, ToolCallStart):
                self._close(events)
                self.calls[ev.index] = self._new({"type": "tool_use", "id": tool_use_id(ev.id),
                                                  "name": ev.name, "input": {}}, events)
            elif isinstance(ev, ToolArgsDelta):
                block = self.calls.get(ev.index)
                if block is not None:
                    self._arguments(block, ev.text, events)
        return events

    def finish(self, finish_reason: str | None, stop_sequence: str | None, output_tokens: int, *,
               context_full: bool = False) -> list[Event]:
        """Close the open block, settle stop reason and usage: the last events."""
        events: list[Event] = []
        self._close(events)
        reason = STOP_REASONS.get(finish_reason or "stop", "end_turn")
        if stop_sequence is not None:
            reason = "stop_sequence"
        elif reason == "max_tokens" and context_full:
            reason = "model_context_window_exceeded"
        self.message.update(stop_reason=reason, stop_sequence=stop_sequence)
        self.usage["output_tokens"] = output_tokens
        events.append({"type": "message_delta",
                       "delta": {"stop_reason": reason, "stop_sequence": stop_sequence},
                       "usage": dict(self.usage)})
        events.append({"type": "message_stop"})
        return events

    # -- blocks --------------------------------------------------------------------------
    def _new(self, block: dict[str, Any], events: list[Event]) -> _Block:
        opened = _Block(len(self.message["content"]), block)
        self.message["content"].append(block)
        self.current = opened
        events.append({"type": "content_block_start", "index": opened.index,
                       "content_block": dict(block)})
        return opened

    def _open(self, kind: str, events: list[Event]) -> _Block:
        if self.current is not None and self.current.kind == kind:
            return self.current
        self._close(events)
        if kind == "text":
            return self._new({"type": "text", "text": ""}, events)
        return self._new({"type": "thinking", "thinking": "", "signature": ""}, events)

    def _append(self, block: _Block, text: str, delta_type: str, key: str, events: list[Event]) -> None:
        block.parts.append(text)
        events.append({"type": "content_block_delta", "index": block.index,
                       "delta": {"type": delta_type, key: text}})

    def _arguments(self, block: _Block, text: str, events: list[Event]) -> None:
        if block.broken or not text:
            return
        if not block.json.feed(text):
            block.broken = True
            return
        pending = block.held + text
        if not block.json.started:
            block.held = pending  # a client cannot parse whitespace alone: wait for more
            return
        block.held = ""
        self._append(block, pending, "input_json_delta", "partial_json", events)

    def _close(self, events: list[Event]) -> None:
        block, self.current = self.current, None
        if block is None:
            return
        text = block.text()
        if block.kind == "text":
            block.block["text"] = text
        elif block.kind == "thinking":
            block.block["signature"] = sig = signature(text)
            if self.show_thinking:
                block.block["thinking"] = text
            events.append({"type": "content_block_delta", "index": block.index,
                           "delta": {"type": "signature_delta", "signature": sig}})
        else:
            block.block["input"] = parse_input(text)  # the fragments sent
        events.append({"type": "content_block_stop", "index": block.index})
