"""Test helpers: real tokenizers, a token-sequence notation, split strategies, invariants.

Notation for token sequences: plain text is encoded with the real tokenizer; markers are
single control tokens: ``⟦TC⟧ ⟦ARGS⟧ ⟦CID⟧ ⟦T⟧ ⟦/T⟧ ⟦EOS⟧ ⟦BOS⟧ ⟦INST⟧``; ``⟦B:text⟧`` encodes
``text`` as one token per UTF-8 byte (byte-level / byte-fallback tokens), which splits
multi-byte characters across tokens; ``⟦X:hex⟧`` emits raw byte tokens (invalid UTF-8 allowed).
"""

from __future__ import annotations

import dataclasses
import random
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

from parsers import (
    ContentDelta,
    Event,
    ParseOptions,
    ReasoningDelta,
    ToolArgsDelta,
    ToolCallStart,
    Vocab,
    assemble,
    get_parser,
    parse_all,
)
from server.tinymodel import write_tokenizer

KINDS = ("v3-spm", "v7-spm", "v3-tekken", "v7-tekken", "v11-tekken", "v13-tekken")
MARKERS = ("[TOOL_CALLS]", "[ARGS]", "[CALL_ID]", "[THINK]", "[/THINK]", "</s>", "<s>")
TEXT_MARKERS = ("<think>", "</think>")
ID_RE = re.compile(r"^[A-Za-z0-9]{9}$")
_SPECIAL = {
    "TC": "[TOOL_CALLS]", "ARGS": "[ARGS]", "CID": "[CALL_ID]", "T": "[THINK]",
    "/T": "[/THINK]", "EOS": "</s>", "BOS": "<s>", "INST": "[INST]",
}
_NOTATION = re.compile(r"⟦(TC|ARGS|CID|T|/T|EOS|BOS|INST)⟧|⟦B:(.*?)⟧|⟦X:([0-9a-f]*)⟧", re.S)


@dataclass
class Tok:
    """A loaded tokenizer: the raw mistral-common tokenizer plus our Vocab."""

    kind: str
    raw: Any
    vocab: Vocab
    byte_ids: dict[int, int] = field(default_factory=dict)

    def encode(self, text: str, *, mid: bool = False) -> list[int]:
        """Encode plain text; ``mid``: it continues earlier output (no SentencePiece dummy
        prefix space, as a model continuing a text would not produce one)."""
        ids = list(self.raw.encode(text, bos=False, eos=False))
        if mid and self.vocab.is_spm and ids:
            piece = self.raw.id_to_piece(ids[0])
            if piece.startswith("\u2581"):
                rest = piece[1:]
                rid = self.raw.get_special_token(rest) if rest else None  # piece_to_id
                if not rest:
                    ids = ids[1:]
                elif rid and self.raw.id_to_piece(rid) == rest:
                    ids[0] = rid
                else:
                    ids[:1] = [self.byte_ids[b] for b in rest.replace("\u2581", " ").encode()]
        return ids

    def ids(self, notation: str) -> list[int]:
        """Token ids for a string in the test notation."""
        out: list[int] = []
        pos = 0
        for m in _NOTATION.finditer(notation):
            if m.start() > pos:
                out += self.encode(notation[pos : m.start()], mid=self._any_text(out))
            if m.group(1):
                sid = self.vocab.special_id(_SPECIAL[m.group(1)])
                assert sid is not None, (self.kind, m.group(1))
                out.append(sid)
            else:
                data = m.group(2).encode("utf-8") if m.group(2) is not None else bytes.fromhex(m.group(3))
                out += [self.byte_ids[b] for b in data]
            pos = m.end()
        if pos < len(notation):
            out += self.encode(notation[pos:], mid=self._any_text(out))
        return out

    def _any_text(self, ids: list[int]) -> bool:
        return any(not self.vocab.is_special(i) for i in ids)


