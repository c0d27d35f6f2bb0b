"""Shared fixtures: real Mistral tokenizers (offline, from mistral-common's own files)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

from server.tinymodel import write_tokenizer


@pytest.fixture(scope="session")
def tokenizer_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A directory holding only the tokenizer file, per tokenizer kind (built lazily)."""
    root = tmp_path_factory.mktemp("tokenizers")

    class Dirs(dict):
        def __missing__(self, kind: str) -> Path:
            path = root / kind
            write_tokenizer(kind, path)
            self[kind] = path
            return path

    return Dirs()


def tokenizer_for(directory: Path) -> MistralTokenizer:
    files = [*directory.glob("tekken.json"), *directory.glob("tokenizer.model.v*")]
    return MistralTokenizer.from_file(str(files[0]))
