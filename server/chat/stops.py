"""Stop strings: found in streamed text in one automaton step per character.

``StopStrings`` is built once per request (when its sampling is planned) and shared by its
choices; each choice's ``StopMatcher`` holds its own position in it and the text held back.
"""

from __future__ import annotations


class StopStrings:
    """An Aho–Corasick automaton over a request's stop strings, built once per request and
    shared by its choices (``StopMatcher`` holds each choice's position in it).

    Each state is a prefix of some stop string; from any state, a character leads to the state
    of the longest prefix that ends the text so far. So a text is matched in one step per
    character, whatever the length or number of the stop strings."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.goto: list[dict[str, int]] = [{}]
        depth = [0]
        ends = [0]  # length of a stop string the state's prefix ends with (the longest), or 0
        for stop in stops:
            state = 0
            for ch in stop:
                nxt = self.goto[state].get(ch)
                if nxt is None:
                    nxt = len(self.goto)
                    self.goto[state][ch] = nxt
                    self.goto.append({})
                    depth.append(depth[state] + 1)
                    ends.append(0)
                state = nxt
            ends[state] = len(stop)
        self.fail = [0] * len(self.goto)
        queue = list(self.goto[0].values())
        for state in queue:  # breadth first: a state's fallback is always done before it
            for ch, nxt in self.goto[state].items():
                back = self.fail[state]
                while back and ch not in self.goto[back]:
                    back = self.fail[back]
                self.fail[nxt] = self.goto[back].get(ch, 0)
                ends[nxt] = ends[nxt] or ends[self.fail[nxt]]
                queue.append(nxt)
        self.depth, self.ends = depth, ends


class StopMatcher:
    """Finds stop strings in streamed text, holding back any tail that may start one.

    A stop string counts as soon as its last character is written (the first to end wins; of
    those ending together, the longest). Held text is never longer than the longest stop
    string, and each character costs one automaton step: a long stop string or a long output
    costs nothing more per token (``StopStrings``). ``include``: the stop string itself is
    part of the text (vLLM's ``include_stop_str_in_output``)."""

    def __init__(self, stops: tuple[str, ...] | StopStrings, include: bool = False) -> None:
        self.automaton = stops if isinstance(stops, StopStrings) else StopStrings(stops)
        self.include = include
        self.state = 0
        self.held = ""
        self.matched: str | None = None  # the stop string that ended the output

    def push(self, text: str) -> tuple[str, bool]:
        """Returns (text safe to emit, whether a stop string was hit)."""
        goto, fail, ends = self.automaton.goto, self.automaton.fail, self.automaton.ends
        state = self.state
        buffer = self.held + text
        offset = len(self.held) + 1
        for i, ch in enumerate(text):
            while state and ch not in goto[state]:
                state = fail[state]
            state = goto[state].get(ch, 0)
            if ends[state]:
                start = offset + i - ends[state]
                self.matched = buffer[start:offset + i]
                self.state, self.held = 0, ""
                return buffer[:offset + i if self.include else start], True
        self.state = state
        keep = self.automaton.depth[state]
        out, self.held = buffer[:len(buffer) - keep], buffer[len(buffer) - keep:]
        return out, False

    def flush(self) -> str:
        out, self.held, self.state = self.held, "", 0
        return out
