"""Parser steps → Responses output items and OpenAI's typed stream events.

One builder serves both modes: a stream sends the events as they come, a non-streaming request
keeps only the finished response, so the two cannot drift apart. Items open and close as the
kind of output changes (reasoning → message → function calls, in the model's order):

    output_item.added → content_part.added → output_text.delta* → output_text.done
                      → content_part.done → output_item.done            (message)
    output_item.added → content_part.added → reasoning_text.delta* → reasoning_text.done
                      → content_part.done → output_item.done            (reasoning)
    output_item.added → function_call_arguments.delta* → function_call_arguments.done
                      → output_item.done                                (function_call)
"""

from __future__ import annotations

import copy
import time
from typing import Any

from parsers.events import ContentDelta, ReasoningDelta, ToolArgsDelta, ToolCallStart
from server.chat.choice import Step
from server.responses.items import new_id

Event = dict[str, Any]


class _Item:
    """The output item being written: its dict (shared with the response) and text so far."""

    def __init__(self, index: int, item: dict[str, Any]) -> None:
        self.index = index
        self.item = item
        self.kind: str = item["type"]
        self.text: list[str] = []
        self.logprobs: list[dict[str, Any]] = []


class ResponseBuilder:
    def __init__(self, response: dict[str, Any]) -> None:
        self.response = response  # the skeleton: every field but output, status, usage
        self.response.update(status="in_progress", output=[], output_text=None)
        self.response.pop("usage", None)  # only once there is one
        self.seq = 0
        self.current: _Item | None = None

    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return event

    def _snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self.response)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> list[Event]:
        return [self._event("response.created", response=self._snapshot()),
                self._event("response.in_progress", response=self._snapshot())]

    def push(self, step: Step) -> list[Event]:
        events: list[Event] = []
        pending = step.logprobs
        for ev in step.events:
            if isinstance(ev, ContentDelta):
                item = self._open("message", events)
                item.text.append(ev.text)
                item.logprobs.extend(pending)
                events.append(self._event(
                    "response.output_text.delta", item_id=item.item["id"], output_index=item.index,
                    content_index=0, delta=ev.text, logprobs=pending))
                pending = []
            elif isinstance(ev, ReasoningDelta):
                item = self._open("reasoning", events)
                item.text.append(ev.text)
                events.append(self._event(
                    "response.reasoning_text.delta", item_id=item.item["id"],
                    output_index=item.index, content_index=0, delta=ev.text))
            elif isinstance(ev, ToolCallStart):
                self._close(events, "completed")
                self._add(events, {"id": new_id("fc"), "type": "function_call", "status": "in_progress",
                                   "call_id": ev.id, "name": ev.name, "arguments": ""})
            elif isinstance(ev, ToolArgsDelta) and self.current is not None \
                    and self.current.kind == "function_call":
                self.current.text.append(ev.text)
                events.append(self._event(
                    "response.function_call_arguments.delta", item_id=self.current.item["id"],
                    output_index=self.current.index, delta=ev.text))
        return events

    def finish(self, usage: dict[str, Any], finish_reason: str | None) -> list[Event]:
        """Close the open item and settle the response (``terminal`` sends it)."""
        incomplete = finish_reason == "length"
        events: list[Event] = []
        self._close(events, "incomplete" if incomplete else "completed")
        texts = [part["text"] for item in self.response["output"] if item["type"] == "message"
                 for part in item["content"] if part["type"] == "output_text"]
        self.response.update(
            status="incomplete" if incomplete else "completed", usage=usage,
            output_text="".join(texts),
            incomplete_details={"reason": "max_output_tokens"} if incomplete else None,
            completed_at=None if incomplete else int(time.time()))
        return events

    def fail(self, code: str, message: str) -> list[Event]:
        events: list[Event] = []
        self._close(events, "incomplete")
        self.response.update(status="failed", error={"code": code, "message": message})
        return events

    def terminal(self) -> Event:
        """``response.completed`` / ``.incomplete`` / ``.failed`` with the settled response."""
        kind = {"completed": "response.completed", "incomplete": "response.incomplete"}.get(
            self.response["status"], "response.failed")
        return self._event(kind, response=self._snapshot())

    # -- items -------------------------------------------------------------------------
    def _add(self, events: list[Event], item: dict[str, Any]) -> _Item:
        self.response["output"].append(item)
        self.current = _Item(len(self.response["output"]) - 1, item)
        events.append(self._event("response.output_item.added", output_index=self.current.index,
                                  item=copy.deepcopy(item)))
        return self.current

    def _open(self, kind: str, events: list[Event]) -> _Item:
        if self.current is not None and self.current.kind == kind:
            return self.current
        self._close(events, "completed")
        if kind == "message":
            current = self._add(events, {"id": new_id("msg"), "type": "message", "status": "in_progress",
                                         "role": "assistant", "content": []})
            part: dict[str, Any] = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        else:
            current = self._add(events, {"id": new_id("rs"), "type": "reasoning", "status": "in_progress",
                                         "summary": [], "content": []})
            part = {"type": "reasoning_text", "text": ""}
        events.append(self._event("response.content_part.added", item_id=current.item["id"],
                                  output_index=current.index, content_index=0, part=part))
        return current

    def _close(self, events: list[Event], status: str) -> None:
        current, self.current = self.current, None
        if current is None:
            return
        item, text = current.item, "".join(current.text)
        where = {"item_id": item["id"], "output_index": current.index}
        if current.kind == "function_call":
            item["arguments"] = text
            events.append(self._event("response.function_call_arguments.done", **where,
                                      name=item["name"], arguments=text))
        elif current.kind == "message":
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": current.logprobs}
            item["content"] = [part]
            events.append(self._event("response.output_text.done", **where, content_index=0,
                                      text=text, logprobs=current.logprobs))
            events.append(self._event("response.content_part.done", **where, content_index=0,
                                      part=copy.deepcopy(part)))
        else:
            part = {"type": "reasoning_text", "text": text}
            item["content"] = [part]
            events.append(self._event("response.reasoning_text.done", **where, content_index=0,
                                      text=text))
            events.append(self._event("response.content_part.done", **where, content_index=0,
                                      part=dict(part)))
        item["status"] = status
        events.append(self._event("response.output_item.done", output_index=current.index,
                                  item=copy.deepcopy(item)))
