"""Anthropic's own types (the installed ``anthropic`` SDK's pydantic models) as validators for
what ``/v1/messages`` sends: messages, every stream event, errors; and the SDK's own stream
accumulator, to see a stream the way the SDK builds its final message from it."""

from __future__ import annotations

import json
from typing import Any

from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import ErrorResponse, Message, MessageTokensCount, RawMessageStreamEvent
from pydantic import TypeAdapter

_EVENT = TypeAdapter(RawMessageStreamEvent)
# Anthropic's documented error types by status ("HTTP errors"); request_too_large is documented
# but not in the SDK's ErrorObject union, so 413 is checked against the docs only.
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
               500: "api_error", 503: "overloaded_error", 504: "timeout_error"}
LEAKS = ("Traceback", "pydantic", "list index out of range", "errors.pydantic.dev", "messages[")


def assert_message(body: dict[str, Any]) -> Message:
    """A valid ``Message`` with the fields every answer of this server has."""
    message = Message.model_validate(body)
    assert body["type"] == "message" and body["role"] == "assistant"
    assert body["id"].startswith("msg_")
    assert body["stop_reason"] in ("end_turn", "max_tokens", "stop_sequence", "tool_use",
                                   "model_context_window_exceeded")
    usage = body["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] >= 0
    for block in body["content"]:
        if block["type"] == "tool_use":
            assert block["id"].startswith("toolu_") and isinstance(block["input"], dict)
        if block["type"] == "thinking":
            assert block["signature"]
    return message


def assert_count(body: dict[str, Any]) -> int:
    MessageTokensCount.model_validate(body)
    assert set(body) == {"input_tokens"}
    return body["input_tokens"]


def stream_events(response: Any) -> list[dict[str, Any]]:
    """Parse an SSE body of typed events (``event: <type>`` + ``data: <json>``), validating each
    against the SDK's event types; pings and error events are returned too."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    text = response.text
    assert text.endswith("\n\n"), text[-80:]
    events = []
    for frame in text.split("\n\n"):
        if not frame or frame.startswith(":"):
            continue
        head, data = frame.split("\n", 1)
        assert head.startswith("event: ") and data.startswith("data: "), frame
        event = json.loads(data[len("data: "):])
        assert event["type"] == head[len("event: "):], frame
        if event["type"] == "error":
            ErrorResponse.model_validate(event)
        elif event["type"] != "ping":
            _EVENT.validate_python(event)
        events.append(event)
    return events


def assert_sequence(events: list[dict[str, Any]]) -> None:
    """Anthropic's event grammar: message_start, blocks (start, deltas, stop) in index order,
    message_delta, message_stop; pings anywhere after message_start."""
    kinds = [e["type"] for e in events if e["type"] != "ping"]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"], kinds
    open_index, next_index = None, 0
    for e in events[1:]:
        if e["type"] == "content_block_start":
            assert open_index is None and e["index"] == next_index
            open_index, next_index = e["index"], next_index + 1
        elif e["type"] in ("content_block_delta", "content_block_stop"):
            assert e["index"] == open_index, e
            if e["type"] == "content_block_stop":
                open_index = None
    assert open_index is None


def accumulate(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The final message the SDK builds from these events (its own accumulator)."""
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for event in events:
        if event["type"] in ("ping", "error"):
            continue
        snapshot = accumulate_event(event=_EVENT.validate_python(event), current_snapshot=snapshot,
                                    json_bufs=json_bufs)
    assert snapshot is not None
    return snapshot.model_dump(mode="json", exclude_none=True)


def same_content(body: dict[str, Any], streamed: dict[str, Any]) -> None:
    """A JSON answer and a stream's final message say the same (ids aside)."""
    def strip(message: dict[str, Any]) -> list[dict[str, Any]]:
        return [{k: v for k, v in b.items() if k not in ("id", "citations", "caller")}
                for b in message["content"]]
    assert strip(body) == strip(streamed)
    assert body["stop_reason"] == streamed["stop_reason"]
    assert body["stop_sequence"] == streamed.get("stop_sequence")
    assert body["usage"]["input_tokens"] == streamed["usage"]["input_tokens"]
    assert body["usage"]["output_tokens"] == streamed["usage"]["output_tokens"]


def assert_error(response: Any, status: int, param: str | None = None) -> str:
    """Anthropic's envelope with the documented type for ``status``; ``param``: the message
    starts with that field path. Returns the message."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) <= {"type", "error", "request_id"} and body["type"] == "error", body
    error = body["error"]
    assert set(error) == {"type", "message"} and error["type"] == ERROR_TYPES[status], body
    if status != 413:
        ErrorResponse.model_validate(body)
    message = error["message"]
    assert isinstance(message, str) and message
    if param is not None:
        assert message.startswith(f"{param}: "), message
    for leak in LEAKS:
        assert leak not in message, message
    return message
