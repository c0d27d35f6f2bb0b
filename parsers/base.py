"""Parser contract: options, the incremental ``OutputParser`` base, and one-shot assembly.

A parser instance handles ONE choice of ONE response. ``feed(token_ids)`` consumes newly
generated token ids and returns the events they complete; ``finish()`` flushes held-back text
and closes an open tool call. Non-streaming parsing is literally ``feed(all) + finish()``
followed by :func:`assemble` (see :func:`parse_all`), so both modes share one code path.

Subclasses implement three hooks: ``_on_text(text)`` (decoded ordinary text, any chunking),
``_on_special(token_id)`` (a control token, recognised by id) and ``_on_finish()``.
The base owns detokenization, the content/reasoning channels, tool-call bookkeeping (index,
id generation and uniqueness, ``parallel_tool_calls``) and the ``tools=False`` drop rule.
"""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Iterable, Sequence

from .events import ContentDelta, Event, ReasoningDelta, ToolArgsDelta, ToolCallStart
from .sinks import ContentSink, ReasoningSink
from .vocab import Detokenizer, Vocab

ID_RE = re.compile(r"^[A-Za-z0-9]{9}$")
_ALNUM = string.ascii_letters + string.digits


def random_call_id() -> str:
    """A random tool-call id: 9 characters from [A-Za-z0-9] (Mistral's validator format)."""
    return "".join(secrets.choice(_ALNUM) for _ in range(9))


@dataclass(frozen=True)
class ParseOptions:
    """Per-request parsing options.

    tools: parse tool calls; when False a ``[TOOL_CALLS]`` segment and everything after it is
        dropped (no calls, no marker text in content) -- ``tool_choice="none"``.
    reasoning: report reasoning; when False reasoning text is recognised but discarded.
    parallel_tool_calls: when False only the first call is reported, later ones are dropped.
    id_factory: tool-call id generator; results that are not 9 alphanumerics or that collide
        are replaced by :func:`random_call_id`.
    """

    tools: bool = False
    reasoning: bool = True
    parallel_tool_calls: bool = True
    id_factory: Callable[[], str] | None = None


