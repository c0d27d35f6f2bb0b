"""Registry: public parser names, lookup errors, and the tokenizer-based default."""

from __future__ import annotations

import pytest

from parsers import PARSERS, UnknownParserError, default_parser_name, get_parser

from .helpers import TokCache


def test_public_names() -> None:
    assert set(PARSERS) == {"mistral_pre_v11", "mistral_v11", "mistral_v13", "magistral_text_think"}
    for name, cls in PARSERS.items():
        assert cls.name == name
        assert get_parser(name) is cls


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(UnknownParserError) as info:
        get_parser("mistral")
    assert isinstance(info.value, ValueError)
    for name in PARSERS:
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("kind", "fmt", "expected"),
    [
        ("v3-spm", None, "mistral_pre_v11"),
        ("v7-spm", "text_think", "mistral_pre_v11"),
        ("v3-tekken", None, "mistral_pre_v11"),
        ("v7-tekken", None, "mistral_pre_v11"),
        ("v11-tekken", None, "mistral_v11"),
        ("v11-tekken", "text_think", "magistral_text_think"),
        ("v13-tekken", None, "mistral_v13"),
        ("v13-tekken", "text_think", "mistral_v13"),
    ],
)
def test_default_parser_name(kind: str, fmt: str | None, expected: str, toks: TokCache) -> None:
    assert default_parser_name(toks[kind].vocab, fmt) == expected
