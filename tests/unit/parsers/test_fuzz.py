"""Fuzz: random token ids (ordinary, JSON fragments, byte tokens, every control token, ids
outside the vocabulary) never make a parser raise, and streaming always equals parse_all."""

from __future__ import annotations

import random

import pytest

from parsers import PARSERS, ParseOptions, parse_all

from .helpers import KINDS, TokCache, check_stream, make_parser, random_splits, stream

FRAGMENTS = [
    "{", "}", "[", "]", '"', ",", ":", "\\", " ", "\n", '"name"', '"arguments"', '"id"',
    '"parameters"', "abc", "get_weather", "123", "-1.5e3", "true", "null", "<think>",
    "</think>", "<th", "ink>", "</", "[TOOL_CALLS]", "世界", "🌧️", "Hello", '{"a": 1}',
    '"Xy7Qp2LmZ"', "'",
]
OPTIONS = [
    ParseOptions(tools=True),
    ParseOptions(tools=True, parallel_tool_calls=False, reasoning=False),
    ParseOptions(tools=False),
]


def alphabet(toks: TokCache, kind: str) -> list[int]:
    tok = toks[kind]
    v = tok.vocab
    ids = [i for name in ("[TOOL_CALLS]", "[ARGS]", "[CALL_ID]", "[THINK]", "[/THINK]", "</s>",
                          "<s>", "[INST]", "<unk>")
           if (i := v.special_id(name)) is not None]
    ids = ids * 3  # specials are frequent
    for frag in FRAGMENTS:
        ids += tok.encode(frag, mid=True)
    ids += list(tok.byte_ids.values())[128:]  # bytes that never form valid UTF-8 alone
    ids += [v.size + 5, -3]
    return ids


@pytest.mark.parametrize("parser", sorted(PARSERS))
@pytest.mark.parametrize("kind", KINDS)
def test_fuzz(kind: str, parser: str, toks: TokCache) -> None:
    tok = toks[kind]
    letters = alphabet(toks, kind)
    rng = random.Random(f"{kind}/{parser}")
    for n in range(40):
        ids = [rng.choice(letters) for _ in range(rng.randint(0, 60))]
        options = OPTIONS[n % len(OPTIONS)]
        ref_parser = make_parser(tok, parser, options)
        reference = parse_all(ref_parser, ids)
        for chunks in [[[i] for i in ids], *random_splits(ids, n, 2)]:
            p = make_parser(tok, parser, options)
            events = stream(p, chunks)
            check_stream(events, reference, allow_markers=True, allow_fffd=True)
            assert p.truncated_call == ref_parser.truncated_call
            assert p.tool_calls_count == len(reference.tool_calls)
        if not options.tools:
            assert reference.tool_calls == []
        if not options.parallel_tool_calls:
            assert len(reference.tool_calls) <= 1
        if not options.reasoning:
            assert reference.reasoning is None
