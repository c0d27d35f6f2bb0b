"""Tokenizer v11+ tool calls (``[TOOL_CALLS]name[ARGS]{json}``), and v13 ``[THINK]`` reasoning.

Wire format (all markers are control tokens, recognised by id)::

    content? ( [TOOL_CALLS] name ([CALL_ID] id)? [ARGS] json )*

* one ``[TOOL_CALLS]`` per call, no end-of-call token: a call ends where its JSON value ends
  (string/escape-aware scanner; top-level scalars allowed), at the next ``[TOOL_CALLS]`` or at
  the end of output;
* the name is stripped of whitespace; an empty name drops the call; as a fallback for a
  missing ``[ARGS]`` the arguments start at the first ``{`` of the name text;
* ``[CALL_ID]`` ids are kept when valid (9 alphanumerics) and unique, else regenerated;
* a call without arguments (no ``[ARGS]`` before the end, or only whitespace) gets ``{}``;
* text after a complete call is content (P4); output ending inside the JSON keeps the partial
  arguments (P5) and sets ``truncated_call``.

v13 adds ``[THINK] ... [/THINK]`` reasoning: whitespace-only content before ``[THINK]`` is
dropped, a duplicate ``[THINK]`` inside reasoning is absorbed, an orphan ``[/THINK]`` is dropped,
``[TOOL_CALLS]`` ends reasoning implicitly and unclosed reasoning stays reasoning.
"""

from __future__ import annotations

from .base import OutputParser, ParseOptions
from .jsonscan import ValueScanner
from .vocab import Vocab

CONTENT, NAME, CALL_ID, ARGS, REASONING = range(5)


class MistralV11Parser(OutputParser):
    """``[TOOL_CALLS]name[ARGS]json`` tool calls; no reasoning."""

    name = "mistral_v11"

    def __init__(self, vocab: Vocab, options: ParseOptions | None = None) -> None:
        super().__init__(vocab, options)
        self._args_id = vocab.special_id("[ARGS]")
        self._call_id_id = vocab.special_id("[CALL_ID]")
        self._state = CONTENT
        self._buf: list[str] = []  # name (NAME) or call id (CALL_ID) text
        self._name = ""
        self._scan = ValueScanner()

    # ----------------------------------------------------------------- hooks
    def _on_text(self, text: str) -> None:
        state = self._state
        if state == CONTENT:
            self._content.push(text)
        elif state == ARGS:
            self._args_text(text)
        elif state == NAME and "{" in text:  # missing [ARGS]: JSON starts at the first brace
            cut = text.index("{")
            self._buf.append(text[:cut])
            self._open_args(None)
            self._args_text(text[cut:])
        elif state in (NAME, CALL_ID):
            self._buf.append(text)
        else:
            self._on_other_text(text)

    def _on_other_text(self, text: str) -> None:
        """Text in a state added by a subclass."""
        self._content.push(text)

    def _on_special(self, token_id: int) -> None:
        state = self._state
        if token_id == self._tc_id:
            self._end_segment()
            if self._begin_tool_segment():
                self._state = NAME
                self._buf = []
        elif token_id == self._args_id:
            if state == NAME:
                self._open_args(None)
            elif state == CALL_ID:
                self._open_args("".join(self._buf).strip())
        elif token_id == self._call_id_id and state == NAME:
            self._name = "".join(self._buf)
            self._buf = []
            self._state = CALL_ID

    def _on_finish(self) -> None:
        self._end_segment(at_eof=True)

    # ----------------------------------------------------------------- call handling
    def _open_args(self, model_id: str | None) -> None:
        """Name (and id) complete: announce the call and start scanning its JSON."""
        name = ("".join(self._buf) if self._state == NAME else self._name).strip()
        self._buf = []
        if name:
            self._start_call(name, model_id)
        else:  # nameless call: consume and drop its arguments
            self._cur = None
            self._cur_args = False
        self._state = ARGS
        self._scan = ValueScanner()

    def _args_text(self, text: str) -> None:
        pos = 0
        if not self._scan.started:
            stripped = text.lstrip()
            if not stripped:
                return
            pos = len(text) - len(stripped)
        end = self._scan.feed(text, pos)
        if end < 0:
            self._args(text[pos:])
            return
        self._args(text[pos:end])
        self._end_call()
        self._state = CONTENT
        if end < len(text):
            self._content.push(text[end:])

    def _end_segment(self, *, at_eof: bool = False) -> None:
        """Close an open call (next ``[TOOL_CALLS]``, a reasoning start, or end of output)."""
        state = self._state
        if state in (NAME, CALL_ID):
            self._open_args("".join(self._buf).strip() if state == CALL_ID else None)
            state = ARGS
        if state == ARGS:
            truncated = at_eof and self._scan.started and not self._scan.complete_at_eof
            self._end_call(truncated=truncated)
            self._state = CONTENT


class MistralV13Parser(MistralV11Parser):
    """v11 tool calls plus ``[THINK]...[/THINK]`` reasoning recognised by token id."""

    name = "mistral_v13"

    def __init__(self, vocab: Vocab, options: ParseOptions | None = None) -> None:
        super().__init__(vocab, options)
        self._think_id = vocab.special_id("[THINK]")
        self._end_think_id = vocab.special_id("[/THINK]")

    def _on_other_text(self, text: str) -> None:
        self._reasoning.push(text)  # the only extra state is REASONING

    def _on_special(self, token_id: int) -> None:
        if token_id == self._think_id:
            if self._state != REASONING:  # a duplicate [THINK] inside reasoning is absorbed
                self._end_segment()
                self._content.think_boundary()
                self._reasoning.begin_block()
                self._state = REASONING
        elif token_id == self._end_think_id:
            if self._state == REASONING:  # an orphan [/THINK] is dropped
                self._reasoning.finish()
                self._state = CONTENT
        elif self._state == REASONING:
            if token_id == self._tc_id:  # [TOOL_CALLS] ends reasoning implicitly
                self._reasoning.finish()
                self._state = CONTENT
                super()._on_special(token_id)
        else:
            super()._on_special(token_id)
