"""Focused unit tests: JSON scanner, sinks, ids, event coalescing, latency, linear time."""

from __future__ import annotations

import time

import pytest

from parsers import (
    ContentDelta,
    ParseOptions,
    ReasoningDelta,
    ToolArgsDelta,
    ToolCallStart,
    parse_all,
    random_call_id,
)
from parsers.jsonscan import ValueScanner
from parsers.sinks import ContentSink, ReasoningSink

from .helpers import ID_RE, TokCache, make_parser

TOOLS = ParseOptions(tools=True)


# ----------------------------------------------------------------------------- ValueScanner
@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"a": "}"} tail', '{"a": "}"}'),
        ('[1, [2, {"x": "]\\""}]], 3', '[1, [2, {"x": "]\\""}]]'),
        ('"str \\" } ]" rest', '"str \\" } ]"'),
        ("123, 4", "123"),
        ("-1.5e3}", "-1.5e3"),
        ("true]", "true"),
        ('{"k": "\\\\"}x', '{"k": "\\\\"}'),
    ],
)
def test_scanner_finds_value_end_under_any_chunking(text: str, value: str) -> None:
    for size in range(1, len(text) + 1):
        scan = ValueScanner()
        consumed = 0
        end = -1
        for start in range(0, len(text), size):
            chunk = text[start : start + size]
            end = scan.feed(chunk)
            if end >= 0:
                consumed = start + end
                break
        assert end >= 0 and scan.done
        assert text[:consumed] == value


def test_scanner_eof_and_edge_cases() -> None:
    scan = ValueScanner()
    assert scan.feed('{"a": [1, "x') == -1
    assert not scan.complete_at_eof
    scalar = ValueScanner()
    assert scalar.feed("12") == -1 and scalar.complete_at_eof
    empty = ValueScanner()
    assert empty.feed("}") == 0 and empty.done  # no value: consumes nothing
    done = ValueScanner()
    assert done.feed("{}") == 2
    assert done.feed("more", 1) == 1  # after completion nothing more is consumed


# ----------------------------------------------------------------------------- sinks
def test_content_sink_holds_whitespace() -> None:
    out: list = []
    sink = ContentSink(out)
    sink.push("Hello")
    sink.push(" \n")
    assert out == [ContentDelta("Hello")]
    sink.push("world ")
    assert out[-1] == ContentDelta(" \nworld")
    sink.finish()
    assert out[-1] == ContentDelta(" ")


def test_content_sink_tool_boundary() -> None:
    out: list = []
    sink = ContentSink(out)
    sink.push("\n\n")
    sink.tool_boundary()
    sink.push("\n after")
    sink.push("\n")
    sink.finish()
    assert "".join(e.text for e in out) == "after"


def test_reasoning_sink_blocks() -> None:
    out: list = []
    sink = ReasoningSink(out)
    sink.push("  a ")
    sink.finish()
    sink.begin_block()
    sink.push("\n b\n")
    sink.finish()
    assert "".join(e.text for e in out) == "a\nb"
    off: list = []
    disabled = ReasoningSink(off, enabled=False)
    disabled.push("x")
    assert off == []


# ----------------------------------------------------------------------------- ids
def test_random_call_id() -> None:
    ids = {random_call_id() for _ in range(500)}
    assert len(ids) == 500
    assert all(ID_RE.match(i) for i in ids)


def test_bad_id_factories_are_overridden(toks: TokCache) -> None:
    tok = toks["v11-tekken"]
    ids = tok.ids("⟦TC⟧a⟦ARGS⟧{}⟦TC⟧b⟦ARGS⟧{}⟦TC⟧c⟦ARGS⟧{}")
    for factory in (lambda: "SAMEid123", lambda: "call_x-1", lambda: 12345):
        p = make_parser(tok, "mistral_v11", ParseOptions(tools=True, id_factory=factory))
        calls = parse_all(p, ids).tool_calls
        assert len({c.id for c in calls}) == 3
        assert all(ID_RE.match(c.id) for c in calls)
    p = make_parser(tok, "mistral_v11", ParseOptions(tools=True, id_factory=lambda: "SAMEid123"))
    assert parse_all(p, ids).tool_calls[0].id == "SAMEid123"


