"""Stop strings in streamed text (issue #17, item 7): one automaton step per character.

Before, every token re-scanned the held text once per possible tail (O(held²) per token, on the
event loop): a forced long output with a 300 KB stop string held the loop for seconds."""

from __future__ import annotations

import random

import pytest

from server.chat.stops import StopMatcher, StopStrings


def reference(text: str, stops: tuple[str, ...], include: bool = False) -> tuple[str, bool]:
    """The text a client sees: cut where the first stop string to end starts (of those ending
    together, the longest), or all of it; ``include``: cut where it ends."""
    best = None
    for stop in stops:
        start = text.find(stop)
        while start >= 0:
            end = start + len(stop)
            if best is None or (end, start) < best:
                best = (end, start)
            start = text.find(stop, start + 1)
    return (text[:best[1 - include]], True) if best else (text, False)


def feed(matcher: StopMatcher, text: str, cuts: list[int]) -> tuple[str, bool]:
    out, pos = "", 0
    for cut in [*cuts, len(text)]:
        emitted, hit = matcher.push(text[pos:cut])
        out += emitted
        pos = cut
        if hit:
            return out, True
    return out + matcher.flush(), False


@pytest.mark.parametrize("seed", range(8))
def test_same_cut_as_the_reference_whatever_the_chunking(seed):
    rng = random.Random(seed)
    for _ in range(1500):
        alphabet = rng.choice(["ab", "abc", "aé中"])
        stops = tuple({"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 5)))
                       for _ in range(rng.randint(1, 4))})
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        cuts = sorted(rng.sample(range(len(text) + 1), k=min(len(text), rng.randint(0, 6))))
        matcher = StopMatcher(StopStrings(stops))
        out, hit = feed(matcher, text, cuts)
        assert (out, hit) == reference(text, stops), (stops, text, cuts)
        assert matcher.matched is None if not hit else text[len(out):].startswith(matcher.matched)
        assert not hit or matcher.matched in stops
        # vLLM's include_stop_str_in_output (text completions): the stop string is kept
        assert feed(StopMatcher(StopStrings(stops), include=True), text, cuts) == reference(
            text, stops, include=True), (stops, text, cuts)


def test_held_text_is_only_what_may_start_a_stop_string():
    matcher = StopMatcher(StopStrings(("</end>",)))
    assert matcher.push("answer </e") == ("answer ", False)
    assert matcher.push("x and") == ("</ex and", False)
    assert matcher.push(" </end> more") == (" ", True)
    assert matcher.matched == "</end>"


def test_one_automaton_serves_every_choice():
    shared = StopStrings(("STOP",))
    first, second = StopMatcher(shared), StopMatcher(shared)
    assert first.push("aST") == ("a", False)
    assert second.push("bSTOP") == ("b", True)
    assert first.push("OP") == ("", True)


def test_a_long_stop_string_over_a_long_repetitive_output_costs_steps_not_rescans():
    """The held text is as long as the stop string allows, and each push walks only its own
    characters: a matcher counts its automaton steps here instead of a clock."""
    stop = "a" * 999 + "b"
    automaton = StopStrings((stop,))
    steps = 0
    goto = automaton.goto

    class Counting(dict):
        def get(self, *args):
            nonlocal steps
            steps += 1
            return dict.get(self, *args)

    automaton.goto = [Counting(g) for g in goto]
    matcher = StopMatcher(automaton)
    for _ in range(5000):
        out, hit = matcher.push("aaaa")
        assert not hit
    assert len(matcher.held) == 999
    assert steps == 5000 * 4  # one step per character, none for the 999 held
