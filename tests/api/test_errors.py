"""Every bad input gets a clear OpenAI envelope with the right status, param and code."""

from __future__ import annotations

import pytest

from tests.api.harness import MODEL, serve, text_tokens
from tests.conftest import tokenizer_for
from tests.spec import assert_error

OK = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def client(tokenizer_dirs):
    directory = tokenizer_dirs["v3-spm"]
    tok = tokenizer_for(directory)
    with serve(directory, lambda p, s, i: text_tokens(tok, "fine"), max_model_len=512) as (c, _):
        yield c


@pytest.mark.parametrize("patch, param", [
    ({"temperature": -1}, "temperature"),
    ({"temperature": 2.5}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_p": 0}, "top_p"),
    ({"n": 0}, "n"),
    ({"presence_penalty": 9}, "presence_penalty"),
    ({"frequency_penalty": -3}, "frequency_penalty"),
    ({"top_logprobs": 50, "logprobs": True}, "top_logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0]"),
    ({"messages": [{"content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ({"max_tokens": 100000}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_completion_tokens": 510}, "max_completion_tokens"),
    ({"stop": ["a", ""]}, "stop"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"tools": []}, "tools"),
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}],
      "tool_choice": {"type": "function", "function": {"name": "g"}}}, "tool_choice.function.name"),
    ({"tools": [{"type": "function", "function": {"name": "web.search"}}]}, "tools[0].function.name"),
    ({"logit_bias": {"abc": 1}}, "logit_bias"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"guided_json": {"type": "object"}, "structured_outputs": {"regex": "a"}}, "guided_json"),
    ({"guided_whitespace_pattern": " "}, "guided_whitespace_pattern"),
    ({"structured_outputs": {"regex": "a", "whitespace_pattern": " "}}, "structured_outputs"),
    ({"response_format": {"type": "json_schema"}}, "response_format"),
    ({"structured_outputs": {"regex": "(", }}, "structured_outputs.regex"),
    ({"structured_outputs": {"choice": []}}, "structured_outputs.choice"),
    ({"structured_outputs": {"regex": "a", "choice": ["b"]}}, "structured_outputs"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}}},
     "response_format.json_schema.schema"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "nope", "content": "1"}]},
     "messages[1].tool_call_id"),
])
def test_bad_requests_are_400_with_param(client, patch, param):
    r = client.post("/v1/chat/completions", json={**OK, **patch})
    assert_error(r, 400, param=param)


def test_prompt_longer_than_context(client):
    r = client.post("/v1/chat/completions",
                    json={**OK, "messages": [{"role": "user", "content": "word " * 2000}]})
    assert_error(r, 400, param="messages", code="context_length_exceeded")


def test_max_tokens_past_remaining_context(client):
    r = client.post("/v1/chat/completions", json={**OK, "max_tokens": 510})
    assert_error(r, 400, param="max_tokens", code="context_length_exceeded")


def test_unknown_model_is_404(client):
    r = client.post("/v1/chat/completions", json={**OK, "model": "gpt-4"})
    assert_error(r, 404, param="model", code="model_not_found")


def test_malformed_json_and_non_object_bodies(client):
    r = client.post("/v1/chat/completions", content=b"{not json",
                    headers={"content-type": "application/json"})
    assert_error(r, 400, code="invalid_json")
    assert_error(client.post("/v1/chat/completions", json=[1, 2]), 400)
    assert_error(client.post("/v1/chat/completions", json={"model": MODEL}), 400, param="messages")


def test_unknown_route_and_wrong_method(client):
    assert_error(client.get("/v1/nothing-here"), 404)
    assert_error(client.get("/v1/chat/completions"), 405)


def test_huge_body_is_413_and_server_keeps_serving(client):
    blob = "x" * (65 * 1024 * 1024)  # over the 64 MiB default
    r = client.post("/v1/chat/completions",
                    json={**OK, "messages": [{"role": "user", "content": blob}]})
    assert_error(r, 413, code="payload_too_large")
    assert client.post("/v1/chat/completions", json=OK).status_code == 200


def test_unknown_fields_are_ignored(client):
    r = client.post("/v1/chat/completions", json={**OK, "metadata": {"a": 1}, "store": False,
                                                    "user": "u1", "service_tier": "auto"})
    assert r.status_code == 200


def test_error_messages_hold_no_internals(client):
    r = client.post("/v1/chat/completions", json={**OK, "messages": [{"role": "user", "content": 5}]})
    err = assert_error(r, 400, param="messages[0].content")
    assert "Input should be" in err["message"] or "valid" in err["message"]
