"""Tokenizer v2/v3/v7 tool calls: ``[TOOL_CALLS]`` followed by one JSON array.

Wire format (SentencePiece puts a space after the control token, Tekken does not)::

    content? [TOOL_CALLS] [{"name": "f", "arguments": {...}, "id": "abc123XYZ"}, ...] trailing?

The array is scanned incrementally: for each element the ``"name"`` string, the optional
``"id"`` string and the RAW text of ``"arguments"`` (P2: byte-exact, streamed as it arrives)
are extracted, in any key order. Tolerated deviations:

* a bare object instead of an array; several ``[TOOL_CALLS]`` segments;
* ``"arguments"`` given as a JSON string whose content parses to an object (unwrapped);
  ``"parameters"`` accepted when ``"arguments"`` is absent; missing arguments -> ``{}``;
* elements without a string ``"name"`` are dropped; non-object elements are skipped;
* text after the array is content (P4); a segment that does not start with ``[`` or ``{`` is
  content; ``[TOOL_CALLS] []`` yields no call.

A call is announced (``ToolCallStart``) as soon as its name is known and either its id is known,
its arguments start, or the element ends -- arguments seen before the name are buffered. A
model id is therefore kept (if 9 alphanumerics and unique) when it precedes the arguments;
with the usual ``name, arguments, id`` order the id is generated.
"""

from __future__ import annotations

import json
import re

from .base import OutputParser, ParseOptions
from .jsonscan import ValueScanner
from .vocab import Vocab

_NON_WS = re.compile(r"\S")
_ARG_KEYS = ("arguments", "parameters")

# segment states
CONTENT, START, ELEM, SKIPVAL, KEY, KEYSTR, COLON, VALSTART, VAL, AFTER, BAD = range(11)


