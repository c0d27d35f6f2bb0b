"""Content and reasoning channels with whitespace hold-back.

Whitespace policies (P1, trailing-reasoning strip) depend on what comes *later*, so the
channels hold back whitespace until it is known whether it is kept. Decisions depend only on
the text sequence, never on how it was chunked, so streaming equals non-streaming.

Content rules:
  * a whitespace run is held until non-whitespace text follows (then emitted with it);
  * whitespace-only content before ``[THINK]`` (or ``<think>``) is dropped;
  * once a ``[TOOL_CALLS]`` segment was seen, held whitespace is dropped at the end and leading
    whitespace is dropped while nothing was emitted (P1: whitespace-only content -> null when
    tool calls are present; content before calls is right-stripped; trailing text after calls,
    P4, is left-stripped when it is the first content).

Reasoning rules: each reasoning block is stripped of leading and trailing whitespace; blocks
are joined with ``"\\n"``.
"""

from __future__ import annotations

from .events import ContentDelta, Event, ReasoningDelta


class ContentSink:
    """The content channel of one message."""

    __slots__ = ("_out", "_pending", "_emitted", "_tools")

    def __init__(self, out: list[Event]) -> None:
        self._out = out
        self._pending: list[str] = []
        self._emitted = False
        self._tools = False

    def push(self, text: str) -> None:
        """Add content text."""
        body = text.rstrip()
        if not body:
            if text:
                self._pending.append(text)
            return
        if self._emitted or not self._tools:
            self._pending.append(body)
            body = "".join(self._pending)
        else:  # first content after a tool segment: no leading whitespace
            body = body.lstrip()
        self._out.append(ContentDelta(body))
        self._emitted = True
        tail = text[len(text.rstrip()) :]
        self._pending = [tail] if tail else []

    def think_boundary(self) -> None:
        """A reasoning block starts: whitespace-only content so far is dropped."""
        if not self._emitted:
            self._pending = []

    def tool_boundary(self) -> None:
        """A ``[TOOL_CALLS]`` segment starts (whether or not tools are parsed)."""
        self._tools = True
        if not self._emitted:
            self._pending = []

    def finish(self) -> None:
        """End of output: held whitespace is kept only if no tool segment was seen."""
        if self._pending and not self._tools:
            self._out.append(ContentDelta("".join(self._pending)))
            self._emitted = True
        self._pending = []


class ReasoningSink:
    """The reasoning channel; ``enabled=False`` swallows everything."""

    __slots__ = ("_out", "_enabled", "_pending", "_emitted", "_fresh")

    def __init__(self, out: list[Event], enabled: bool = True) -> None:
        self._out = out
        self._enabled = enabled
        self._pending: list[str] = []
        self._emitted = False
        self._fresh = True

    def begin_block(self) -> None:
        """A new reasoning block starts (separated from the previous one by a newline)."""
        self._pending = []
        self._fresh = True

    def push(self, text: str) -> None:
        """Add reasoning text to the current block."""
        if not self._enabled:
            return
        stripped = text.rstrip()
        if not stripped:
            if text and not self._fresh:
                self._pending.append(text)
            return
        tail = text[len(stripped) :]
        if self._fresh:
            body = ("\n" if self._emitted else "") + stripped.lstrip()
            self._fresh = False
        else:
            self._pending.append(stripped)
            body = "".join(self._pending)
        self._out.append(ReasoningDelta(body))
        self._emitted = True
        self._pending = [tail] if tail else []

    def finish(self) -> None:
        """End of a block or of the output: trailing whitespace is dropped."""
        self._pending = []
