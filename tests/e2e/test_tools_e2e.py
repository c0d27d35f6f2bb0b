"""Tool calls and reasoning through the real engine.

Forced calls (required / named) come from the random model itself under our grammar, for
several seeds; everything else is a deterministic token script (tests/e2e/scripted.py) that
the real engine emits, so parsing is exercised through the whole HTTP stack.
"""

from __future__ import annotations

import json

import httpx
import pytest
from jsonschema import validate
from openai import OpenAI

from server.tinymodel import write_tokenizer
from tests.api.harness import sse_events
from tests.conftest import tokenizer_for
from tests.spec import assert_valid

pytestmark = pytest.mark.e2e

FORECAST = {"type": "function", "function": {
    "name": "get_forecast", "description": "Weather forecast.",
    "parameters": {"type": "object", "properties": {
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "detailed": {"type": "boolean"}},
        "required": ["unit", "days", "detailed"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {
        "zone": {"type": "string", "enum": ["UTC", "CET"]}}, "required": ["zone"],
        "additionalProperties": False}}}


def post(server, body):
    r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=180)
    assert r.status_code == 200, r.text
    return r


def model_id(server) -> str:
    return httpx.get(server.url + "/v1/models").json()["data"][0]["id"]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    cache = {}

    def get(kind):
        if kind not in cache:
            directory = tmp_path_factory.mktemp(kind)
            write_tokenizer(kind, directory)
            cache[kind] = tokenizer_for(directory).instruct_tokenizer.tokenizer
        return cache[kind]

    return get


def script(tok, *parts) -> list[int]:
    ids: list[int] = []
    for part in parts:
        if part.startswith("[") and part.endswith("]") and " " not in part and len(part) < 14:
            ids.append(tok.get_special_token(part))
        else:
            ids.extend(tok.encode(part, bos=False, eos=False))
    return ids


@pytest.mark.parametrize("server_name", ["tiny_server", "v11_server", "v13_server"])
@pytest.mark.parametrize("choice", ["required", "named"])
def test_forced_calls_from_random_model_are_valid(request, server_name, choice):
    server = request.getfixturevalue(server_name)
    tool_choice = "required" if choice == "required" else {"type": "function", "function": {"name": "get_time"}}
    for seed in (1, 2, 3):
        body = {"model": model_id(server), "tools": [FORECAST, TIME], "tool_choice": tool_choice,
                "parallel_tool_calls": False, "temperature": 1.0, "seed": seed, "max_tokens": 120,
                "messages": [{"role": "user", "content": "Forecast please"}]}
        data = post(server, body).json()
        assert_valid("CreateChatCompletionResponse", data)
        choice_ = data["choices"][0]
        assert choice_["finish_reason"] == "tool_calls", data
        (call,) = choice_["message"]["tool_calls"]
        name = call["function"]["name"]
        assert name in ("get_forecast", "get_time")
        if choice == "named":
            assert name == "get_time"
        schema = (FORECAST if name == "get_forecast" else TIME)["function"]["parameters"]
        args = json.loads(call["function"]["arguments"])
        validate(args, schema)
        assert " " not in call["function"]["arguments"], "constrained JSON is compact"
        assert choice_["message"]["content"] == ""


def test_parallel_required_calls_stream(v13_server):
    body = {"model": model_id(v13_server), "tools": [FORECAST, TIME], "tool_choice": "required",
            "temperature": 1.0, "seed": 5, "max_tokens": 64, "stream": True,
            "messages": [{"role": "user", "content": "Forecast please"}]}
    events = sse_events(post(v13_server, body))
    calls = {}
    for chunk in events[:-1]:
        for ch in chunk["choices"]:
            for d in ch["delta"].get("tool_calls") or []:
                calls.setdefault(d["index"], "")
                calls[d["index"]] += d["function"].get("arguments", "")
    assert calls and all(json.loads(a) is not None for a in calls.values())


def test_scripted_reasoning_then_answer_v13(v13_server, tokenizers):
    tok = tokenizers("v13-tekken")
    ids = script(tok, "[THINK]", "Compare the tenths digits.", "[/THINK]", "9.8 is greater than 9.11.")
    body = {"model": model_id(v13_server), "max_tokens": 200, "temperature": 0.3,
            "messages": [{"role": "user", "content": "Which is greater, 9.11 or 9.8?"}],
            "vllm_xargs": {"script": ids}}
    plain = post(v13_server, body).json()
    msg = plain["choices"][0]["message"]
    assert msg["reasoning"] == "Compare the tenths digits."
    assert msg["content"] == "9.8 is greater than 9.11."
    assert plain["choices"][0]["finish_reason"] == "stop"
    assert plain["usage"]["completion_tokens"] == len(ids) + 1  # + EOS
    events = sse_events(post(v13_server, {**body, "stream": True}))
    deltas = [ch["delta"] for c in events[:-1] for ch in c["choices"]]
    assert "".join(d.get("reasoning") or "" for d in deltas) == msg["reasoning"]
    assert "".join(d.get("content") or "" for d in deltas) == msg["content"]


