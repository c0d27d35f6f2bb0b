"""Raw text of a completion: every token as written, no tool or reasoning parsing.

For text completions (``/v1/completions``), where the model continues a prompt and the answer
is exactly what it wrote. Unlike the chat parsers, no whitespace is held back or stripped, a
``[TOOL_CALLS]`` or ``[THINK]`` token is just a control token, and the text continues the
prompt (SentencePiece's first-piece space is kept: ``prompt + text`` is the whole text).

Control tokens are skipped (vLLM's ``skip_special_tokens``, the default) or written as their
names (``skip_special_tokens=False``); BOS and EOS never appear, nor do ``hidden`` ids (the
stop token ids that ended the output, as in vLLM).
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import OutputParser, ParseOptions
from .events import ContentDelta, Event
from .vocab import Detokenizer, Vocab


class TextParser(OutputParser):
    name = "text"

    def __init__(self, vocab: Vocab, *, skip_special_tokens: bool = True,
                 continuation: bool = True, hidden: frozenset[int] = frozenset()) -> None:
        super().__init__(vocab, ParseOptions())
        self._detok = Detokenizer(vocab, continuation=continuation)
        self._show_special = not skip_special_tokens
        self._hidden = hidden

    def feed(self, token_ids: Sequence[int]) -> list[Event]:
        if self._hidden:
            token_ids = [t for t in token_ids if t not in self._hidden]
        return super().feed(token_ids)

    def _on_text(self, text: str) -> None:
        self._out.append(ContentDelta(text))

    def _on_special(self, token_id: int) -> None:
        if self._show_special:
            self._out.append(ContentDelta(self.vocab.token_text(token_id)))
