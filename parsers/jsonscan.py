"""Incremental, string/escape-aware scanner that finds where one JSON value ends.

The scanner never builds the value: it only tracks container depth, string and escape state so
the caller can forward the raw text (policy P2: arguments are the model's exact bytes) and knows
where the value ends (policy P3). It accepts arbitrary chunking, is linear in the input (regex
jumps over string bodies and plain characters), and never raises on malformed input.

Top-level scalars (numbers, ``true``/``false``/``null`` or any bare word) end at whitespace or
one of ``,]}[{"``; they are complete at end of input. Containers and strings are complete only
when closed.
"""

from __future__ import annotations

import re

_STRING_STOP = re.compile(r'["\\]')
_CONTAINER_STOP = re.compile(r'[{}\[\]"]')
_SCALAR_STOP = re.compile(r'[\s,\]}\[{"]')

JSON_WS = " \t\r\n"


class ValueScanner:
    """Scan one JSON value; feed it text starting at the value's first (non-blank) character."""

    __slots__ = ("kind", "_depth", "_in_str", "_esc", "done")

    def __init__(self) -> None:
        self.kind = ""  # "{", "[", '"' or "s" (scalar) once the first character is seen
        self._depth = 0
        self._in_str = False
        self._esc = False
        self.done = False

    @property
    def started(self) -> bool:
        """True once the value's first character has been consumed."""
        return self.kind != ""

    @property
    def complete_at_eof(self) -> bool:
        """Whether the value is complete if the input ends now (scalars end at EOF)."""
        return self.done or self.kind == "s"

    def feed(self, text: str, pos: int = 0) -> int:
        """Consume ``text[pos:]``; return the index just after the value's end, or -1.

        -1 means everything was consumed and the value is still open. After a non-negative
        return ``done`` is True and further calls return ``pos`` unchanged.
        """
        n = len(text)
        if self.done:
            return pos
        if pos >= n:
            return -1
        if not self.kind:
            ch = text[pos]
            pos += 1
            if ch in "{[":
                self.kind = ch
                self._depth = 1
            elif ch == '"':
                self.kind = '"'
                self._in_str = True
            else:
                self.kind = "s"
                if ch in ",]}":  # no value at all: an empty scalar that consumes nothing
                    self.done = True
                    return pos - 1
        if self.kind == "s":
            m = _SCALAR_STOP.search(text, pos)
            if m is None:
                return -1
            self.done = True
            return m.start()
        while pos < n:
            if self._in_str:
                if self._esc:
                    self._esc = False
                    pos += 1
                    continue
                m = _STRING_STOP.search(text, pos)
                if m is None:
                    return -1
                pos = m.end()
                if m.group() == "\\":
                    self._esc = True
                    continue
                self._in_str = False
                if self.kind == '"':
                    self.done = True
                    return pos
                continue
            m = _CONTAINER_STOP.search(text, pos)
            if m is None:
                return -1
            pos = m.end()
            ch = m.group()
            if ch == '"':
                self._in_str = True
            elif ch in "{[":
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth == 0:
                    self.done = True
                    return pos
        return -1