@dataclass(frozen=True)
class ParsedCall:
    """One assembled tool call; ``arguments`` is the raw JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ParsedMessage:
    """An assembled assistant message (empty content/reasoning are ``None``)."""

    content: str | None
    reasoning: str | None
    tool_calls: list[ParsedCall] = field(default_factory=list)


class OutputParser:
    """Incremental, token-id based parser of one generated message."""

    name: ClassVar[str] = "plain"

    def __init__(self, vocab: Vocab, options: ParseOptions | None = None) -> None:
        self.vocab = vocab
        self.options = options if options is not None else ParseOptions()
        self._detok = Detokenizer(vocab)
        self._out: list[Event] = []
        self._content = ContentSink(self._out)
        self._reasoning = ReasoningSink(self._out, self.options.reasoning)
        self._ids: set[str] = set()
        self._count = 0
        self._cur: int | None = None  # index of the call receiving argument deltas
        self._cur_args = False  # current call (reported or not) has produced argument text
        self._truncated = False
        self._dropping = False
        self._finished = False
        self._tc_id = vocab.special_id("[TOOL_CALLS]")
        self._skip = {vocab.bos_id, vocab.eos_id}

    # ----------------------------------------------------------------- public API
    def feed(self, token_ids: Sequence[int]) -> list[Event]:
        """Consume newly generated token ids; return the events they complete."""
        if self._finished:
            return []
        vocab, detok = self.vocab, self._detok
        for tid in token_ids:
            if self._dropping:
                break
            if vocab.is_special(tid):
                tail = detok.flush()
                if tail:
                    self._on_text(tail)
                if tid not in self._skip:
                    self._on_special(tid)
            else:
                text = detok.push(tid)
                if text:
                    self._on_text(text)
        return self._take()

    def finish(self) -> list[Event]:
        """End of generation: flush held-back text and close any open call (idempotent)."""
        if self._finished:
            return []
        if not self._dropping:
            tail = self._detok.flush()
            if tail:
                self._on_text(tail)
        self._on_finish()
        self._reasoning.finish()
        self._content.finish()
        self._finished = True
        return self._take()

    @property
    def tool_calls_count(self) -> int:
        """Number of tool calls reported so far."""
        return self._count

    @property
    def truncated_call(self) -> bool:
        """True if the output ended inside the JSON arguments of a reported call (P5)."""
        return self._truncated

    # ----------------------------------------------------------------- hooks
    def _on_text(self, text: str) -> None:
        self._content.push(text)

    def _on_special(self, token_id: int) -> None:
        if token_id == self._tc_id:
            self._begin_tool_segment()

    def _on_finish(self) -> None:
        pass

    # ----------------------------------------------------------------- helpers for subclasses
    def _begin_tool_segment(self) -> bool:
        """A ``[TOOL_CALLS]`` token: returns False (and drops the rest) if tools are off."""
        self._content.tool_boundary()
        if not self.options.tools:
            self._dropping = True
            return False
        return True

    def _start_call(self, name: str, model_id: str | None = None) -> None:
        """Open a call; reported unless ``parallel_tool_calls`` is off and one exists."""
        self._cur_args = False
        if self._count >= 1 and not self.options.parallel_tool_calls:
            self._cur = None
            return
        call_id = self._new_id(model_id)
        self._out.append(ToolCallStart(self._count, call_id, name))
        self._cur = self._count
        self._count += 1

    def _args(self, text: str) -> None:
        """Argument text of the current call."""
        if text:
            self._cur_args = True
            if self._cur is not None:
                self._out.append(ToolArgsDelta(self._cur, text))

    def _end_call(self, *, truncated: bool = False) -> None:
        """Close the current call; empty arguments become ``{}``."""
        if not self._cur_args:
            self._args("{}")
        if truncated and self._cur is not None:
            self._truncated = True
        self._cur = None
        self._cur_args = False

    def _new_id(self, model_id: str | None) -> str:
        if model_id is not None and ID_RE.match(model_id) and model_id not in self._ids:
            self._ids.add(model_id)
            return model_id
        factory = self.options.id_factory
        for _ in range(64):
            cand = factory() if factory is not None else random_call_id()
            if isinstance(cand, str) and ID_RE.match(cand) and cand not in self._ids:
                self._ids.add(cand)
                return cand
        while True:  # a broken factory: fall back to the secure generator
            cand = random_call_id()
            if cand not in self._ids:
                self._ids.add(cand)
                return cand

    def _take(self) -> list[Event]:
        events = _coalesce(self._out)
        self._out.clear()
        return events


def _coalesce(events: list[Event]) -> list[Event]:
    """Merge adjacent deltas of the same kind (and call index)."""
    if len(events) < 2:
        return list(events)
    merged: list[Event] = []
    parts: list[str] = []
    last: Event | None = None
    for ev in events:
        if (
            last is not None
            and type(ev) is type(last)
            and not isinstance(ev, ToolCallStart)
            and (not isinstance(ev, ToolArgsDelta) or ev.index == last.index)  # type: ignore[union-attr]
        ):
            parts.append(ev.text)  # type: ignore[union-attr]
            continue
        if last is not None:
            merged.append(_with_text(last, parts))
        last, parts = ev, ([] if isinstance(ev, ToolCallStart) else [ev.text])
    assert last is not None
    merged.append(_with_text(last, parts))
    return merged


def _with_text(ev: Event, parts: list[str]) -> Event:
    if isinstance(ev, ToolCallStart) or len(parts) == 1:
        return ev
    text = "".join(parts)
    if isinstance(ev, ToolArgsDelta):
        return ToolArgsDelta(ev.index, text)
    return type(ev)(text)  # type: ignore[call-arg]


def assemble(events: Iterable[Event]) -> ParsedMessage:
    """Fold an event list into a message (the non-streaming view of a stream)."""
    content: list[str] = []
    reasoning: list[str] = []
    calls: list[tuple[str, str, list[str]]] = []
    for ev in events:
        if isinstance(ev, ContentDelta):
            content.append(ev.text)
        elif isinstance(ev, ReasoningDelta):
            reasoning.append(ev.text)
        elif isinstance(ev, ToolCallStart):
            calls.append((ev.id, ev.name, []))
        elif isinstance(ev, ToolArgsDelta) and 0 <= ev.index < len(calls):
            calls[ev.index][2].append(ev.text)
    return ParsedMessage(
        content="".join(content) or None,
        reasoning="".join(reasoning) or None,
        tool_calls=[ParsedCall(i, n, "".join(a)) for i, n, a in calls],
    )


def parse_all(parser: OutputParser, token_ids: Sequence[int]) -> ParsedMessage:
    """Non-streaming parse: ``feed(all)`` + ``finish()`` + :func:`assemble`."""
    events = parser.feed(token_ids)
    events.extend(parser.finish())
    return assemble(events)
