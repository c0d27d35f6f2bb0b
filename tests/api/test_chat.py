"""Chat completions through the real app over the scripted engine: shapes, usage, streaming."""

from __future__ import annotations

import pytest

from tests.api.harness import MODEL, serve, sse_events, text_tokens
from tests.conftest import tokenizer_for
from tests.spec import assert_error, assert_valid

BASIC = {
    "model": MODEL,
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Give me a one-sentence explanation of what Mistral models are."},
    ],
    "temperature": 0.7, "top_p": 0.9, "max_tokens": 256,
}
ANSWER = "Mistral models are open language models. Ünïcödé ✓ 日本語"


@pytest.fixture()
def v3(tokenizer_dirs):
    directory = tokenizer_dirs["v3-spm"]
    tok = tokenizer_for(directory)
    return directory, tok


def _prompt_len(tok, body) -> int:
    from mistral_common.protocol.instruct.request import ChatCompletionRequest as MR

    req = MR.from_openai(messages=body["messages"])
    return len(tok.encode_chat_completion(req).tokens)


def test_basic_chat_matches_api_page_shape(v3):
    directory, tok = v3
    tokens = text_tokens(tok, ANSWER)
    with serve(directory, lambda p, s, i: tokens) as (client, fake):
        r = client.post("/v1/chat/completions", json=BASIC)
    assert r.status_code == 200, r.text
    body = r.json()
    assert_valid("CreateChatCompletionResponse", body)
    assert body["object"] == "chat.completion" and body["model"] == MODEL
    assert body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["message"]["content"] == ANSWER
    assert choice["finish_reason"] == "stop" and choice["logprobs"] is None
    assert "reasoning" not in choice["message"] and "tool_calls" not in choice["message"]
    assert body["usage"] == {"prompt_tokens": _prompt_len(tok, BASIC),
                             "completion_tokens": len(tokens),
                             "total_tokens": _prompt_len(tok, BASIC) + len(tokens)}
    sampling = fake.requests[0][1]
    assert (sampling.temperature, sampling.top_p, sampling.max_tokens) == (0.7, 0.9, 256)


def test_stream_with_usage_frames_and_equals_non_stream(v3):
    directory, tok = v3
    tokens = text_tokens(tok, ANSWER)
    with serve(directory, lambda p, s, i: tokens) as (client, _):
        plain = client.post("/v1/chat/completions", json=BASIC).json()
        r = client.post("/v1/chat/completions",
                        json={**BASIC, "stream": True, "stream_options": {"include_usage": True}})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    for c in chunks:
        assert_valid("CreateChatCompletionStreamResponse", c)
        assert c["id"] == chunks[0]["id"] and c["created"] == chunks[0]["created"]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert sum(1 for c in chunks for ch in c["choices"] if ch["delta"].get("role")) == 1
    finishes = [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    assert finishes == ["stop"]
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == plain["usage"]
    assert all(c["usage"] is None for c in chunks[:-1])
    text = "".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"])
    assert text == plain["choices"][0]["message"]["content"] == ANSWER


def test_stream_without_include_usage_has_no_usage_chunk(v3):
    directory, tok = v3
    with serve(directory, lambda p, s, i: text_tokens(tok, "hi there")) as (client, _):
        r = client.post("/v1/chat/completions", json={**BASIC, "stream": True})
    chunks = sse_events(r)[:-1]
    assert all(c["choices"] for c in chunks)
    assert all("usage" not in c for c in chunks)


def test_n_streams_interleaved_choices_each_with_role_and_finish(v3):
    directory, tok = v3
    answers = ["first answer here", "second, a longer answer here"]
    script = lambda p, s, i: text_tokens(tok, answers[i])  # noqa: E731
    with serve(directory, script) as (client, fake):
        r = client.post("/v1/chat/completions", json={**BASIC, "n": 2, "stream": True})
        plain = client.post("/v1/chat/completions", json={**BASIC, "n": 2}).json()
    chunks = sse_events(r)[:-1]
    first_seen = []
    for c in chunks:
        (ch,) = c["choices"]
        if ch["index"] not in first_seen:
            first_seen.append(ch["index"])
            assert ch["delta"].get("role") == "assistant"
    assert first_seen == [0, 1]
    for i in (0, 1):
        mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == i]
        assert [m["finish_reason"] for m in mine if m["finish_reason"]] == ["stop"]
        assert "".join(m["delta"].get("content") or "" for m in mine) == answers[i]
        assert plain["choices"][i]["message"]["content"] == answers[i]
    assert plain["usage"]["completion_tokens"] == sum(len(text_tokens(tok, a)) for a in answers)


def test_greedy_n_greater_than_one_is_served(v3):
    directory, tok = v3
    with serve(directory, lambda p, s, i: text_tokens(tok, "same")) as (client, fake):
        r = client.post("/v1/chat/completions", json={**BASIC, "n": 3, "temperature": 0})
    body = r.json()
    assert [c["message"]["content"] for c in body["choices"]] == ["same"] * 3
    assert fake.requests[0][1].n == 1


def test_max_tokens_reports_length(v3):
    directory, tok = v3
    with serve(directory, lambda p, s, i: text_tokens(tok, ANSWER)) as (client, _):
        body = client.post("/v1/chat/completions", json={**BASIC, "max_tokens": 3}).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3


