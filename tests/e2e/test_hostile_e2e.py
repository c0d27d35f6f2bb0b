"""Hostile input on the real engine (issue #17): what the hostile tier (tests/hostile/) shows
over the fake engine, through the real server process, vLLM and the response store."""

from __future__ import annotations

import threading

import httpx
import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.test_tools_e2e import script, tokenizers  # noqa: F401 - fixture
from tests.hostile.test_budgets import nested
from tests.spec import assert_error

pytestmark = pytest.mark.e2e
USER = [{"role": "user", "content": "hi"}]


def post(server, path: str, body: dict, timeout: float = 120) -> httpx.Response:
    return httpx.post(server.url + path, json={"model": MODEL, **body}, timeout=timeout)


def resident_bytes(server) -> float:
    text = httpx.get(server.url + "/metrics", timeout=30).text
    line = next(l for l in text.splitlines() if l.startswith("process_resident_memory_bytes "))
    return float(line.split()[1])


@pytest.mark.parametrize("stream", [False, True])
def test_deep_items_are_refused_before_generation_and_nothing_is_stored(tiny_server, stream):
    """Before: generation ran, then storing the item failed in orjson — a 500 after the answer,
    or a stream that ended without response.completed."""
    for body in ({"input": [{"type": "message", "role": "user", "content": "hi", "x": nested(300)}]},
                 {"input": "hi", "tools": [{"type": "function", "name": "f",
                                            "parameters": {"type": "object", "x-a": nested(300)}}]}):
        r = post(tiny_server, "/v1/responses", {**body, "stream": stream, "max_output_tokens": 4})
        assert_error(r, 400, code="json_too_deep")
    deep = '{"type": "object", "x-a": ' + '{"x-a": ' * 1000 + "{}" + "}" * 1000 + "}"
    r = post(tiny_server, "/v1/chat/completions", {"messages": USER, "structured_outputs": {
        "json": deep}})
    assert_error(r, 400, param="structured_outputs.json", code="json_too_deep")
    ok = post(tiny_server, "/v1/responses", {"input": "still serving?", "max_output_tokens": 4})
    assert ok.status_code == 200, ok.text


def test_fifty_distinct_refused_multi_megabyte_schemas_leave_no_memory_behind(tiny_server):
    """Before: 13 MB of distinct refused schemas left ~116 MB resident in the API process."""
    def schema(i: int, size: int, extra: dict) -> dict:
        return {"type": "object", "title": f"s{i}", **extra, "properties": {
            f"p{k}": {"type": "string", "description": f"{i}:{k}:" + "d" * 1000}
            for k in range(size // 1024)}}

    def refuse(i: int, size: int, extra: dict, code: str) -> None:
        r = post(tiny_server, "/v1/chat/completions", {"messages": USER, "response_format": {
            "type": "json_schema", "json_schema": {"name": "n", "schema": schema(i, size, extra)}}})
        assert_error(r, 400, param="response_format.json_schema.schema", code=code)

    refuse(-1, 3 << 20, {}, "schema_too_large")
    refuse(-1, 200 << 10, {"not": {}}, "unsupported_schema_keyword")
    before = resident_bytes(tiny_server)
    for i in range(50):
        refuse(i, 3 << 20, {}, "schema_too_large")  # over max_schema_bytes: refused at parse time
        refuse(i, 200 << 10, {"not": {}}, "unsupported_schema_keyword")  # valid, unenforceable
    grown = resident_bytes(tiny_server) - before
    assert grown < 100 * 2**20, f"the API process grew by {grown / 2**20:.0f} MB"


def test_a_long_stop_string_over_a_long_forced_output(tiny_server, tokenizers):
    """A stop string at the length budget over a long output that keeps almost matching it:
    answered correctly while /health keeps answering (the matcher costs one step per
    character; before, each token re-scanned the held text)."""
    tok = tokenizers("v3-spm")
    ids = script(tok, "a" * 1200)
    health: list[int] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            health.append(httpx.get(tiny_server.url + "/health", timeout=30).status_code)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        r = post(tiny_server, "/v1/chat/completions", {
            "messages": USER, "max_tokens": len(ids) + 1, "stop": ["a" * 999 + "b", "zz"],
            "vllm_xargs": {"script": ids}})
    finally:
        done.set()
        prober.join()
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"].strip("▁ ") == "a" * 1200
    assert health and set(health) == {200}
    hit = post(tiny_server, "/v1/chat/completions", {
        "messages": USER, "max_tokens": len(ids) + 1, "stop": ["a" * 999],
        "vllm_xargs": {"script": ids}})
    assert hit.json()["choices"][0]["message"]["content"].strip("▁ ") == ""


@pytest.mark.parametrize("body, param", [
    ({"min_tokens": 10**9}, "min_tokens"),
    ({"logit_bias": {"99999999999999999999": 1}}, "logit_bias"),
    ({"stop_token_ids": [10**9]}, "stop_token_ids"),
    ({"stop": ["x" * 1001]}, "stop[0]"),
    ({"tools": [{"type": "function", "function": {"name": f"t{i}"}} for i in range(129)]}, "tools"),
])
def test_odd_sampling_inputs_are_400s_on_the_real_engine(tiny_server, body, param):
    assert_error(post(tiny_server, "/v1/chat/completions", {"messages": USER, **body}), 400,
                 param=param)
    assert post(tiny_server, "/v1/chat/completions", {"messages": USER, "max_tokens": 2}).status_code == 200
