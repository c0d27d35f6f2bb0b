"""The API page's requests against the real vLLM engine (tiny random model on CPU)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.api.harness import sse_events
from tests.e2e.conftest import MODEL
from tests.spec import assert_error, assert_valid

pytestmark = pytest.mark.e2e

BASIC = {
    "model": MODEL,
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Give me a one-sentence explanation of what Mistral models are."},
    ],
    "temperature": 0.7, "top_p": 0.9, "max_tokens": 24,
}


def post(server, body, **kw):
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120, **kw)


def test_basic_request(tiny_server):
    r = post(tiny_server, BASIC)
    assert r.status_code == 200, r.text
    body = r.json()
    assert_valid("CreateChatCompletionResponse", body)
    choice = body["choices"][0]
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["prompt_tokens"] > 10
    assert 1 <= usage["completion_tokens"] <= 24
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert r.headers["x-request-id"]


def test_streaming_with_usage(tiny_server):
    body = {**BASIC, "stream": True, "stream_options": {"include_usage": True}}
    r = post(tiny_server, body)
    assert r.status_code == 200
    events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    for c in chunks:
        assert_valid("CreateChatCompletionStreamResponse", c)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    finishes = [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    assert len(finishes) == 1
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] >= 1


def test_multi_parameter_request_with_logprobs(tiny_server):
    body = {**BASIC, "top_k": 40, "min_p": 0.0, "repetition_penalty": 1.05, "presence_penalty": 0.2,
            "frequency_penalty": 0.2, "max_tokens": 16, "seed": 1234, "n": 1, "logprobs": True,
            "top_logprobs": 2, "stream": False}
    r = post(tiny_server, body)
    assert r.status_code == 200, r.text
    data = r.json()
    assert_valid("CreateChatCompletionResponse", data)
    entries = data["choices"][0]["logprobs"]["content"]
    assert len(entries) == data["usage"]["completion_tokens"]
    for e in entries:
        assert len(e["top_logprobs"]) == 2
        assert e["top_logprobs"][0]["logprob"] >= e["top_logprobs"][1]["logprob"]
        assert e["logprob"] <= 0


def test_same_seed_same_output(tiny_server):
    body = {**BASIC, "temperature": 1.0, "seed": 42, "max_tokens": 20}
    a = post(tiny_server, body).json()["choices"][0]["message"]["content"]
    b = post(tiny_server, body).json()["choices"][0]["message"]["content"]
    c = post(tiny_server, {**body, "seed": 43}).json()["choices"][0]["message"]["content"]
    assert a == b
    assert a != c


def test_streamed_text_equals_non_streamed_at_temperature_zero(tiny_server):
    body = {**BASIC, "temperature": 0, "max_tokens": 20}
    plain = post(tiny_server, body).json()
    events = sse_events(post(tiny_server, {**body, "stream": True}))
    text = "".join(ch["delta"].get("content") or "" for c in events[:-1] for ch in c["choices"])
    assert text == plain["choices"][0]["message"]["content"]


def test_n_and_ignore_eos_and_max_tokens(tiny_server):
    r = post(tiny_server, {**BASIC, "n": 2, "max_tokens": 8, "ignore_eos": True})
    data = r.json()
    assert [c["finish_reason"] for c in data["choices"]] == ["length", "length"]
    assert data["usage"]["completion_tokens"] == 16


def test_errors_from_the_real_server(tiny_server):
    assert_error(post(tiny_server, {**BASIC, "temperature": -1}), 400, param="temperature")
    assert_error(post(tiny_server, {**BASIC, "model": "nope"}), 404, code="model_not_found")
    long = {**BASIC, "messages": [{"role": "user", "content": "hello " * 5000}]}
    assert_error(post(tiny_server, long), 400, code="context_length_exceeded")
    big = httpx.post(tiny_server.url + "/v1/chat/completions", timeout=60,
                     content=json.dumps({**BASIC, "pad": "x" * (65 * 1024 * 1024)}),
                     headers={"content-type": "application/json"})
    assert_error(big, 413)
    assert post(tiny_server, BASIC).status_code == 200
