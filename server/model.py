"""The served model: where its weights and tokenizer are, how it is parsed and rendered.

Everything here is decided once at startup from Settings, before the engine loads, so a bad
tokenizer path or parser name fails fast with one clear message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

from parsers import default_parser_name, get_parser
from parsers.base import OutputParser
from parsers.vocab import Vocab
from server.chat import schemas
from server.settings import Settings, SettingsError
from server.tinymodel import FORMAT as TINY_FORMAT
from server.tinymodel import TOKENIZERS, build_tiny_model


@dataclass(frozen=True)
class ModelInfo:
    id: str
    aliases: tuple[str, ...]
    model_dir: Path
    tokenizer: MistralTokenizer
    vocab: Vocab
    parser_name: str
    parser_cls: type[OutputParser]
    defaults: dict[str, Any] = field(default_factory=dict)
    capabilities: dict[str, bool] = field(default_factory=dict)
    embedded: bool = False
    reasoning_system_prompt: str | None = None
    max_context_length: int | None = None  # the setting, else the checkpoint's own (None: unknown)

    def accepts(self, name: str | None) -> bool:
        return name is None or name == self.id or name in self.aliases

    @property
    def reasoning(self) -> bool:
        """A reasoning model: as its preset says, else when its parser splits reasoning out."""
        if "reasoning" in self.capabilities:
            return self.capabilities["reasoning"]
        return self.parser_name in REASONING_PARSERS


REASONING_PARSERS = ("mistral_v13", "magistral_text_think")


def checkpoint_context_length(model_dir: Path) -> int | None:
    """The context length the checkpoint declares (params.json or config.json), if any."""
    for name, key in (("params.json", "max_seq_len"), ("config.json", "max_position_embeddings")):
        try:
            value = json.loads((model_dir / name).read_text()).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, int) and value > 0:
            return value
    return None


def find_tokenizer_file(model_dir: Path) -> Path:
    candidates = [model_dir / "tekken.json", *sorted(model_dir.glob("tokenizer.model.v*"))]
    candidates += [model_dir / "tokenizer.model"]
    for path in candidates:
        if path.is_file():
            return path
    raise SettingsError(
        f"model: no Mistral tokenizer file (tekken.json or tokenizer.model.v*) in {model_dir}; "
        "set 'tokenizer' to its path")


@lru_cache(maxsize=8)
def load_tokenizer(path: Path) -> tuple[MistralTokenizer, Vocab]:
    """The tokenizer and its id tables (built once per file; both are read-only)."""
    try:
        tokenizer = MistralTokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - any loader failure is a configuration mistake
        raise SettingsError(f"tokenizer: cannot load {path}: {exc}") from None
    schemas.remember_tool_checks(tokenizer)
    return tokenizer, Vocab.from_tokenizer(tokenizer)


def load_model_info(settings: Settings) -> ModelInfo:
    embedded = settings.model is None
    if embedded:
        if settings.tiny_tokenizer not in TOKENIZERS:
            raise SettingsError(f"tiny_tokenizer: unknown kind {settings.tiny_tokenizer!r}; "
                                f"known: {', '.join(TOKENIZERS)}")
        model_dir = build_tiny_model(
            settings.cache_dir / f"tiny-{settings.tiny_tokenizer}-f{TINY_FORMAT}", settings.tiny_tokenizer)
    else:
        model_dir = Path(settings.model).expanduser()
        if not model_dir.is_dir():
            raise SettingsError(f"model: {model_dir} is not a directory (weights are not "
                                "downloaded by this server; mount or copy them first)")
    tokenizer_path = Path(settings.tokenizer) if settings.tokenizer else find_tokenizer_file(model_dir)
    tokenizer, vocab = load_tokenizer(tokenizer_path.resolve())
    reasoning = None if settings.reasoning == "auto" else settings.reasoning
    parser_name = settings.tool_parser or default_parser_name(vocab, reasoning)
    try:
        parser_cls = get_parser(parser_name)
    except ValueError as exc:
        raise SettingsError(f"tool_parser: {exc}") from None
    return ModelInfo(
        id=settings.model_id,
        aliases=tuple(settings.aliases),
        model_dir=model_dir,
        tokenizer=tokenizer,
        vocab=vocab,
        parser_name=parser_name,
        parser_cls=parser_cls,
        defaults=dict(settings.default_sampling),
        capabilities=dict(settings.capabilities),
        embedded=embedded,
        reasoning_system_prompt=settings.reasoning_system_prompt,
        max_context_length=settings.max_model_len or checkpoint_context_length(model_dir),
    )
