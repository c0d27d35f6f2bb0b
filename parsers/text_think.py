"""Magistral-Small-2506 style: v11 tool calls plus plain-text ``<think>...</think>`` reasoning.

The model has no reasoning control tokens, so the markers are matched in the decoded text:

* reasoning is recognised only when the output starts (after optional whitespace) with
  ``<think>``; until that is decided the leading text is held back (``<th`` might still become
  ``<think>``), and if it is disproven everything is content;
* inside reasoning a suffix that could start ``</think>`` is held back until disproven;
* ``</think>`` ends reasoning (a later ``<think>`` is ordinary content); ``[TOOL_CALLS]`` ends it
  implicitly; unclosed reasoning at the end stays reasoning (held-back text is flushed into it).
"""

from __future__ import annotations

from .base import ParseOptions
from .v11 import CONTENT, REASONING, MistralV11Parser
from .vocab import Vocab

OPEN = "<think>"
CLOSE = "</think>"
PRELUDE = 100  # start of output: not yet known whether it opens with <think>


class MagistralTextThinkParser(MistralV11Parser):
    """v11 tools + text ``<think>`` reasoning at the start of the output."""

    name = "magistral_text_think"

    def __init__(self, vocab: Vocab, options: ParseOptions | None = None) -> None:
        super().__init__(vocab, options)
        self._state = PRELUDE
        self._held = ""

    def _on_text(self, text: str) -> None:
        if self._state == PRELUDE:
            self._prelude_text(text)
        elif self._state == REASONING:
            self._reasoning_text(text)
        else:
            super()._on_text(text)

    def _prelude_text(self, text: str) -> None:
        held = self._held + text
        body = held.lstrip()
        if not body or OPEN.startswith(body):
            self._held = held  # still undecided
            return
        self._held = ""
        if body.startswith(OPEN):
            self._content.think_boundary()
            self._reasoning.begin_block()
            self._state = REASONING
            rest = body[len(OPEN) :]
            if rest:
                self._reasoning_text(rest)
        else:
            self._state = CONTENT
            self._content.push(held)

    def _reasoning_text(self, text: str) -> None:
        buf = self._held + text
        cut = buf.find(CLOSE)
        if cut >= 0:
            self._held = ""
            self._reasoning.push(buf[:cut])
            self._reasoning.finish()
            self._state = CONTENT
            rest = buf[cut + len(CLOSE) :]
            if rest:
                super()._on_text(rest)
            return
        keep = _partial_suffix(buf, CLOSE)
        self._held = buf[len(buf) - keep :] if keep else ""
        if len(buf) > keep:
            self._reasoning.push(buf[: len(buf) - keep])

    def _settle(self) -> None:
        """Resolve held-back text before a control token or the end of output."""
        held, self._held = self._held, ""
        if self._state == PRELUDE:
            self._state = CONTENT
            if held:
                self._content.push(held)
        elif self._state == REASONING and held:
            self._reasoning.push(held)

    def _on_special(self, token_id: int) -> None:
        self._settle()
        if self._state == REASONING:
            if token_id != self._tc_id:
                return  # other control tokens inside reasoning are ignored
            self._reasoning.finish()
            self._state = CONTENT
        super()._on_special(token_id)

    def _on_finish(self) -> None:
        self._settle()
        super()._on_finish()


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``marker``."""
    for k in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:k]):
            return k
    return 0
