"""Is this text, so far, the beginning of a JSON object? Answered incrementally.

A streamed tool input is sent as ``input_json_delta`` fragments, which clients parse as partial
JSON after every fragment (the SDK raises if that fails). ``JsonPrefix`` follows the argument
text a fragment at a time and says whether everything so far can still begin a JSON object, in
time linear in the text (string contents are skipped by one regex match), so checking a long
tool input (a file Claude Code writes) does not cost more per token as it grows.
"""

from __future__ import annotations

import re

_STRING_RUN = re.compile(r'[^"\\\x00-\x1f]*')
_WS = " \t\n\r"
_HEX = frozenset("0123456789abcdefABCDEF")
_ESCAPES = frozenset('"\\/bfnrtu')
_LITERALS = ("true", "false", "null")

# what comes next
(VALUE, VALUE_OR_CLOSE, KEY_OR_CLOSE, KEY, COLON, COMMA_OR_CLOSE, STRING, ESCAPE, NUMBER, LITERAL,
 DONE) = range(11)


class JsonPrefix:
    def __init__(self) -> None:
        self.stack: list[str] = []  # open containers, "{" or "["
        self.state = VALUE
        self.started = False  # the root object has begun
        self.ok = True
        self.key = False  # the string being read is an object key
        self.hex = 0  # \u digits still expected
        self.number = ""  # the number being read
        self.literal = ""  # the literal being read

    def feed(self, text: str) -> bool:
        """Take more text; False (for good) once the text cannot begin a JSON object."""
        i, n = 0, len(text)
        while self.ok and i < n:
            state = self.state
            if state == STRING:
                i = _STRING_RUN.match(text, i).end()
                if i >= n:
                    break
                c = text[i]
                if c == '"':
                    self.state = COLON if self.key else COMMA_OR_CLOSE
                elif c == "\\":
                    self.state = ESCAPE
                else:
                    self.ok = False  # a raw control character
                i += 1
                continue
            c = text[i]
            i += 1
            if state == ESCAPE:
                if self.hex:
                    self.ok = c in _HEX
                    self.hex -= 1
                    if not self.hex:
                        self.state = STRING
                elif c in _ESCAPES:
                    self.hex = 4 if c == "u" else 0
                    self.state = ESCAPE if c == "u" else STRING
                else:
                    self.ok = False
            elif state == NUMBER:
                if c in "0123456789+-.eE":
                    self.number += c
                    self.ok = _NUMBER_PREFIX.fullmatch(self.number) is not None
                else:
                    self.ok = _NUMBER.fullmatch(self.number) is not None
                    self.state = COMMA_OR_CLOSE
                    i -= 1  # the character after the number is read again
            elif state == LITERAL:
                self.literal += c
                self.ok = any(lit.startswith(self.literal) for lit in _LITERALS)
                if self.literal in _LITERALS:
                    self.state = COMMA_OR_CLOSE
            elif c in _WS:
                continue
            else:
                self._structure(c)
        return self.ok

    def _structure(self, c: str) -> None:
        state = self.state
        if state == DONE:
            self.ok = False
        elif not self.started:
            self.ok = c == "{"
            self.started = True
            self.stack.append("{")
            self.state = KEY_OR_CLOSE
        elif state in (KEY_OR_CLOSE, KEY):
            if c == '"':
                self.key, self.state = True, STRING
            else:
                self.ok = c == "}" and state == KEY_OR_CLOSE
                if self.ok:
                    self._close()
        elif state == COLON:
            self.ok = c == ":"
            self.state = VALUE
        elif state == COMMA_OR_CLOSE:
            top = self.stack[-1]
            if c == ",":
                self.state = KEY if top == "{" else VALUE
            elif c == ("}" if top == "{" else "]"):
                self._close()
            else:
                self.ok = False
        else:  # VALUE, VALUE_OR_CLOSE
            self._value(c)

    def _value(self, c: str) -> None:
        if c == "{":
            self.stack.append("{")
            self.state = KEY_OR_CLOSE
        elif c == "[":
            self.stack.append("[")
            self.state = VALUE_OR_CLOSE
        elif c == '"':
            self.key, self.state = False, STRING
        elif c in "-0123456789":
            self.number, self.state = c, NUMBER
        elif c in "tfn":
            self.literal, self.state = c, LITERAL
        elif c == "]" and self.state == VALUE_OR_CLOSE:
            self._close()
        else:
            self.ok = False

    def _close(self) -> None:
        self.stack.pop()
        self.state = COMMA_OR_CLOSE if self.stack else DONE


_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_NUMBER_PREFIX = re.compile(r"-?((0|[1-9][0-9]*)((\.[0-9]*)|(\.[0-9]+[eE][+-]?[0-9]*)|([eE][+-]?[0-9]*))?)?")
