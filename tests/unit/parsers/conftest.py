"""Session fixtures: real tokenizer files for every generation, written to a tmp dir."""

from __future__ import annotations

import pytest

from .helpers import TokCache


@pytest.fixture(scope="session")
def toks(tmp_path_factory: pytest.TempPathFactory) -> TokCache:
    return TokCache(tmp_path_factory.mktemp("tokenizers"))
