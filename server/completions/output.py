"""One text-completion choice: chat's ``ChoiceState`` over the raw-text parser, plus ``echo``
and OpenAI's legacy logprob arrays.

``ChoiceState`` applies stop strings, decides ``finish_reason``, counts tokens and builds the
logprob entries exactly as for chat; ``TextChoice`` turns each engine delta into a ``Piece``
(text, legacy logprobs, finish reason). The stream sends each piece as a chunk, the JSON answer
is the pieces joined (``ChoiceBuilder``), so the two cannot drift apart.

Legacy logprobs: ``tokens`` (display text), ``token_logprobs``, ``top_logprobs`` (token → logprob,
the chosen token included, so up to ``logprobs`` + 1 entries) and ``text_offset`` (where each
token starts in the choice's text, echoed prompt included; found by detokenizing the same ids,
so multi-byte characters split over tokens and hidden control tokens are counted right). The
first prompt token has no logprob (``null``), as in OpenAI's and vLLM's answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from parsers.events import ContentDelta
from parsers.vocab import Detokenizer, Vocab
from server.chat.choice import ChoiceState
from server.engine.base import CompletionDelta, TokenLogprob

Legacy = dict[str, list[Any]]


def empty_logprobs() -> Legacy:
    return {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}


@dataclass(slots=True)
class Piece:
    text: str = ""
    logprobs: Legacy | None = None
    finish_reason: str | None = None


class _Offsets:
    """Where each token starts in the text, by detokenizing the same ids."""

    def __init__(self, vocab: Vocab, *, continuation: bool, show_special: bool,
                 hidden: frozenset[int], start: int = 0) -> None:
        self.vocab = vocab
        self.detok = Detokenizer(vocab, continuation=continuation)
        self.show_special = show_special
        self.hidden = hidden | {vocab.bos_id, vocab.eos_id}
        self.chars = start

    def advance(self, token_id: int) -> int:
        at = self.chars
        if token_id in self.hidden:
            return at
        if self.vocab.is_special(token_id):
            self.chars += len(self.detok.flush())
            if self.show_special:
                self.chars += len(self.vocab.token_text(token_id))
        else:
            self.chars += len(self.detok.push(token_id))
        return at


class PromptLogprobs:
    """The prompt's logprobs, shared by the choices of one prompt: vLLM sends them with each
    choice's first output, but merges outputs that queue up, keeping only the first's."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: list[TokenLogprob | None] | None = None


class TextChoice:
    def __init__(self, index: int, state: ChoiceState, vocab: Vocab, *, prompt_ids: list[int],
                 echo: str | None, logprobs: int | None, echo_only: bool = False,
                 show_special: bool = False, hidden: frozenset[int] = frozenset(),
                 prompt_logprobs: PromptLogprobs | None = None) -> None:
        self.index = index
        self.prompt_logprobs = prompt_logprobs or PromptLogprobs()
        self.state = state
        self.vocab = vocab
        self.prompt_ids = prompt_ids
        self.echo = echo  # the prompt text to put first, or None
        self.echo_only = echo_only  # max_tokens 0: the prompt (and its logprobs) only
        self.logprobs = logprobs
        self.offsets = None if logprobs is None else _Offsets(
            vocab, continuation=True, show_special=show_special, hidden=hidden,
            start=len(echo or ""))

    # what the shared stream/abort helpers ask of a choice
    @property
    def done(self) -> bool:
        return self.state.done

    @property
    def failed(self) -> bool:
        return self.state.failed

    @property
    def stopped_by_string(self) -> bool:
        return self.state.stopped_by_string

    @property
    def completion_tokens(self) -> int:
        return 0 if self.echo_only else self.state.completion_tokens

    def push(self, delta: CompletionDelta) -> Piece:
        piece = Piece(logprobs=empty_logprobs() if self.logprobs is not None else None)
        if delta.prompt_logprobs is not None:
            self.prompt_logprobs.entries = delta.prompt_logprobs
        if self.echo is not None:
            piece.text = self.echo
            if piece.logprobs is not None:
                self._prompt_logprobs(self.prompt_logprobs.entries, piece.logprobs)
            self.echo = None
        step = self.state.push(delta)
        if self.echo_only:
            if step.finish_reason is not None:
                piece.finish_reason = "length" if not self.state.failed else step.finish_reason
            return piece
        events = step.events  # the raw-text parser writes ContentDelta events only
        if events:
            piece.text += events[0].text if len(events) == 1 else "".join(  # type: ignore[union-attr]
                [e.text for e in events if isinstance(e, ContentDelta)])
        if piece.logprobs is not None and step.logprobs:
            assert self.offsets is not None
            for token_id, entry in zip(delta.token_ids, step.logprobs):
                _add(piece.logprobs, entry["token"], entry["logprob"],
                     {t["token"]: t["logprob"] for t in entry["top_logprobs"]},
                     self.offsets.advance(token_id))
        piece.finish_reason = step.finish_reason
        return piece

    def _prompt_logprobs(self, entries: list[TokenLogprob | None] | None, out: Legacy) -> None:
        prompt = _Offsets(self.vocab, continuation=False, show_special=False, hidden=frozenset())
        entries = entries or [None] * len(self.prompt_ids)
        for token_id, lp in zip(self.prompt_ids, entries):
            offset = prompt.advance(token_id)
            if lp is None:
                _add(out, self.vocab.token_text(token_id), None, None, offset)
            else:
                entry = self.state.logprob_entry(token_id, lp)
                _add(out, entry["token"], entry["logprob"],
                     {t["token"]: t["logprob"] for t in entry["top_logprobs"]}, offset)


def _add(out: Legacy, token: str, logprob: float | None, top: dict[str, float] | None,
         offset: int) -> None:
    out["tokens"].append(token)
    out["token_logprobs"].append(logprob)
    if top is not None and logprob is not None:
        top.setdefault(token, logprob)  # the chosen token is always there (OpenAI: up to n + 1)
    out["top_logprobs"].append(top)
    out["text_offset"].append(offset)


@dataclass(slots=True)
class ChoiceBuilder:
    """One choice of the JSON answer: its pieces joined."""

    index: int
    with_logprobs: bool
    text: list[str] = field(default_factory=list)
    logprobs: Legacy = field(default_factory=empty_logprobs)
    finish_reason: str | None = None

    def add(self, piece: Piece) -> None:
        self.text.append(piece.text)
        if piece.logprobs is not None:
            for key, values in piece.logprobs.items():
                self.logprobs[key].extend(values)
        if piece.finish_reason is not None:
            self.finish_reason = piece.finish_reason

    def choice(self) -> dict[str, Any]:
        return {"index": self.index, "text": "".join(self.text),
                "logprobs": self.logprobs if self.with_logprobs else None,
                "finish_reason": self.finish_reason}
