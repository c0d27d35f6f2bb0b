"""Parser events → OpenAI shapes: stream choice deltas, or one accumulated message."""

from __future__ import annotations

from typing import Any

from parsers.events import ContentDelta, Event, ReasoningDelta, ToolArgsDelta, ToolCallStart
from server.chat.choice import Step


def _delta_for(event: Event) -> tuple[str, dict[str, Any]]:
    """(merge key, delta) for one event; deltas with equal keys are concatenated."""
    if isinstance(event, ContentDelta):
        return "content", {"content": event.text}
    if isinstance(event, ReasoningDelta):
        return "reasoning", {"reasoning": event.text}
    if isinstance(event, ToolCallStart):
        return f"tool{event.index}", {"tool_calls": [{
            "index": event.index, "id": event.id, "type": "function",
            "function": {"name": event.name, "arguments": ""}}]}
    assert isinstance(event, ToolArgsDelta)
    return f"tool{event.index}", {"tool_calls": [{
        "index": event.index, "function": {"arguments": event.text}}]}


def _merge(into: dict[str, Any], delta: dict[str, Any]) -> None:
    for key in ("content", "reasoning"):
        if key in delta:
            into[key] += delta[key]
    if "tool_calls" in delta:
        into["tool_calls"][0]["function"]["arguments"] += delta["tool_calls"][0]["function"]["arguments"]


def stream_deltas(step: Step) -> list[dict[str, Any]]:
    """The step's events as as few OpenAI deltas as possible, in order."""
    deltas: list[dict[str, Any]] = []
    last_key = None
    for event in step.events:
        key, delta = _delta_for(event)
        if key == last_key:
            _merge(deltas[-1], delta)
        else:
            deltas.append(delta)
            last_key = key
    return [d for d in deltas if d.get("content", "x") != "" and d.get("reasoning", "x") != ""]


class MessageBuilder:
    """Accumulates one choice's events and logprobs into a non-streaming choice."""

    def __init__(self, index: int, with_logprobs: bool) -> None:
        self.index = index
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.logprobs: list[dict[str, Any]] | None = [] if with_logprobs else None
        self.finish_reason: str | None = None

    def add(self, step: Step) -> None:
        for event in step.events:
            if isinstance(event, ContentDelta):
                self.content.append(event.text)
            elif isinstance(event, ReasoningDelta):
                self.reasoning.append(event.text)
            elif isinstance(event, ToolCallStart):
                self.calls[event.index] = {"id": event.id, "type": "function",
                                           "function": {"name": event.name, "arguments": ""}}
            elif isinstance(event, ToolArgsDelta):
                self.calls[event.index]["function"]["arguments"] += event.text
        if self.logprobs is not None:
            self.logprobs.extend(step.logprobs)
        if step.finish_reason is not None:
            self.finish_reason = step.finish_reason

    def choice(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content),
                                   "refusal": None}
        if self.reasoning:
            message["reasoning"] = "".join(self.reasoning)
        if self.calls:
            message["tool_calls"] = [self.calls[i] for i in sorted(self.calls)]
        logprobs = None if self.logprobs is None else {"content": self.logprobs, "refusal": None}
        return {"index": self.index, "message": message, "logprobs": logprobs,
                "finish_reason": self.finish_reason}