@pytest.mark.parametrize("stream", [False, True])
def test_scripted_reasoning_then_parallel_calls_v13(v13_server, tokenizers, stream):
    tok = tokenizers("v13-tekken")
    ids = script(tok, "[THINK]", "Two lookups.", "[/THINK]",
                 "[TOOL_CALLS]", "get_time", "[ARGS]", '{"zone": "UTC"}',
                 "[TOOL_CALLS]", "get_forecast", "[ARGS]", '{"unit": "celsius", "days": 2, "detailed": false}')
    body = {"model": model_id(v13_server), "max_tokens": 200, "tools": [FORECAST, TIME],
            "messages": [{"role": "user", "content": "time and forecast"}],
            "vllm_xargs": {"script": ids}, "stream": stream}
    r = post(v13_server, body)
    if stream:
        events = sse_events(r)
        calls, reasoning, finish = {}, "", []
        for c in events[:-1]:
            for ch in c["choices"]:
                reasoning += ch["delta"].get("reasoning") or ""
                finish += [ch["finish_reason"]] if ch["finish_reason"] else []
                for d in ch["delta"].get("tool_calls") or []:
                    entry = calls.setdefault(d["index"], {"name": d["function"].get("name"), "arguments": ""})
                    entry["arguments"] += d["function"].get("arguments", "")
        got = [calls[i] for i in sorted(calls)]
    else:
        data = r.json()
        msg = data["choices"][0]["message"]
        reasoning, finish = msg["reasoning"], [data["choices"][0]["finish_reason"]]
        got = [{"name": c["function"]["name"], "arguments": c["function"]["arguments"]} for c in msg["tool_calls"]]
    assert reasoning == "Two lookups."
    assert finish == ["tool_calls"]
    assert got == [{"name": "get_time", "arguments": '{"zone": "UTC"}'},
                   {"name": "get_forecast", "arguments": '{"unit": "celsius", "days": 2, "detailed": false}'}]


def test_scripted_truncated_call_reports_length(v11_server, tokenizers):
    tok = tokenizers("v11-tekken")
    ids = script(tok, "[TOOL_CALLS]", "get_time", "[ARGS]", '{"zone": "UTC and some more text"}')
    body = {"model": model_id(v11_server), "max_tokens": len(ids) - 3, "tools": [TIME],
            "messages": [{"role": "user", "content": "time"}], "vllm_xargs": {"script": ids}}
    for stream in (False, True):
        r = post(v11_server, {**body, "stream": stream})
        if stream:
            finishes = [ch["finish_reason"] for c in sse_events(r)[:-1] for ch in c["choices"] if ch["finish_reason"]]
            assert finishes == ["length"]
        else:
            choice = r.json()["choices"][0]
            assert choice["finish_reason"] == "length"
            assert choice["message"]["tool_calls"][0]["function"]["arguments"].startswith('{"zone"')


@pytest.mark.parametrize("server_name, kind", [("tiny_server", "v3-spm"), ("v11_server", "v11-tekken"),
                                                ("v13_server", "v13-tekken")])
def test_openai_client_tool_loop(request, tokenizers, server_name, kind):
    """user → call → tool result → answer → new call, with the openai client's stream helper."""
    server = request.getfixturevalue(server_name)
    tok = tokenizers(kind)
    if kind == "v3-spm":
        call = script(tok, "[TOOL_CALLS]", ' [{"name": "get_time", "arguments": {"zone": "CET"}}]')
    else:
        call = script(tok, "[TOOL_CALLS]", "get_time", "[ARGS]", '{"zone": "CET"}')
    answer = script(tok, "It is noon in Paris.")
    client = OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
    mid = model_id(server)
    messages = [{"role": "user", "content": "What time is it in Paris?"}]
    with client.chat.completions.stream(model=mid, messages=messages, tools=[TIME],
                                        extra_body={"vllm_xargs": {"script": call}}) as stream:
        for _ in stream:
            pass
        first = stream.get_final_completion()
    tc = first.choices[0].message.tool_calls[0]
    assert tc.function.name == "get_time" and json.loads(tc.function.arguments) == {"zone": "CET"}
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": tc.id, "content": '{"time": "12:00"}'}]
    second = client.chat.completions.create(model=mid, messages=messages, tools=[TIME],
                                            extra_body={"vllm_xargs": {"script": answer}})
    assert second.choices[0].message.content == "It is noon in Paris."
    messages += [second.choices[0].message.model_dump(exclude_none=True),
                 {"role": "user", "content": "And again?"}]
    third = client.chat.completions.create(model=mid, messages=messages, tools=[TIME],
                                           extra_body={"vllm_xargs": {"script": call}})
    assert third.choices[0].finish_reason == "tool_calls"
    assert third.choices[0].message.tool_calls[0].id != tc.id