class TokCache:
    """Loads each tokenizer kind once per session, into a temporary directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[str, Tok] = {}

    def __getitem__(self, kind: str) -> Tok:
        if kind not in self._cache:
            path = write_tokenizer(kind, self.root / kind)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mt = MistralTokenizer.from_file(str(path))
            raw = mt.instruct_tokenizer.tokenizer
            vocab = Vocab.from_tokenizer(mt)
            self._cache[kind] = Tok(kind, raw, vocab, _byte_ids(raw, vocab))
        return self._cache[kind]


def _byte_ids(raw: Any, vocab: Vocab) -> dict[int, int]:
    found: dict[int, int] = {}
    if vocab.is_spm:
        for i in range(vocab.size):
            m = re.match(r"^<0x([0-9A-F]{2})>$", raw.id_to_piece(i))
            if m:
                found[int(m.group(1), 16)] = i
    else:
        n = raw.num_special_tokens
        for i in range(n, n + 256):
            found[vocab.token_bytes(i)[0]] = i
    assert len(found) == 256
    return found


# ----------------------------------------------------------------------------- split strategies
def chunk_whole(ids: Sequence[int]) -> list[list[int]]:
    return [list(ids)]


def chunk_single(ids: Sequence[int]) -> list[list[int]]:
    return [[i] for i in ids]


def chunk_fixed(size: int) -> Callable[[Sequence[int]], list[list[int]]]:
    def split(ids: Sequence[int]) -> list[list[int]]:
        return [list(ids[i : i + size]) for i in range(0, len(ids), size)]

    return split


def two_way_splits(ids: Sequence[int]) -> Iterator[list[list[int]]]:
    for cut in range(len(ids) + 1):
        yield [list(ids[:cut]), list(ids[cut:])]


def random_splits(ids: Sequence[int], seed: int, runs: int) -> Iterator[list[list[int]]]:
    rng = random.Random(seed)
    for _ in range(runs):
        chunks: list[list[int]] = []
        i = 0
        while i < len(ids):
            step = rng.choice((0, 1, 1, 2, 3, 5, 8))  # 0 = an empty feed
            chunks.append(list(ids[i : i + step]))
            i += step
        yield chunks


def stream(parser: Any, chunks: Sequence[Sequence[int]]) -> list[Event]:
    events: list[Event] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    events += parser.finish()
    return events


def counter_ids() -> Callable[[], str]:
    """A deterministic id factory (so stream and non-stream ids can be compared)."""
    n = [0]

    def make() -> str:
        n[0] += 1
        return f"call{n[0]:05d}"

    return make


def make_parser(tok: Tok, parser: str, options: ParseOptions) -> Any:
    """A parser with a fresh deterministic id factory (unless the options bring one)."""
    if options.id_factory is None:
        options = dataclasses.replace(options, id_factory=counter_ids())
    return get_parser(parser)(tok.vocab, options)


def check_stream(
    events: list[Event],
    expected: Any,
    *,
    allow_markers: bool = False,
    allow_fffd: bool = False,
    text_markers: bool = False,
) -> None:
    """Assert the streaming invariants of mistral-formats.md §5 against a parse_all result."""
    content = "".join(e.text for e in events if isinstance(e, ContentDelta))
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    assert content == (expected.content or "")
    assert reasoning == (expected.reasoning or "")
    started: dict[int, ToolCallStart] = {}
    args: dict[int, list[str]] = {}
    for ev in events:
        if isinstance(ev, (ContentDelta, ReasoningDelta)):
            assert ev.text, "empty text delta"
        elif isinstance(ev, ToolCallStart):
            assert ev.index not in started, f"second ToolCallStart for index {ev.index}"
            assert ev.index == len(started), "indexes must be contiguous and in order"
            assert ID_RE.match(ev.id), ev.id
            assert ev.name and ev.name == ev.name.strip(), repr(ev.name)
            started[ev.index] = ev
            args[ev.index] = []
        elif isinstance(ev, ToolArgsDelta):
            assert ev.index in started, "arguments before the call was announced"
            assert ev.text, "empty arguments delta"
            args[ev.index].append(ev.text)
    ids = [s.id for s in started.values()]
    assert len(set(ids)) == len(ids), f"duplicate ids {ids}"
    got = [(started[i].id, started[i].name, "".join(args[i])) for i in sorted(started)]
    assert got == [(c.id, c.name, c.arguments) for c in expected.tool_calls]
    banned = MARKERS + (TEXT_MARKERS if text_markers else ())
    texts = [content, reasoning] + [n for _, n, _ in got] + [a for _, _, a in got]
    if not allow_markers:
        for text in texts:
            for marker in banned:
                assert marker not in text, f"marker {marker!r} leaked into {text!r}"
    if not allow_fffd:
        for text in texts:
            assert "\ufffd" not in text, f"U+FFFD in {text!r}"


def run_all_strategies(tok: Tok, parser: str, options: ParseOptions, ids: list[int],
                       seed: int, **check: Any) -> Any:
    """parse_all once, then every split strategy must reproduce it exactly."""
    reference = parse_all(make_parser(tok, parser, options), ids)
    splits: list[list[list[int]]] = [chunk_whole(ids), chunk_single(ids)]
    splits += [chunk_fixed(k)(ids) for k in (2, 3, 5, 8)]
    splits += list(two_way_splits(ids))
    splits += list(random_splits(ids, seed, 8))
    for chunks in splits:
        parser_obj = make_parser(tok, parser, options)
        events = stream(parser_obj, chunks)
        check_stream(events, reference, **check)
        assert assemble(events) == reference
    return reference
