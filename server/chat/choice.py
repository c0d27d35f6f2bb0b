"""One choice's state: engine tokens → parser events → stop strings → finish reason.

Streaming and non-streaming share this object: the stream renders each step's events as
chunks, the non-streaming path accumulates the same events into one message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from parsers.base import OutputParser
from parsers.events import ContentDelta, Event, ReasoningDelta, ToolArgsDelta
from parsers.vocab import Vocab
from server import metrics
from server.chat.stops import StopMatcher, StopStrings
from server.engine.base import CompletionDelta


@dataclass(slots=True)
class Step:
    events: list[Event] = field(default_factory=list)
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    stop_sequence: str | None = None  # the stop string that ended the output, if one did


class ChoiceState:
    def __init__(
        self,
        index: int,
        parser: OutputParser,
        vocab: Vocab,
        *,
        stop: StopStrings | None = None,
        top_logprobs: int | None = None,
        include_reasoning: bool = True,
        include_stop: bool = False,
    ) -> None:
        self.index = index
        self.parser = parser
        self.vocab = vocab
        self.stop = StopMatcher(stop, include=include_stop) if stop is not None else None
        self.top_logprobs = top_logprobs
        self.include_reasoning = include_reasoning
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        self.failed = False
        self.stopped_by_string = False
        self.call_args: dict[int, list[str]] = {}  # for the end-of-output JSON check only

    @property
    def done(self) -> bool:
        return self.finish_reason is not None or self.failed

    def push(self, delta: CompletionDelta) -> Step:
        step = Step()
        if self.done:
            return step
        self.completion_tokens += len(delta.token_ids)
        if self.top_logprobs is not None and delta.logprobs:
            step.logprobs = [self.logprob_entry(t, lp) for t, lp in zip(delta.token_ids, delta.logprobs)]
        stopped = self._filter(self.parser.feed(delta.token_ids), step)
        if stopped:
            self.stopped_by_string = True
            step.finish_reason = self.finish_reason = "stop"
            step.stop_sequence = self.stop.matched if self.stop is not None else None
        elif delta.finish_reason is not None:
            self._filter(self.parser.finish(), step)
            if self.stop is not None:
                tail = self.stop.flush()
                if tail:
                    step.events.append(ContentDelta(tail))
            step.finish_reason = self.finish_reason = self._final_reason(delta.finish_reason)
        return step

    def _final_reason(self, engine_reason: str) -> str:
        if engine_reason == "abort":
            self.failed = True
            return "abort"
        if engine_reason == "length":
            return "length"
        self._count_bad_arguments()
        return "tool_calls" if self.parser.tool_calls_count else "stop"

    def _count_bad_arguments(self) -> None:
        """Finished calls whose arguments are not valid JSON (a model slip, not truncation)."""
        for parts in self.call_args.values():
            try:
                json.loads("".join(parts))
            except (ValueError, RecursionError):  # a model can nest deeper than json parses
                metrics.PARSE_FAILURES.inc()

    def _filter(self, events: list[Event], step: Step) -> bool:
        """Apply stop strings to content and drop reasoning if not wanted. True when stopped."""
        for event in events:
            if isinstance(event, ReasoningDelta) and not self.include_reasoning:
                continue
            if isinstance(event, ToolArgsDelta):
                self.call_args.setdefault(event.index, []).append(event.text)
            if self.stop is not None:
                if isinstance(event, ContentDelta):
                    text, hit = self.stop.push(event.text)
                    if text:
                        step.events.append(ContentDelta(text))
                    if hit:
                        return True
                    continue
                held = self.stop.flush()
                if held:
                    step.events.append(ContentDelta(held))
            step.events.append(event)
        return False

    def logprob_entry(self, token_id: int, lp: Any) -> dict[str, Any]:
        top = [{"token": self.vocab.token_text(t), "logprob": v,
                "bytes": list(self._bytes(t))} for t, v in lp.top[: self.top_logprobs]]
        return {"token": self.vocab.token_text(token_id), "logprob": lp.logprob,
                "bytes": list(self._bytes(token_id)), "top_logprobs": top}

    def _bytes(self, token_id: int) -> bytes:
        if self.vocab.is_special(token_id):
            return self.vocab.token_text(token_id).encode()
        return self.vocab.token_bytes(token_id)
