"""The raw-text parser of text completions: exactly what the model wrote, in any chunking."""

from __future__ import annotations

import pytest

from parsers import ContentDelta
from parsers.text import TextParser

from .helpers import KINDS, TokCache
from .test_vocab import TEXTS


def run(parser: TextParser, ids: list[int], step: int = 1) -> str:
    events = []
    for i in range(0, len(ids), step):
        events += parser.feed(ids[i:i + step])
    events += parser.finish()
    assert all(isinstance(e, ContentDelta) and e.text for e in events)
    return "".join(e.text for e in events)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("text", TEXTS)
def test_text_continues_the_prompt_exactly(kind: str, text: str, toks: TokCache) -> None:
    tok = toks[kind]
    prompt = tok.raw.encode("Once upon", bos=True, eos=False)
    ids = tok.raw.encode("Once upon" + text, bos=True, eos=False)
    if ids[:len(prompt)] != prompt:  # the tokenizer merged across the boundary
        pytest.skip("prompt and text share a token")
    cont = ids[len(prompt):]
    for step in (1, 3, len(cont) or 1):
        assert run(TextParser(tok.vocab), cont, step) == tok.raw.decode(ids)[len("Once upon"):]
    # whitespace is never held back or stripped (the chat parsers' policies do not apply)
    assert run(TextParser(tok.vocab), cont) == text or tok.vocab.is_spm


@pytest.mark.parametrize("kind", KINDS)
def test_control_tokens_skipped_or_named(kind: str, toks: TokCache) -> None:
    tok = toks[kind]
    v = tok.vocab
    tc = v.special_id("[TOOL_CALLS]")
    ids = [*tok.encode("a"), tc, *tok.encode("b c", mid=True), v.eos_id]
    assert run(TextParser(v, continuation=False), ids) == "ab c"
    assert run(TextParser(v, skip_special_tokens=False, continuation=False), ids) == "a[TOOL_CALLS]b c"
    # BOS/EOS never show, and a TOOL_CALLS token drops nothing after it
    assert run(TextParser(v, skip_special_tokens=False, continuation=False),
               [v.bos_id, *ids]) == "a[TOOL_CALLS]b c"


def test_spm_continuation_keeps_the_leading_space(toks: TokCache) -> None:
    tok = toks["v3-spm"]
    hello = tok.encode("Hello")  # "▁Hello"
    assert run(TextParser(tok.vocab), hello) == " Hello"
    assert run(TextParser(tok.vocab, continuation=False), hello) == "Hello"


@pytest.mark.parametrize("kind", ["v3-spm", "v11-tekken"])
def test_hidden_ids_never_show(kind: str, toks: TokCache) -> None:
    tok = toks[kind]
    ids = tok.encode("one two three")
    stop = ids[-1]  # an ordinary token used as a stop token id
    assert run(TextParser(tok.vocab, hidden=frozenset({stop})), ids) == \
        run(TextParser(tok.vocab), ids[:-1])
