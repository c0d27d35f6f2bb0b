"""Contract suite: every corpus case, every tokenizer/parser pair, every split strategy.

For each case, ``parse_all`` must give the expected message, and streaming the same token ids
with any chunking (whole, one token per feed, fixed 2/3/5/8-token chunks, every 2-way split,
seeded random splits with empty feeds) must satisfy the §5 invariants and reproduce it exactly.
"""

from __future__ import annotations

import zlib

import pytest

from parsers import parse_all

from .cases import CASES, Case
from .helpers import ID_RE, TokCache, make_parser, run_all_strategies

PARAMS = [
    pytest.param(case, kind, parser, id=f"{case.id}[{kind}:{parser}]")
    for case in CASES
    for kind, parser in case.parsers
]


def test_case_ids_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 100


@pytest.mark.parametrize(("case", "kind", "parser"), PARAMS)
def test_contract(case: Case, kind: str, parser: str, toks: TokCache) -> None:
    tok = toks[kind]
    ids = tok.ids(case.raw)
    seed = zlib.crc32(f"{case.id}/{kind}/{parser}".encode())
    msg = run_all_strategies(
        tok, parser, case.options, ids, seed,
        allow_markers=case.allow_markers, allow_fffd=case.allow_fffd,
        text_markers=parser == "magistral_text_think",
    )
    assert msg.content == case.content
    assert msg.reasoning == case.reasoning
    assert [(c.name, c.arguments) for c in msg.tool_calls] == list(case.calls)
    for call in msg.tool_calls:
        assert ID_RE.match(call.id)
    if case.call_ids is not None:
        assert len(case.call_ids) == len(msg.tool_calls)
        model_ids = {i for i in case.call_ids if i is not None}
        for want, call in zip(case.call_ids, msg.tool_calls):
            if want is None:
                assert call.id not in model_ids
            else:
                assert call.id == want
    # the truncation flag is part of the contract, in both modes
    full = make_parser(tok, parser, case.options)
    parse_all(full, ids)
    assert full.truncated_call is case.truncated
    assert full.tool_calls_count == len(case.calls)
    single = make_parser(tok, parser, case.options)
    for i in ids:
        single.feed([i])
    single.finish()
    assert single.truncated_call is case.truncated