def test_default_options_do_not_parse_tools(toks: TokCache) -> None:
    tok = toks["v11-tekken"]
    p = make_parser(tok, "mistral_v11", ParseOptions())
    msg = parse_all(p, tok.ids('Hi⟦TC⟧f⟦ARGS⟧{"a": 1}'))
    assert msg.tool_calls == [] and msg.content == "Hi"


# ----------------------------------------------------------------------------- events & latency
def test_feed_coalesces_and_finish_is_idempotent(toks: TokCache) -> None:
    tok = toks["v13-tekken"]
    p = make_parser(tok, "mistral_v13", TOOLS)
    events = p.feed(tok.ids('⟦T⟧long thinking here⟦/T⟧The answer is⟦TC⟧f⟦ARGS⟧{"a": [1, 2, 3]}'))
    assert [type(e) for e in events] == [ReasoningDelta, ContentDelta, ToolCallStart, ToolArgsDelta]
    assert events[-1] == ToolArgsDelta(0, '{"a": [1, 2, 3]}')
    assert p.finish() == []
    assert p.finish() == []
    assert p.feed(tok.ids("more")) == []


def test_streaming_latency_v11(toks: TokCache) -> None:
    tok = toks["v11-tekken"]
    p = make_parser(tok, "mistral_v11", TOOLS)
    # F13: the control token ends a delta; no marker text, content flushed right away
    assert p.feed(tok.ids("Let me check.⟦TC⟧")) == [ContentDelta("Let me check.")]
    assert p.feed(tok.ids("get_weather")) == []  # the name is complete only at [ARGS]
    start = p.feed(tok.ids("⟦ARGS⟧"))
    assert len(start) == 1 and isinstance(start[0], ToolCallStart)
    assert start[0].name == "get_weather" and start[0].index == 0
    assert p.feed(tok.ids('{"city": "Par')) == [ToolArgsDelta(0, '{"city": "Par')]
    assert p.feed(tok.ids('is"}')) == [ToolArgsDelta(0, 'is"}')]
    assert p.finish() == []


def test_streaming_latency_pre_v11(toks: TokCache) -> None:
    tok = toks["v3-tekken"]
    p = make_parser(tok, "mistral_pre_v11", TOOLS)
    assert p.feed(tok.ids('⟦TC⟧[{"name": "f", "arguments": ')) == []
    events = p.feed(tok.ids('{"q": "ab'))
    assert isinstance(events[0], ToolCallStart) and events[0].name == "f"
    assert events[1:] == [ToolArgsDelta(0, '{"q": "ab')]
    assert p.feed(tok.ids('c"}}]')) == [ToolArgsDelta(0, 'c"}')]


def test_content_whitespace_is_only_held_back(toks: TokCache) -> None:
    tok = toks["v11-tekken"]
    p = make_parser(tok, "mistral_v11", TOOLS)
    assert p.feed(tok.ids("Hello ")) == [ContentDelta("Hello")]
    assert p.feed(tok.ids("world")) == [ContentDelta(" world")]


def test_tools_off_ignores_everything_after_the_marker(toks: TokCache) -> None:
    tok = toks["v13-tekken"]
    p = make_parser(tok, "mistral_v13", ParseOptions(tools=False))
    assert p.feed(tok.ids("A⟦TC⟧f⟦ARGS⟧{}")) == [ContentDelta("A")]
    assert p.feed(tok.ids("⟦T⟧x⟦/T⟧more text")) == []
    assert p.finish() == []


def test_large_arguments_are_linear(toks: TokCache) -> None:
    tok = toks["v11-tekken"]
    body = "".join(f'"k{i}": "value {i} with {{braces}} and \\"quotes\\"", ' for i in range(1200))
    ids = tok.ids("⟦TC⟧f⟦ARGS⟧{" + body + '"end": 1}')
    assert len(ids) > 10000
    p = make_parser(tok, "mistral_v11", TOOLS)
    t0 = time.perf_counter()
    args = []
    for i in ids:
        args += [e.text for e in p.feed([i]) if isinstance(e, ToolArgsDelta)]
    p.finish()
    elapsed = time.perf_counter() - t0
    assert "".join(args) == "{" + body + '"end": 1}'
    assert elapsed < 2.0, elapsed
