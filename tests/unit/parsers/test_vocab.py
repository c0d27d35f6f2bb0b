"""Vocab tables and detokenization against mistral-common's own decode, for every tokenizer."""

from __future__ import annotations

import pytest

from parsers import Detokenizer, TextDecoder, Vocab

from .helpers import KINDS, TokCache

TEXTS = [
    "Hello world",
    "  two leading spaces",
    " one leading space",
    "\n\nnewlines first\n",
    "tabs\tand\r\nCRLF",
    "世界 中文字符 ありがとう 안녕하세요",
    "emoji 🌧️☔ 😀👍🏽 👨‍👩‍👧 flags 🇫🇷",
    "combining e\u0301 and Ω≈ç√∫",
    '{"city": "Paris", "n": [1, 2.50, -0]}',
    "[TOOL_CALLS] looks like a marker",
    "trailing spaces   ",
    " ",
]

EXPECTED = {
    # kind: (version, is_spm, [TOOL_CALLS], [ARGS], [CALL_ID], [THINK], [/THINK])
    "v3-spm": (3, True, 5, None, None, None, None),
    "v7-spm": (7, True, 5, None, None, None, None),
    "v3-tekken": (3, False, 9, None, None, None, None),
    "v7-tekken": (7, False, 9, None, None, None, None),
    "v11-tekken": (11, False, 9, 32, 33, None, None),
    "v13-tekken": (13, False, 9, 32, 33, 34, 35),
}


def detok(vocab: Vocab, ids: list[int]) -> str:
    d = Detokenizer(vocab)
    return "".join(d.push(i) for i in ids) + d.flush()


@pytest.mark.parametrize("kind", KINDS)
def test_tables(kind: str, toks: TokCache) -> None:
    v = toks[kind].vocab
    version, spm, tc, args, cid, think, end_think = EXPECTED[kind]
    assert (v.version, v.is_spm, v.bos_id, v.eos_id) == (version, spm, 1, 2)
    assert v.special_id("[TOOL_CALLS]") == tc
    assert v.special_id("[ARGS]") == args
    assert v.special_id("[CALL_ID]") == cid
    assert v.special_id("[THINK]") == think
    assert v.special_id("[/THINK]") == end_think
    assert v.special_id("[NOPE]") is None
    for sid in (tc, args, cid, think, end_think, 1, 2):
        if sid is not None:
            assert v.is_special(sid)
            assert v.token_bytes(sid) == b""
    assert v.token_text(tc) == "[TOOL_CALLS]"
    if think is not None:
        assert v.token_text(think) == "[THINK]"
    assert v.token_text(2) == "</s>"
    hello = toks[kind].encode("Hello")[0]
    assert not v.is_special(hello)
    assert v.token_bytes(hello).strip() == b"Hello"
    for bad in (-1, v.size, v.size + 1000):
        assert not v.is_special(bad)
        assert v.token_bytes(bad) == b""


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("text", TEXTS)
def test_detokenize_matches_mistral_common(kind: str, text: str, toks: TokCache) -> None:
    tok = toks[kind]
    ids = tok.encode(text)
    expected = tok.raw.decode(ids)
    assert detok(tok.vocab, ids) == expected
    # control tokens in front do not change SentencePiece's leading-space rule
    tc = tok.vocab.special_id("[TOOL_CALLS]")
    d = Detokenizer(tok.vocab)
    got = "".join(d.push(i) for i in ids if not tok.vocab.is_special(i)) + d.flush()
    assert got == tok.raw.decode([tc, *ids])


@pytest.mark.parametrize("kind", KINDS)
def test_byte_tokens_never_split_characters(kind: str, toks: TokCache) -> None:
    tok = toks[kind]
    ids = tok.ids("⟦B:雨🌧️é⟧")
    assert len(ids) == len("雨🌧️é".encode())
    d = Detokenizer(tok.vocab)
    pieces = [d.push(i) for i in ids]
    assert "".join(pieces) == "雨🌧️é"
    assert all("\ufffd" not in p for p in pieces)
    assert pieces[0] == pieces[1] == ""  # the first character needs 3 bytes
    assert tok.vocab.token_text(ids[0]) == "\ufffd"  # display text of a partial byte


def test_spm_leading_space_rule(toks: TokCache) -> None:
    tok = toks["v3-spm"]
    v = tok.vocab
    hello = tok.encode("Hello")  # "▁Hello"
    assert v.has_leading_space_piece(hello[0])
    assert detok(v, hello + hello) == "Hello Hello"
    byte_space = tok.byte_ids[0x20]
    assert detok(v, [byte_space] + hello) == tok.raw.decode([byte_space] + hello) == "  Hello"
    assert not Vocab.from_tokenizer(tok.raw).has_leading_space_piece(byte_space)


def test_from_raw_tokenizer(toks: TokCache) -> None:
    tok = toks["v3-tekken"]
    v = Vocab.from_tokenizer(tok.raw)
    assert v.special_id("[TOOL_CALLS]") == 9
    assert v.size == tok.vocab.size


def test_text_decoder() -> None:
    d = TextDecoder()
    data = "世🌧".encode()
    assert d.push(data[:2]) == ""
    assert d.push(data[2:4]) == "世"
    assert d.push(b"") == ""
    assert d.push(data[4:]) == "🌧"
    assert d.flush() == ""
    assert d.push(b"ok\xe4\xb8") == "ok"
    assert d.flush() == "\ufffd"
    assert d.push(b"again") == "again"  # usable after a flush
    assert d.push(b"\xff") == "\ufffd"
