"""``JsonPrefix`` against jiter's partial parsing (what the anthropic SDK runs on streamed tool
input): every prefix of a JSON object is accepted, and whatever it accepts, jiter parses."""

from __future__ import annotations

import json
import random

import pytest
from pydantic_core import from_json

from server.anthropic.jsonprefix import JsonPrefix

OBJECTS = [
    {}, {"a": 1}, {"city": "Paris", "unit": "celsius"},
    {"n": -0.5e-3, "m": 0, "big": 12345678901234567890, "e": 1E+2, "f": 2.25},
    {"t": True, "f": False, "z": None, "list": [], "nested": {"x": [1, [2, {}], {"y": "z"}]}},
    {"text": 'line one\nline "two"\t\\ end \u00e9 \U0001F600 \u0001', "empty": ""},
    {"content": "def f(x):\n    return {'a': [x, x]}\n" * 20},
]


def texts(value: object) -> list[str]:
    compact = json.dumps(value, separators=(",", ":"))
    return [json.dumps(value), compact, json.dumps(value, indent=2), json.dumps(value, ensure_ascii=False),
            " \n" + compact, compact.replace("1E+2", "1E+2")]


def feed(text: str, cuts: list[int]) -> tuple[JsonPrefix, list[bool]]:
    checker, results, last = JsonPrefix(), [], 0
    for cut in [*cuts, len(text)]:
        results.append(checker.feed(text[last:cut]))
        last = cut
    return checker, results


@pytest.mark.parametrize("value", OBJECTS)
def test_every_prefix_of_an_object_is_accepted_and_parses(value):
    rng = random.Random(7)
    for text in texts(value):
        for end in range(len(text) + 1):
            prefix = text[:end]
            cuts = sorted(rng.sample(range(len(prefix) + 1), min(3, len(prefix) + 1)))
            checker, results = feed(prefix, cuts)
            assert all(results), (prefix, cuts)
            if prefix.strip():
                assert isinstance(from_json(prefix, allow_partial=True), dict), prefix
        assert JsonPrefix().feed(text)


@pytest.mark.parametrize("bad", [
    "[1, 2]", '"a"', "1", "x", '{"a" 1}', '{"a": 1,}', '{"a": 1 "b": 2}', '{,}', '{"a": tru e}',
    '{"a": 01}', '{"a": 1.e5}', '{"a": -}', '{"a": "\\x"}', '{"a": "\\u12g4"}', '{"a": "line\nbreak"}',
    '{"a": [1,]}', '{"a": [,1]}', '{"a": 1}}', '{"a": 1} x', '{"a": nul}', "{'a': 1}", '{"a": +1}',
    '{"a": 1]', '{"a": [1}', '{"a":: 1}',
])
def test_text_that_cannot_begin_an_object_is_refused(bad):
    checker = JsonPrefix()
    assert not all(checker.feed(ch) for ch in bad)  # one character at a time
    assert not JsonPrefix().feed(bad)


def test_whatever_it_accepts_jiter_parses():
    rng = random.Random(11)
    alphabet = '{}[]:,"\\ tfnrue0123456789.-+Eax\n'
    accepted = 0
    for _ in range(4000):
        text = "{" + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
        if JsonPrefix().feed(text):
            accepted += 1
            from_json(text, allow_partial=True)  # raises if a client's parser would
    assert accepted > 100
