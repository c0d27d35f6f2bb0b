"""Shared fixtures: real Mistral tokenizers (offline, from mistral-common's own files), and a
real PostgreSQL server (tests/pg.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

from server.tinymodel import write_tokenizer
from tests.pg import PostgresServer, find_bin, running_postgres


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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session. Where its binaries are missing, CI (CI set)
    installs Debian's postgresql package; anywhere else the tests that need it are skipped."""
    bin_dir = find_bin(install=bool(os.environ.get("CI")))
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries not found: apt-get install postgresql "
                    "(CI=1 installs them automatically)")
    with running_postgres(bin_dir) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """URL of the session's PostgreSQL server (superuser, no password); tests.pg.new_database
    gives a test an empty database of its own on it."""
    return postgres_server.url