@pytest.mark.parametrize("stream", [False, True])
def test_stop_strings_cut_content_and_abort_engine(v3, stream):
    directory, tok = v3
    with serve(directory, lambda p, s, i: text_tokens(tok, "alpha beta gamma delta")) as (client, fake):
        r = client.post("/v1/chat/completions", json={**BASIC, "stop": [" gam", "zzz"], "stream": stream})
    if stream:
        chunks = sse_events(r)[:-1]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]]
    else:
        body = r.json()
        text, finish = body["choices"][0]["message"]["content"], [body["choices"][0]["finish_reason"]]
    assert text == "alpha beta"
    assert finish == ["stop"]
    assert fake.aborted, "the engine request must be aborted once a stop string ends it"


def test_logprobs_shape_from_api_page_request(v3):
    directory, tok = v3
    body = {**BASIC, "top_k": 40, "min_p": 0.0, "repetition_penalty": 1.05, "presence_penalty": 0.2,
            "frequency_penalty": 0.2, "max_tokens": 512, "seed": 1234, "n": 1, "logprobs": True,
            "top_logprobs": 2, "stream": False}
    tokens = text_tokens(tok, "1. HexGrid")
    with serve(directory, lambda p, s, i: tokens) as (client, fake):
        r = client.post("/v1/chat/completions", json=body)
    data = r.json()
    assert_valid("CreateChatCompletionResponse", data)
    content = data["choices"][0]["logprobs"]["content"]
    assert len(content) == len(tokens)
    for entry in content:
        assert len(entry["top_logprobs"]) == 2
        assert bytes(entry["bytes"]).decode("utf-8", "replace") == entry["token"] or entry["token"].startswith("<")
    spec = fake.requests[0][1]
    assert (spec.top_k, spec.min_p, spec.repetition_penalty, spec.presence_penalty,
            spec.frequency_penalty, spec.seed, spec.logprobs) == (40, 0.0, 1.05, 0.2, 0.2, 1234, 2)


def test_vllm_xargs_reach_the_engine(v3):
    directory, tok = v3
    with serve(directory, lambda p, s, i: text_tokens(tok, "ok")) as (client, fake):
        r = client.post("/v1/chat/completions", json={**BASIC, "vllm_xargs": {"script": [1, 2]},
                                                        "ignore_eos": False, "min_tokens": 1})
    assert r.status_code == 200
    assert fake.requests[0][1].extra_args == {"script": [1, 2]}
    assert fake.requests[0][1].min_tokens == 1


def test_tool_result_continuation_from_api_page(v3):
    directory, tok = v3
    body = {"model": MODEL, "max_tokens": 1024, "messages": [
        {"role": "user", "content": "What is the weather in Paris today?"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call_abc123", "type": "function",
         "function": {"name": "get_current_weather", "arguments": "{\"location\":\"Paris\",\"unit\":\"celsius\"}"}}]},
        {"role": "tool", "tool_call_id": "call_abc123",
         "content": "{\"location\":\"Paris\",\"temperature\":18,\"condition\":\"Partly cloudy\",\"unit\":\"celsius\"}"},
    ]}
    with serve(directory, lambda p, s, i: text_tokens(tok, "It is 18°C.")) as (client, _):
        r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "It is 18°C."


def test_mid_stream_engine_failure_is_an_error_event_then_done(v3):
    directory, tok = v3
    from server.engine.fake import FakeEngine

    fake = FakeEngine(lambda p, s, i: text_tokens(tok, ANSWER), fail_after=3)
    with serve(directory, None, engine=fake) as (client, _):
        r = client.post("/v1/chat/completions", json={**BASIC, "stream": True})
        assert r.status_code == 200
        events = sse_events(r)
        assert events[-1] == "[DONE]"
        err = events[-2]
        assert_valid("ErrorResponse", err)
        after = client.post("/v1/chat/completions", json=BASIC)
        ready = client.get("/ready")
    # A dead engine fails readiness and refuses work (the real process also exits to restart).
    assert after.status_code == 503 and ready.status_code == 503
    assert_valid("ErrorResponse", after.json())


def test_thinking_token_budget_reaches_the_engine(tokenizer_dirs):
    directory = tokenizer_dirs["v13-tekken"]  # [THINK] and [/THINK] are control tokens
    tok = tokenizer_for(directory)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 64}
    with serve(directory, lambda p, s, i: text_tokens(tok, "Hello.")) as (client, fake):
        bounded = client.post("/v1/chat/completions", json={**body, "thinking_token_budget": 10})
        budget = fake.requests[-1][1].thinking_token_budget
        client.post("/v1/chat/completions", json=body)
        unbounded = fake.requests[-1][1].thinking_token_budget
        negative = client.post("/v1/chat/completions", json={**body, "thinking_token_budget": -1})
    assert bounded.status_code == 200 and budget == 10 and unbounded is None
    assert_error(negative, 400, param="thinking_token_budget")


def test_thinking_token_budget_needs_think_tokens(v3):
    directory, tok = v3
    with serve(directory, lambda p, s, i: text_tokens(tok, "Hello.")) as (client, fake):
        r = client.post("/v1/chat/completions", json={**BASIC, "thinking_token_budget": 10})
    assert_error(r, 400, param="thinking_token_budget", code="invalid_value")
    assert fake.requests == []
