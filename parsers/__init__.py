"""Token-id based output parsers for Mistral models (content, reasoning, tool calls).

Pure Python (mistral-common only). Usage::

    vocab = Vocab.from_tokenizer(mistral_tokenizer)            # once per tokenizer
    cls = get_parser(default_parser_name(vocab, None))         # or a name from the config
    parser = cls(vocab, ParseOptions(tools=True))              # one per choice
    events = parser.feed(new_token_ids); ...; events += parser.finish()
    message = parse_all(cls(vocab, options), all_token_ids)    # non-streaming

The parser names in :data:`PARSERS` are public API (configuration values).
"""

from __future__ import annotations

from .base import (
    OutputParser,
    ParsedCall,
    ParsedMessage,
    ParseOptions,
    assemble,
    parse_all,
    random_call_id,
)
from .events import ContentDelta, Event, ReasoningDelta, ToolArgsDelta, ToolCallStart
from .pre_v11 import MistralPreV11Parser
from .text_think import MagistralTextThinkParser
from .v11 import MistralV11Parser, MistralV13Parser
from .vocab import Detokenizer, TextDecoder, Vocab

PARSERS: dict[str, type[OutputParser]] = {
    "mistral_pre_v11": MistralPreV11Parser,
    "mistral_v11": MistralV11Parser,
    "mistral_v13": MistralV13Parser,
    "magistral_text_think": MagistralTextThinkParser,
}


class UnknownParserError(ValueError):
    """Raised by :func:`get_parser` for a name not in :data:`PARSERS`."""


def get_parser(name: str) -> type[OutputParser]:
    """The parser class registered under ``name``."""
    try:
        return PARSERS[name]
    except (KeyError, TypeError):
        valid = ", ".join(sorted(PARSERS))
        raise UnknownParserError(f"unknown parser {name!r}; valid names: {valid}") from None


def default_parser_name(vocab: Vocab, reasoning_format: str | None = None) -> str:
    """Pick the parser for a tokenizer.

    ``[THINK]`` in the vocabulary -> ``mistral_v13``; tokenizer version >= 11 ->
    ``mistral_v11`` (or ``magistral_text_think`` when ``reasoning_format == "text_think"``,
    for Magistral-Small-2506); older -> ``mistral_pre_v11``.
    """
    if vocab.special_id("[THINK]") is not None:
        return "mistral_v13"
    if vocab.version >= 11 or vocab.special_id("[ARGS]") is not None:
        return "magistral_text_think" if reasoning_format == "text_think" else "mistral_v11"
    return "mistral_pre_v11"


__all__ = [
    "PARSERS",
    "UnknownParserError",
    "get_parser",
    "default_parser_name",
    "Vocab",
    "TextDecoder",
    "Detokenizer",
    "OutputParser",
    "ParseOptions",
    "ParsedCall",
    "ParsedMessage",
    "assemble",
    "parse_all",
    "random_call_id",
    "ContentDelta",
    "ReasoningDelta",
    "ToolCallStart",
    "ToolArgsDelta",
    "Event",
    "MistralPreV11Parser",
    "MistralV11Parser",
    "MistralV13Parser",
    "MagistralTextThinkParser",
]