class MistralPreV11Parser(OutputParser):
    """``[TOOL_CALLS] [ {...}, ... ]`` tool calls (v2/v3/v7, SentencePiece or Tekken)."""

    name = "mistral_pre_v11"

    def __init__(self, vocab: Vocab, options: ParseOptions | None = None) -> None:
        super().__init__(vocab, options)
        self._state = CONTENT
        self._bare = False  # the segment is a single object, not an array
        self._scan = ValueScanner()
        self._new_element()

    def _new_element(self) -> None:
        self._el_open = False
        self._el_name: str | None = None
        self._el_id: str | None = None
        self._el_started = False
        self._el_args_seen = False
        self._el_pending: list[str] = []  # argument text received before the call was announced
        self._key: str | None = None
        self._raw: list[str] = []  # raw text of the key / buffered value being scanned
        self._role = ""  # what the current value is: "name", "id", "args", "args_buf", ""

    # ----------------------------------------------------------------- hooks
    def _on_special(self, token_id: int) -> None:
        if token_id == self._tc_id:
            self._end_segment()
            if self._begin_tool_segment():
                self._state = START

    def _on_finish(self) -> None:
        self._end_segment(at_eof=True)

    def _on_text(self, text: str) -> None:
        pos, n = 0, len(text)
        while pos < n:
            state = self._state
            if state == CONTENT:
                self._content.push(text[pos:] if pos else text)
                return
            if state in (SKIPVAL, KEYSTR, VAL, BAD):
                pos = self._scan_value(text, pos)
                continue
            m = _NON_WS.search(text, pos)
            if m is None:
                return
            pos = m.start()
            pos = self._structural(text[pos], text, pos)

    # ----------------------------------------------------------------- structure
    def _structural(self, ch: str, text: str, pos: int) -> int:
        """Handle one non-blank structural character; return the next position."""
        state = self._state
        if state == START:
            if ch == "[":
                self._bare = False
                self._state = ELEM
            elif ch == "{":
                self._bare = True
                self._open_element()
            else:  # not JSON: the segment is content
                self._state = CONTENT
                return pos
            return pos + 1
        if state == ELEM:
            if ch == "{":
                self._open_element()
            elif ch == "]":
                self._state = CONTENT
            elif ch not in ",}":
                self._begin_value(SKIPVAL, "")
                return pos
            return pos + 1
        if state == KEY:
            if ch == '"':
                self._begin_value(KEYSTR, "key")
                return pos
            if ch == "}":
                self._close_element()
            elif ch != ",":
                self._go_bad()
                return pos
            return pos + 1
        if state == COLON:
            if ch == ":":
                self._state = VALSTART
                return pos + 1
            self._go_bad()
            return pos
        if state == VALSTART:
            if ch in ",}":
                self._state = AFTER
                return pos
            self._begin_value(VAL, self._role_for(self._key))
            return pos
        # AFTER
        if ch == ",":
            self._state = KEY
        elif ch == "}":
            self._close_element()
        else:
            self._go_bad()
            return pos
        return pos + 1

    def _role_for(self, key: str | None) -> str:
        if key == "name" and self._el_name is None:
            return "name"
        if key == "id" and self._el_id is None:
            return "id"
        if key in _ARG_KEYS and not self._el_args_seen:
            self._el_args_seen = True
            return "args"
        return ""

    def _begin_value(self, state: int, role: str) -> None:
        self._state = state
        self._role = role
        self._raw = []
        self._scan = ValueScanner()

    def _scan_value(self, text: str, pos: int) -> int:
        end = self._scan.feed(text, pos)
        piece = text[pos:] if end < 0 else text[pos:end]
        role = self._role
        if role == "args" and self._scan.kind in "{[":
            self._call_args(piece)  # containers stream as they arrive
        elif role and piece:
            self._raw.append(piece)
        if end < 0:
            return len(text)
        self._value_done()
        return end

    def _value_done(self) -> None:
        state, role, raw = self._state, self._role, "".join(self._raw)
        self._raw = []
        if state == SKIPVAL:
            self._state = ELEM
        elif state == KEYSTR:
            self._key = _json_str(raw)
            self._state = COLON
        elif state == BAD:
            self._close_element()
        else:
            self._state = AFTER
            if role == "name":
                self._el_name = (_json_str(raw) or "").strip() or None
                if self._el_name is not None and self._el_id is not None:
                    self._announce()
            elif role == "id":
                self._el_id = _json_str(raw) or ""
                if self._el_name is not None:
                    self._announce()
            elif role == "args" and self._scan.kind not in "{[":
                self._call_args(_unwrap_args(raw))

    # ----------------------------------------------------------------- elements / calls
    def _open_element(self) -> None:
        self._new_element()
        self._el_open = True
        self._state = KEY

    def _go_bad(self) -> None:
        """Malformed member: skip to the end of the element, tracking nesting and strings."""
        self._begin_value(BAD, "")
        self._scan.feed("{")

    def _announce(self) -> None:
        if not self._el_started and self._el_name is not None:
            self._el_started = True
            self._start_call(self._el_name, self._el_id)
            for piece in self._el_pending:
                self._args(piece)
            self._el_pending = []

    def _call_args(self, text: str) -> None:
        if not text:
            return
        if self._el_name is not None:
            self._announce()
        if self._el_started:
            self._args(text)
        else:
            self._el_pending.append(text)

    def _close_element(self, *, truncated: bool = False) -> None:
        if self._el_open and self._el_name is not None:
            self._announce()
            self._end_call(truncated=truncated)
        self._new_element()
        self._state = CONTENT if self._bare else ELEM

    def _end_segment(self, *, at_eof: bool = False) -> None:
        """Close the current segment (next ``[TOOL_CALLS]`` or end of output)."""
        if self._state == CONTENT:
            return
        if self._el_open:
            in_args = self._state == VAL and self._role == "args"
            truncated = at_eof and in_args and not self._scan.complete_at_eof
            if in_args and self._scan.kind not in "{[":
                self._call_args("".join(self._raw))  # partial string/scalar arguments as-is
                self._raw = []
            self._close_element(truncated=truncated)
        self._new_element()
        self._state = CONTENT


def _json_str(raw: str) -> str | None:
    """Decode a JSON string literal; None if it is not one."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def _unwrap_args(raw: str) -> str:
    """String-encoded arguments that parse to an object are unwrapped; others kept raw."""
    inner = _json_str(raw)
    if inner is not None:
        try:
            if isinstance(json.loads(inner), dict):
                return inner.strip()
        except ValueError:
            pass
    return raw
