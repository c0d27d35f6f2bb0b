"""The served model: where its weights and tokenizer are, how it is parsed and rendered.

Everything here is decided once at startup from Settings, before the engine loads, so a bad
tokenizer path or parser name fails fast with one clear message.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from mistral_common.protocol.fim.request import FIMRequest
from mistral_common.tokens.tokenizers.image import ImageConfig
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

from parsers import default_parser_name, get_parser
from parsers.base import OutputParser
from parsers.vocab import Vocab
from server.chat import schemas
from server.settings import Settings, SettingsError
from server.tinymodel import FORMAT as TINY_FORMAT
from server.tinymodel import TOKENIZERS, build_tiny_model

log = logging.getLogger(__name__)


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
    image_config: ImageConfig | None = None  # set when the model takes images (see ``vision``)
    image_limit: int = 0  # images per request

    @property
    def structured_backend(self) -> str:
        """vLLM's structured-output backend for this model: llguidance for Tekken tokenizers
        (Lark grammars with Mistral's special tokens), xgrammar for SentencePiece ones, which
        vLLM's guidance backend does not support."""
        return "xgrammar" if self.vocab.is_spm else "guidance"

    @property
    def think_token_ids(self) -> tuple[int, int] | None:
        """The ``[THINK]`` and ``[/THINK]`` control token ids (v13+ tokenizers), else None: the
        engine can bound thinking (``thinking_token_budget``) only with them."""
        think, end = self.vocab.special_id("[THINK]"), self.vocab.special_id("[/THINK]")
        return None if think is None or end is None else (think, end)

    @property
    def vision(self) -> bool:
        return self.image_config is not None

    def accepts(self, name: str | None) -> bool:
        return name is None or name == self.id or name in self.aliases

    @property
    def fim(self) -> bool:
        """Fill-in-the-middle (``suffix`` in text completions): as the preset says, else
        whether the tokenizer has mistral-common's FIM encoding."""
        if "fim" in self.capabilities:
            return self.capabilities["fim"] and tokenizer_has_fim(self.tokenizer)
        return tokenizer_has_fim(self.tokenizer)

    @property
    def reasoning(self) -> bool:
        """A reasoning model: as its preset says, else when its parser splits reasoning out."""
        if "reasoning" in self.capabilities:
            return self.capabilities["reasoning"]
        return self.parser_name in REASONING_PARSERS


REASONING_PARSERS = ("mistral_v13", "magistral_text_think")


@lru_cache(maxsize=8)
def tokenizer_has_fim(tokenizer: MistralTokenizer) -> bool:
    """mistral-common encodes FIM requests ([SUFFIX]…[PREFIX]…) for this tokenizer (v2 and
    later; v1 refuses)."""
    try:
        tokenizer.encode_fim(FIMRequest(prompt="a", suffix="b"))
    except Exception:  # noqa: BLE001 - any refusal means no FIM
        return False
    return True


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


def checkpoint_has_vision(model_dir: Path) -> bool:
    """A Mistral-format checkpoint with a vision encoder (``params.json``), as vLLM serves with
    ``PixtralForConditionalGeneration``. HF-format vision checkpoints (``config.json``,
    ``Mistral3ForConditionalGeneration``) are not: vLLM re-expands the image grids that
    mistral-common has already rendered into the prompt."""
    try:
        params = json.loads((model_dir / "params.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(params, dict):
        return False
    multimodal = params.get("multimodal") if isinstance(params.get("multimodal"), dict) else {}
    return bool(params.get("vision_encoder") or multimodal.get("vision_encoder_args"))


def vision_setup(settings: Settings, model_dir: Path, tokenizer: MistralTokenizer
                 ) -> tuple[ImageConfig | None, int]:
    """(image config, images per request) when the model takes images, else (None, 0).

    Images need all of: a tokenizer with an ``image`` section, a Mistral-format checkpoint with
    a vision encoder, the encoder loaded (not ``language_model_only``) and the preset not
    switching vision off."""
    encoder = getattr(tokenizer.instruct_tokenizer, "image_encoder", None)
    wanted = settings.capabilities.get("vision", True)
    if (encoder is None or not wanted or settings.engine_args.get("language_model_only")
            or not checkpoint_has_vision(model_dir)):
        if settings.capabilities.get("vision") and encoder is None:
            log.warning("the preset says vision, but the tokenizer has no image section: "
                        "images are refused")
        elif settings.capabilities.get("vision"):
            log.warning("the preset says vision, but %s has no Mistral-format vision encoder "
                        "(params.json): images are refused", model_dir)
        return None, 0
    if (model_dir / "config.json").is_file() and settings.engine_args.get("config_format") != "mistral":
        # vLLM would load the HF config (Mistral3ForConditionalGeneration), which expands every
        # [IMG] of the rendered prompt again
        log.warning("%s has a vision encoder but would load as an HF checkpoint: images are "
                    "refused; set engine_args config_format and load_format to 'mistral' (as the "
                    "presets do) to serve them", model_dir)
        return None, 0
    limits = settings.engine_args.get("limit_mm_per_prompt") or {}
    limit = limits.get("image", settings.image_limit) if isinstance(limits, dict) else settings.image_limit
    return encoder.image_config, int(limit)


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
        vision = "-vision" if settings.tiny_vision else ""
        try:
            model_dir = build_tiny_model(
                settings.cache_dir / f"tiny-{settings.tiny_tokenizer}{vision}-f{TINY_FORMAT}",
                settings.tiny_tokenizer, vision=settings.tiny_vision)
        except ValueError as exc:
            raise SettingsError(f"tiny_vision: {exc}") from None
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
    image_config, image_limit = vision_setup(settings, model_dir, tokenizer)
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
        image_config=image_config,
        image_limit=image_limit,
    )
