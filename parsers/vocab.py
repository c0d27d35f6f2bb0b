"""Token-id level view of a Mistral tokenizer, and incremental detokenization.

The output parsers never look at text produced by the engine: they receive token ids and turn
ordinary tokens into text themselves. :class:`Vocab` is built once per tokenizer and holds
per-id lookup tables (list indexed by id) so that each token costs O(1):

* ``token_bytes(id)``: the raw bytes of an ordinary token (SentencePiece ``▁`` -> space,
  byte-fallback pieces ``<0xNN>`` -> that byte, Tekken byte pieces as-is); ``b""`` for special
  (control) tokens, ``<unk>`` and ids outside the vocabulary;
* ``is_special(id)`` / ``special_id(name)``: control tokens are recognised by id only.

:class:`Detokenizer` turns a stream of ordinary token ids into text with an incremental UTF-8
decoder (:class:`TextDecoder`) and reproduces SentencePiece's rule of dropping the single
leading space of the first piece, so that per-token decoding equals ``tokenizer.decode(ids)``.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from typing import Any

from mistral_common.tokens.tokenizers.base import SpecialTokens

_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_SPM_SPACE = "\u2581"


@dataclass(eq=False)
class Vocab:
    """Per-id lookup tables for one tokenizer (build with :meth:`from_tokenizer`)."""

    version: int
    is_spm: bool
    bos_id: int
    eos_id: int
    _bytes: list[bytes] = field(repr=False)
    _special: list[bool] = field(repr=False)
    _names: dict[int, str] = field(repr=False)
    _ids: dict[str, int] = field(repr=False)
    # SentencePiece: ids of normal pieces that start with "▁" (their leading space is dropped
    # when they are the first piece of the output, as SentencePiece's decode does).
    _lead_space: frozenset[int] = field(default=frozenset(), repr=False)

    @classmethod
    def from_tokenizer(cls, mistral_tokenizer: Any) -> "Vocab":
        """Build the tables from a ``MistralTokenizer`` (or its raw ``Tokenizer``)."""
        tok = mistral_tokenizer
        if hasattr(tok, "instruct_tokenizer"):
            tok = tok.instruct_tokenizer.tokenizer
        version = int(str(tok.version.value).lstrip("v"))
        if hasattr(tok, "id_to_byte_piece"):
            return cls._from_tekken(tok, version)
        return cls._from_spm(tok, version)

    @classmethod
    def _from_tekken(cls, tok: Any, version: int) -> "Vocab":
        n = int(tok.n_words)
        n_special = int(tok.num_special_tokens)
        special = [i < n_special for i in range(n)]
        data: list[bytes] = [b""] * n_special
        data.extend(tok.id_to_byte_piece(i) for i in range(n_special, n))
        names, ids = _special_names(tok, range(min(n_special, n)), spm=False)
        return cls(version, False, int(tok.bos_id), int(tok.eos_id), data, special, names, ids)

    @classmethod
    def _from_spm(cls, tok: Any, version: int) -> "Vocab":
        n = int(tok.n_words)
        unk = int(tok.unk_id)
        data: list[bytes] = []
        special: list[bool] = []
        lead: set[int] = set()
        for i in range(n):
            if i == unk or tok.is_special(i):
                data.append(b"")
                special.append(True)
                continue
            piece = tok.id_to_piece(i)
            match = _BYTE_PIECE.match(piece)
            if match:
                data.append(bytes([int(match.group(1), 16)]))
            else:
                if piece.startswith(_SPM_SPACE):
                    lead.add(i)
                data.append(piece.replace(_SPM_SPACE, " ").encode("utf-8"))
            special.append(False)
        names, ids = _special_names(tok, [i for i in range(n) if special[i]], spm=True)
        return cls(
            version, True, int(tok.bos_id), int(tok.eos_id), data, special, names, ids,
            frozenset(lead),
        )

    @property
    def size(self) -> int:
        """Number of token ids covered by the tables."""
        return len(self._bytes)

    def special_id(self, name: str) -> int | None:
        """Id of the control token ``name`` (e.g. ``"[TOOL_CALLS]"``), or None if absent."""
        return self._ids.get(name)

    def is_special(self, token_id: int) -> bool:
        """True for control tokens (and ``<unk>``); False for ordinary and unknown ids."""
        return 0 <= token_id < len(self._special) and self._special[token_id]

    def token_bytes(self, token_id: int) -> bytes:
        """Raw bytes of an ordinary token; ``b""`` for special tokens and out-of-range ids."""
        if 0 <= token_id < len(self._bytes):
            return self._bytes[token_id]
        return b""

    def token_text(self, token_id: int) -> str:
        """Display text of one token (logprobs): special tokens render as their name."""
        if self.is_special(token_id):
            return self._names.get(token_id, f"<SPECIAL_{token_id}>")
        return self.token_bytes(token_id).decode("utf-8", errors="replace")

    def has_leading_space_piece(self, token_id: int) -> bool:
        """SentencePiece only: the token is a normal piece starting with ``▁``."""
        return token_id in self._lead_space


def _special_names(
    tok: Any, special_ids: Any, *, spm: bool
) -> tuple[dict[int, str], dict[str, int]]:
    """Map special ids <-> names, looking the known names up by string (never by position)."""
    names: dict[int, str] = {}
    ids: dict[str, int] = {}
    for member in SpecialTokens:
        name = member.value
        try:
            tid = int(tok.get_special_token(name))  # Tekken raises for unknown names
            if spm and (tid == int(tok.unk_id) or tok.id_to_piece(tid) != name) and name != "<unk>":
                continue  # SentencePiece maps unknown names to <unk>
        except Exception:
            continue
        ids.setdefault(name, tid)
        names.setdefault(tid, name)
    for tid in special_ids:
        if tid not in names:
            names[tid] = str(tok.id_to_piece(tid)) if spm else f"<SPECIAL_{tid}>"
    return names, ids


class TextDecoder:
    """Incremental UTF-8 decoder: holds back an incomplete multi-byte tail between pushes."""

    __slots__ = ("_dec",)

    def __init__(self) -> None:
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, data: bytes) -> str:
        """Decode ``data``; an incomplete trailing sequence is kept for the next push."""
        return self._dec.decode(data, False) if data else ""

    def flush(self) -> str:
        """Return whatever is held back; an incomplete sequence becomes U+FFFD."""
        return self._dec.decode(b"", True)


class Detokenizer:
    """Ordinary token ids -> text, equal to ``tokenizer.decode`` of the same ids.

    SentencePiece drops the ``▁`` of the *first* normal piece of the output (byte-fallback and
    control pieces do not count). Tekken needs no such rule. ``continuation=True``: the ids
    continue a text (a raw completion of a prompt), so no leading space is dropped.
    """

    __slots__ = ("_vocab", "_dec", "_first")

    def __init__(self, vocab: Vocab, *, continuation: bool = False) -> None:
        self._vocab = vocab
        self._dec = TextDecoder()
        self._first = vocab.is_spm and not continuation

    def push(self, token_id: int) -> str:
        """Text completed by this (ordinary) token; may be empty while a character is split."""
        data = self._vocab.token_bytes(token_id)
        if self._first and data:
            self._first = False
            if self._vocab.has_leading_space_piece(token_id):
                data = data[1:]
        return self._dec.push(data)

    def flush(self) -> str:
        """Text held back by the UTF-8 decoder (incomplete tail -> U+FFFD)."""
        return self._dec.flush()
