"""Tool calling and reasoning through the whole HTTP stack, for every tokenizer generation."""

from __future__ import annotations

import json

import pytest
from openai import OpenAI

from tests.api.harness import MODEL, serve, sse_events
from tests.conftest import tokenizer_for
from tests.spec import assert_error, assert_valid

WEATHER = {"type": "function", "function": {
    "name": "get_current_weather", "description": "Get the current weather for a city or district.",
    "parameters": {"type": "object", "properties": {
        "location": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["location"]}}}
TOOL_REQUEST = {"model": MODEL, "tools": [WEATHER], "tool_choice": "auto", "parallel_tool_calls": False,
                "temperature": 0.2, "max_tokens": 512, "messages": [
                    {"role": "system", "content": "You are a helpful assistant. Use tools when needed."},
                    {"role": "user", "content": "What is the weather in Paris today?"}]}
ARGS = '{"location": "Paris", "unit": "celsius"}'
MARKERS = ("[TOOL_CALLS]", "[ARGS]", "[THINK]", "[/THINK]", "[CALL_ID]", "</s>")


class Script:
    """Builds token ids from text pieces and special-token names for one tokenizer."""

    def __init__(self, tokenizer_dirs, kind):
        self.dir = tokenizer_dirs[kind]
        self.tok = tokenizer_for(self.dir)
        self.inner = self.tok.instruct_tokenizer.tokenizer

    def ids(self, *parts: str, eos: bool = True) -> list[int]:
        out: list[int] = []
        for part in parts:
            if part in MARKERS[:5]:
                out.append(self.inner.get_special_token(part))
            else:
                out.extend(self.inner.encode(part, bos=False, eos=False))
        return out + ([self.inner.eos_id] if eos else [])


def _no_markers(text: str | None) -> None:
    for marker in MARKERS:
        assert marker not in (text or ""), text


def _stream(client, body):
    r = client.post("/v1/chat/completions", json={**body, "stream": True})
    assert r.status_code == 200, r.text
    events = sse_events(r)
    assert events[-1] == "[DONE]"
    for c in events[:-1]:
        assert_valid("CreateChatCompletionStreamResponse", c)
    return [ch for c in events[:-1] for ch in c["choices"]]


def _check_tool_deltas(choices):
    """OpenAI's delta rules: id/type/name once, first; later only index + arguments."""
    calls: dict[int, dict] = {}
    for ch in choices:
        for d in ch["delta"].get("tool_calls") or []:
            if d["index"] not in calls:
                assert set(d) == {"index", "id", "type", "function"} and d["function"]["name"]
                assert len(d["id"]) == 9 and d["id"].isalnum()
                calls[d["index"]] = {"id": d["id"], "name": d["function"]["name"],
                                     "arguments": d["function"].get("arguments", "")}
            else:
                assert set(d) == {"index", "function"} and set(d["function"]) == {"arguments"}
                calls[d["index"]]["arguments"] += d["function"]["arguments"]
        _no_markers(ch["delta"].get("content"))
        _no_markers(ch["delta"].get("reasoning"))
    assert sorted(calls) == list(range(len(calls)))
    return [calls[i] for i in sorted(calls)]


@pytest.mark.parametrize("kind, script", [
    ("v11-tekken", ("[TOOL_CALLS]", "get_current_weather", "[ARGS]", ARGS)),
    ("v13-tekken", ("[TOOL_CALLS]", "get_current_weather", "[ARGS]", ARGS)),
    ("v3-spm", ("[TOOL_CALLS]", " [{\"name\": \"get_current_weather\", \"arguments\": " + ARGS + "}]")),
    ("v7-tekken", ("[TOOL_CALLS]", "[{\"name\": \"get_current_weather\", \"arguments\": " + ARGS + "}]")),
])
def test_auto_tool_call_every_generation(tokenizer_dirs, kind, script):
    s = Script(tokenizer_dirs, kind)
    tokens = s.ids(*script)
    with serve(s.dir, lambda p, sp, i: tokens) as (client, _):
        body = client.post("/v1/chat/completions", json=TOOL_REQUEST).json()
        streamed = _stream(client, TOOL_REQUEST)
    assert_valid("CreateChatCompletionResponse", body)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["function"] == {"name": "get_current_weather", "arguments": ARGS}
    assert len(call["id"]) == 9 and call["id"].isalnum()
    assert choice["message"]["content"] == ""
    (scall,) = _check_tool_deltas(streamed)
    assert (scall["name"], scall["arguments"]) == ("get_current_weather", ARGS)
    assert [c["finish_reason"] for c in streamed if c["finish_reason"]] == ["tool_calls"]


def test_parallel_calls_and_parallel_false(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v11-tekken")
    tokens = s.ids("[TOOL_CALLS]", "get_current_weather", "[ARGS]", '{"location": "Paris"}',
                   "[TOOL_CALLS]", "get_current_weather", "[ARGS]", '{"location": "Lyon"}')
    with serve(s.dir, lambda p, sp, i: tokens) as (client, _):
        both = client.post("/v1/chat/completions", json={**TOOL_REQUEST, "parallel_tool_calls": True}).json()
        one = client.post("/v1/chat/completions", json=TOOL_REQUEST).json()
        streamed = _stream(client, {**TOOL_REQUEST, "parallel_tool_calls": True})
    calls = both["choices"][0]["message"]["tool_calls"]
    assert [json.loads(c["function"]["arguments"])["location"] for c in calls] == ["Paris", "Lyon"]
    assert calls[0]["id"] != calls[1]["id"]
    assert len(one["choices"][0]["message"]["tool_calls"]) == 1
    assert [c["arguments"] for c in _check_tool_deltas(streamed)] == [c["function"]["arguments"] for c in calls]


def test_reasoning_v13_non_stream_and_stream(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v13-tekken")
    tokens = s.ids("[THINK]", "Compare 9.11 and 9.8 digit by digit.", "[/THINK]", "9.8 is greater.")
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Which is greater, 9.11 or 9.8?"}],
            "temperature": 0.3, "top_p": 0.9, "max_tokens": 1024}
    with serve(s.dir, lambda p, sp, i: tokens) as (client, _):
        plain = client.post("/v1/chat/completions", json=body).json()
        streamed = _stream(client, {**body, "stream_options": {"include_usage": True}})
        hidden = client.post("/v1/chat/completions", json={**body, "include_reasoning": False}).json()
    msg = plain["choices"][0]["message"]
    assert msg["reasoning"] == "Compare 9.11 and 9.8 digit by digit." and msg["content"] == "9.8 is greater."
    assert "".join(c["delta"].get("reasoning") or "" for c in streamed) == msg["reasoning"]
    assert "".join(c["delta"].get("content") or "" for c in streamed) == msg["content"]
    _check_tool_deltas(streamed)
    assert "reasoning" not in hidden["choices"][0]["message"]


def test_reasoning_cut_by_max_tokens_is_still_reasoning(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v13-tekken")
    tokens = s.ids("[THINK]", "Let me count: one, two, three, four, five", "[/THINK]", "Done.")
    req = {"model": MODEL, "messages": [{"role": "user", "content": "count"}], "max_tokens": 6}
    with serve(s.dir, lambda p, sp, i: tokens) as (client, _):
        body = client.post("/v1/chat/completions", json=req).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["reasoning"].startswith("Let me") and choice["message"]["content"] == ""


def test_reasoning_then_tool_call(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v13-tekken")
    tokens = s.ids("[THINK]", "Need the weather.", "[/THINK]", "[TOOL_CALLS]", "get_current_weather",
                   "[ARGS]", ARGS)
    with serve(s.dir, lambda p, sp, i: tokens) as (client, _):
        body = client.post("/v1/chat/completions", json=TOOL_REQUEST).json()
        streamed = _stream(client, TOOL_REQUEST)
    msg = body["choices"][0]["message"]
    assert msg["reasoning"] == "Need the weather." and msg["tool_calls"][0]["function"]["arguments"] == ARGS
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert _check_tool_deltas(streamed)[0]["arguments"] == ARGS


def test_standard_instruct_model_has_no_reasoning_field(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v3-spm")
    with serve(s.dir, lambda p, sp, i: s.ids("9.8 is greater.")) as (client, _):
        body = client.post("/v1/chat/completions", json={**TOOL_REQUEST, "tools": None,
                                                         "tool_choice": None}).json()
    assert "reasoning" not in body["choices"][0]["message"]


def test_tool_choice_none_hides_calls_and_markers(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v11-tekken")
    tokens = s.ids("Sure.", "[TOOL_CALLS]", "get_current_weather", "[ARGS]", ARGS)
    with serve(s.dir, lambda p, sp, i: tokens) as (client, _):
        body = client.post("/v1/chat/completions", json={**TOOL_REQUEST, "tool_choice": "none"}).json()
    msg = body["choices"][0]["message"]
    assert "tool_calls" not in msg and msg["content"] == "Sure."
    assert body["choices"][0]["finish_reason"] == "stop"


def test_truncated_call_reports_length(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v11-tekken")
    tokens = s.ids("[TOOL_CALLS]", "get_current_weather", "[ARGS]", '{"location": "Paris, the capital of France"}')
    with serve(s.dir, lambda p, sp, i: tokens) as (client, _):
        body = client.post("/v1/chat/completions", json={**TOOL_REQUEST, "max_tokens": 9}).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["tool_calls"][0]["function"]["arguments"].startswith('{"')


@pytest.mark.parametrize("kind", ["v11-tekken", "v13-tekken", "v3-spm"])
def test_forced_choices_constrain_the_engine(tokenizer_dirs, kind):
    s = Script(tokenizer_dirs, kind)
    if kind == "v3-spm":  # pre-v11 forced output is the bare call array (the constraint's shape)
        tokens = s.ids('[{"name":"get_current_weather","arguments":{"location":"Paris"}}]')
    else:
        tokens = s.ids("[TOOL_CALLS]", "get_current_weather", "[ARGS]", '{"location":"Paris"}')
    named = {"type": "function", "function": {"name": "get_current_weather"}}
    with serve(s.dir, lambda p, sp, i: tokens) as (client, fake):
        required = client.post("/v1/chat/completions", json={**TOOL_REQUEST, "tool_choice": "required"}).json()
        forced = client.post("/v1/chat/completions", json={**TOOL_REQUEST, "tool_choice": named}).json()
        streamed = _stream(client, {**TOOL_REQUEST, "tool_choice": "required"})
    for body in (required, forced):
        choice = body["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        assert choice["message"]["tool_calls"][0]["function"]["name"] == "get_current_weather"
        assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) == {"location": "Paris"}
    assert _check_tool_deltas(streamed)[0]["name"] == "get_current_weather"
    constraint = fake.requests[0][1].constraint
    if kind == "v3-spm":
        assert constraint.kind == "json" and constraint.value["maxItems"] == 1
    else:
        assert constraint.kind == "grammar" and '"get_current_weather"' in constraint.value
        assert "<[9]>" in constraint.value and "fcall+" not in constraint.value


@pytest.mark.parametrize("patch, param", [
    ({"tools": []}, "tools"),
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice.function.name"),
    ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 3}}}]},
     "tools[0].function.parameters"),
    ({"tool_choice": "required", "response_format": {"type": "json_object"}}, "tool_choice"),
])
def test_tool_errors(tokenizer_dirs, patch, param):
    s = Script(tokenizer_dirs, "v11-tekken")
    with serve(s.dir, lambda p, sp, i: [2]) as (client, _):
        assert_error(client.post("/v1/chat/completions", json={**TOOL_REQUEST, **patch}), 400, param=param)


@pytest.mark.parametrize("kind", ["v3-spm", "v11-tekken", "v13-tekken"])
def test_openai_client_multi_turn_tool_loop(tokenizer_dirs, kind):
    """user → call → tool result → answer → new call, with the real openai client."""
    s = Script(tokenizer_dirs, kind)
    if kind == "v3-spm":
        call = s.ids("[TOOL_CALLS]", ' [{"name": "get_current_weather", "arguments": {"location": "Paris"}}]')
    else:
        call = s.ids("[TOOL_CALLS]", "get_current_weather", "[ARGS]", '{"location": "Paris"}')
    answer = s.ids("It is 18 degrees in Paris.")

    def script(prompt, sampling, index):
        return answer if prompt[-1] == s.inner.get_special_token("[/TOOL_RESULTS]") else call

    with serve(s.dir, script) as (client, fake):
        oai = OpenAI(base_url="http://testserver/v1", api_key="k", http_client=client, max_retries=0)
        messages = [{"role": "user", "content": "Weather in Paris?"}]
        with oai.chat.completions.stream(model=MODEL, messages=messages, tools=[WEATHER]) as stream:
            for _ in stream:
                pass
            first = stream.get_final_completion()
        tool_call = first.choices[0].message.tool_calls[0]
        assert first.choices[0].finish_reason == "tool_calls"
        assert json.loads(tool_call.function.arguments) == {"location": "Paris"}
        messages += [first.choices[0].message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": tool_call.id, "content": '{"temperature": 18}'}]
        second = oai.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER])
        assert second.choices[0].message.content == "It is 18 degrees in Paris."
        messages += [second.choices[0].message.model_dump(exclude_none=True),
                     {"role": "user", "content": "And now?"}]
        third = oai.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER])
        assert third.choices[0].message.tool_calls[0].function.name == "get_current_weather"
        if kind == "v11-tekken":  # v11 renders call ids: ours round-trip into the prompt unchanged
            rendered = s.tok.decode(fake.requests[-1][0], special_token_policy=1)
            assert tool_call.id in rendered
