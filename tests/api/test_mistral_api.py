"""Mistral API fields and Mistral's own clients (``mistralai`` SDK, LangChain's ``ChatMistralAI``)
through the whole HTTP stack, in-process over the scripted FakeEngine.

The SDK runs unmodified: only its HTTP transport is bridged to the in-process app, so what it
sends (``random_seed``, ``safe_prompt``, ``prefix``, ``tool_choice: "any"``, ``json_schema``
from ``chat.parse``) and what it validates (response and chunk models, ``ModelList``) are real.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from langchain_core.tools import tool
from langchain_mistralai import ChatMistralAI
from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy
from mistralai.client import Mistral, models
from mistralai.client.errors import SDKError
from pydantic import BaseModel

from server.chat.render import MISTRAL_SAFE_PROMPT
from server.tinymodel import write_tokenizer
from tests.api.harness import MODEL, serve, sse_events
from tests.api.test_tools import WEATHER, Script
from tests.spec import assert_error, assert_valid

SDK_AGENT = "mistral-client-python/3.7.0"


class _Bridge(httpx2.BaseTransport):
    """httpx2 (the SDK's HTTP library) → the in-process app's TestClient."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() != "host"]
        r = self.client.request(request.method, str(request.url), headers=headers,
                                content=request.read())
        return httpx2.Response(r.status_code, headers=r.headers.multi_items(), content=r.content)


class _HttpxBridge(httpx.BaseTransport):
    """httpx (LangChain's HTTP library) → the in-process app's TestClient."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() != "host"]
        r = self.client.request(request.method, str(request.url), headers=headers,
                                content=request.read())
        return httpx.Response(r.status_code, headers=r.headers.multi_items(), content=r.content)


def sdk(client: Any) -> Mistral:
    return Mistral(api_key="unused", server_url="http://testserver",
                   client=httpx2.Client(transport=_Bridge(client)))


@contextmanager
def mistral(s: Script, tokens: list[int] | Any, **settings: Any) -> Iterator[tuple[Mistral, Any, Any]]:
    script = tokens if callable(tokens) else (lambda p, sp, i: tokens)
    with serve(s.dir, script, **settings) as (client, fake):
        yield sdk(client), client, fake


def langchain(client: Any, **kwargs: Any) -> ChatMistralAI:
    """``ChatMistralAI`` on the in-process app (``endpoint`` is the ``/v1`` base URL)."""
    base = "http://testserver/v1"
    return ChatMistralAI(model=MODEL, api_key="unused", endpoint=base, max_retries=1,
                         client=httpx.Client(transport=_HttpxBridge(client), base_url=base), **kwargs)


def user(text: str = "Hello") -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def decoded(s: Script, ids: list[int]) -> str:
    return s.inner.decode(ids, special_token_policy=SpecialTokenPolicy.KEEP)


def error_of(exc: SDKError) -> dict[str, Any]:
    return json.loads(exc.body)["error"]


# -- models ---------------------------------------------------------------------------

def test_models_list_validates_in_the_sdk_and_in_openai_schema(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v13-tekken")
    settings = {"aliases": ["ministral-reasoning"], "max_model_len": 2048,
                "capabilities": {"chat": True, "function_calling": True, "reasoning": True,
                                 "vision": False}, "default_sampling": {"temperature": 0.7}}
    with mistral(s, [2], **settings) as (m, client, _):
        listing = m.models.list()
        one = m.models.retrieve(model_id="ministral-reasoning")
        raw = client.get("/v1/models").json()
    assert_valid("ListModelsResponse", raw)
    assert [c.id for c in listing.data] == [MODEL, "ministral-reasoning"]
    card = listing.data[0]
    assert isinstance(card, models.BaseModelCard) and card.type == "base"
    caps = card.capabilities
    assert (caps.completion_chat, caps.function_calling, caps.reasoning, caps.vision) == (True, True, True, False)
    assert card.max_context_length == 2048 and card.aliases == ["ministral-reasoning"]
    assert card.default_model_temperature == 0.7
    assert one.id == "ministral-reasoning" and one.aliases == [MODEL]


def test_models_capabilities_without_preset(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v3-spm")
    with mistral(s, [2]) as (m, _, _):
        card = m.models.list().data[0]
    assert card.capabilities.completion_chat and card.capabilities.function_calling
    assert not card.capabilities.reasoning and not card.capabilities.vision


# -- chat.complete / chat.stream ---------------------------------------------------------

def test_complete_and_stream(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v3-spm")
    tokens = s.ids("Mistral models are language models.")
    with mistral(s, tokens) as (m, _, _):
        reply = m.chat.complete(model=MODEL, messages=user(), max_tokens=64)
        chunks = list(m.chat.stream(model=MODEL, messages=user(), max_tokens=64))
    assert reply.choices[0].message.content == "Mistral models are language models."
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens == len(tokens) and reply.usage.prompt_tokens > 0
    text = "".join(c.data.choices[0].delta.content or "" for c in chunks if c.data.choices)
    assert text == "Mistral models are language models."
    assert [c.data.choices[0].finish_reason for c in chunks if c.data.choices][-1] == "stop"
    assert chunks[-1].data.usage is not None  # Mistral's API streams usage without asking
    assert chunks[-1].data.usage.completion_tokens == len(tokens)


def test_random_seed_is_the_seed(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v3-spm")
    with mistral(s, s.ids("ok")) as (m, client, fake):
        m.chat.complete(model=MODEL, messages=user(), random_seed=1234, temperature=1.0)
        assert fake.requests[-1][1].seed == 1234
        body = {"model": MODEL, "messages": user(), "seed": 7, "random_seed": 7}
        assert client.post("/v1/chat/completions", json=body).status_code == 200
        assert fake.requests[-1][1].seed == 7
        err = assert_error(client.post("/v1/chat/completions", json={**body, "seed": 8}), 400,
                           param="random_seed")
    assert "seed" in err["message"]


def test_safe_prompt_is_prepended(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v3-spm")
    with mistral(s, s.ids("ok")) as (m, _, fake):
        plain = m.chat.complete(model=MODEL, messages=user("Hi"))
        safe = m.chat.complete(model=MODEL, messages=user("Hi"), safe_prompt=True)
        prompt = fake.requests[-1][0]
    safety = s.inner.encode(MISTRAL_SAFE_PROMPT, bos=False, eos=False)
    assert safe.usage.prompt_tokens > plain.usage.prompt_tokens + len(safety) - 3
    assert s.inner.decode(prompt).startswith(MISTRAL_SAFE_PROMPT)


def test_safe_prompt_joins_the_clients_system_prompt(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v13-tekken")
    messages = [{"role": "system", "content": "Answer in French."}, *user("Hi")]
    with mistral(s, s.ids("ok")) as (m, _, fake):
        m.chat.complete(model=MODEL, messages=messages, safe_prompt=True)
    text = decoded(s, fake.requests[-1][0])  # KEEP
    assert f"[SYSTEM_PROMPT]{MISTRAL_SAFE_PROMPT}\n\nAnswer in French.[/SYSTEM_PROMPT]" in text


def test_prefix_is_continued_not_echoed(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v11-tekken")
    prefix = "Arr, matey! The best French cheese is"
    messages = [*user("Best French cheese?"), {"role": "assistant", "content": prefix, "prefix": True}]
    with mistral(s, s.ids(" Roquefort.")) as (m, _, fake):
        reply = m.chat.complete(model=MODEL, messages=messages)
        streamed = list(m.chat.stream(model=MODEL, messages=messages))
    prompt = fake.requests[0][0]
    assert prompt[-len(s.ids(prefix, eos=False)):] == s.ids(prefix, eos=False)  # no [/INST] after
    assert reply.choices[0].message.content == " Roquefort."
    assert "".join(c.data.choices[0].delta.content or "" for c in streamed if c.data.choices) == " Roquefort."


def test_prefix_only_on_the_last_message(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v11-tekken")
    messages = [*user(), {"role": "assistant", "content": "Hi", "prefix": True}, *user("again")]
    with mistral(s, [2]) as (m, _, _):
        with pytest.raises(SDKError) as exc:
            m.chat.complete(model=MODEL, messages=messages)
    assert exc.value.status_code == 400 and error_of(exc.value)["param"] == "messages[1].prefix"


# -- tools ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["v3-spm", "v11-tekken"])
def test_tool_choice_any_forces_a_call(tokenizer_dirs, kind):
    s = Script(tokenizer_dirs, kind)
    if kind == "v3-spm":
        tokens = s.ids('[{"name":"get_current_weather","arguments":{"location":"Paris"}}]')
    else:
        tokens = s.ids("[TOOL_CALLS]", "get_current_weather", "[ARGS]", '{"location":"Paris"}')
    with mistral(s, tokens) as (m, _, fake):
        reply = m.chat.complete(model=MODEL, messages=user("Weather in Paris?"), tools=[WEATHER],
                                tool_choice="any")
    assert fake.requests[0][1].constraint is not None  # enforced exactly like "required"
    call = reply.choices[0].message.tool_calls[0]
    assert reply.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_current_weather"
    assert json.loads(call.function.arguments) == {"location": "Paris"}


def test_streamed_tool_call_is_whole_for_the_sdk(tokenizer_dirs):
    """The SDK's stream ToolCall needs ``function.name`` in every delta: each call comes whole."""
    s = Script(tokenizer_dirs, "v11-tekken")
    tokens = s.ids("[TOOL_CALLS]", "get_current_weather", "[ARGS]", '{"location": "Paris"}',
                   "[TOOL_CALLS]", "get_current_weather", "[ARGS]", '{"location": "Lyon"}')
    with mistral(s, tokens) as (m, client, _):
        chunks = list(m.chat.stream(model=MODEL, messages=user("Weather?"), tools=[WEATHER]))
        openai_events = sse_events(client.post("/v1/chat/completions", json={
            "model": MODEL, "messages": user("Weather?"), "tools": [WEATHER], "stream": True}))
    deltas = [c.data.choices[0].delta for c in chunks if c.data.choices and c.data.choices[0].delta.tool_calls]
    assert len(deltas) == 1
    calls = deltas[0].tool_calls
    assert [json.loads(c.function.arguments)["location"] for c in calls] == ["Paris", "Lyon"]
    assert [c.index for c in calls] == [0, 1] and all(len(c.id) == 9 for c in calls)
    # OpenAI clients still get incremental deltas (name once, then argument fragments)
    fragments = [tc for e in openai_events[:-1] for ch in e["choices"]
                 for tc in ch["delta"].get("tool_calls") or []]
    assert len(fragments) > 2 and "name" not in fragments[-1]["function"]


def test_tool_loop_with_sdk_messages(tokenizer_dirs):
    """The SDK's response message goes back into the history as is (id, index, dict args)."""
    s = Script(tokenizer_dirs, "v13-tekken")
    call = s.ids("[THINK]", "Need the weather.", "[/THINK]", "[TOOL_CALLS]", "get_current_weather",
                 "[ARGS]", '{"location": "Paris"}')
    answer = s.ids("It is 18 degrees in Paris.")

    def script(prompt, sampling, index):
        return answer if s.inner.get_special_token("[/TOOL_RESULTS]") in prompt else call

    with mistral(s, script) as (m, _, _):
        messages: list[Any] = user("Weather in Paris?")
        first = m.chat.complete(model=MODEL, messages=messages, tools=[WEATHER])
        message = first.choices[0].message
        tool_call = message.tool_calls[0]
        messages += [message, {"role": "tool", "name": tool_call.function.name,
                               "tool_call_id": tool_call.id, "content": "18C"}]
        second = m.chat.complete(model=MODEL, messages=messages, tools=[WEATHER])
        dict_args = [*user(), {"role": "assistant", "tool_calls": [{"id": "abc", "function": {
            "name": "get_current_weather", "arguments": {"location": "Lyon"}}}]},
            {"role": "tool", "tool_call_id": "abc", "content": "20C"}]
        third = m.chat.complete(model=MODEL, messages=dict_args, tools=[WEATHER])
    assert isinstance(message.content[0], models.ThinkChunk)  # thinking round-trips as history
    assert second.choices[0].message.content == "It is 18 degrees in Paris."
    assert third.choices[0].message.content == "It is 18 degrees in Paris."


# -- reasoning -----------------------------------------------------------------------------

THINKING = ("[THINK]", "Compare 9.11 and 9.8.", "[/THINK]", "9.8 is greater.")


def test_thinking_is_content_chunks_for_the_sdk(tokenizer_dirs):
    """The SDK drops unknown fields (its models ignore extras), so ``reasoning`` would vanish:
    requests from the SDK get Mistral's shape, thinking as a ``thinking`` content chunk."""
    s = Script(tokenizer_dirs, "v13-tekken")
    with mistral(s, s.ids(*THINKING)) as (m, _, _):
        reply = m.chat.complete(model=MODEL, messages=user("9.11 or 9.8?"))
        chunks = list(m.chat.stream(model=MODEL, messages=user("9.11 or 9.8?")))
    think, text = reply.choices[0].message.content
    assert isinstance(think, models.ThinkChunk) and isinstance(text, models.TextChunk)
    assert think.thinking[0].text == "Compare 9.11 and 9.8." and text.text == "9.8 is greater."
    thought, answer = "", ""
    for c in chunks:
        for choice in c.data.choices:
            content = choice.delta.content
            if isinstance(content, list):
                thought += "".join(p.thinking[0].text for p in content if isinstance(p, models.ThinkChunk))
            elif content:
                answer += content
    assert (thought, answer) == ("Compare 9.11 and 9.8.", "9.8 is greater.")


def test_openai_clients_keep_the_reasoning_field(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v13-tekken")
    body = {"model": MODEL, "messages": user("9.11 or 9.8?")}
    with mistral(s, s.ids(*THINKING)) as (_, client, _):
        plain = client.post("/v1/chat/completions", json=body).json()
        events = sse_events(client.post("/v1/chat/completions", json={**body, "stream": True}))
    assert_valid("CreateChatCompletionResponse", plain)
    msg = plain["choices"][0]["message"]
    assert msg["reasoning"] == "Compare 9.11 and 9.8." and msg["content"] == "9.8 is greater."
    for e in events[:-1]:
        assert_valid("CreateChatCompletionStreamResponse", e)
    assert "".join(ch["delta"].get("reasoning") or "" for e in events[:-1] for ch in e["choices"]) \
        == "Compare 9.11 and 9.8."


def test_prompt_mode_reasoning_uses_the_presets_prompt(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v11-tekken")
    settings = {"reasoning": "text_think", "reasoning_system_prompt": "Think in <think> tags first.",
                "capabilities": {"reasoning": True}}
    with mistral(s, s.ids("ok"), **settings) as (m, _, fake):
        m.chat.complete(model=MODEL, messages=user(), prompt_mode="reasoning")
        with_prompt = fake.requests[-1][0]
        m.chat.complete(model=MODEL, messages=user())
        without = fake.requests[-1][0]
    text = decoded(s, with_prompt)
    assert "[SYSTEM_PROMPT]Think in <think> tags first.[/SYSTEM_PROMPT]" in text
    assert "Think in" not in decoded(s, without)


@pytest.mark.parametrize("kind, settings, needle", [
    ("v3-spm", {}, "is not one"),  # not a reasoning model
    ("v13-tekken", {"capabilities": {"reasoning": True}}, "no reasoning system prompt"),
])
def test_prompt_mode_reasoning_errors(tokenizer_dirs, kind, settings, needle):
    s = Script(tokenizer_dirs, kind)
    with mistral(s, [2], **settings) as (m, _, _):
        with pytest.raises(SDKError) as exc:
            m.chat.complete(model=MODEL, messages=user(), prompt_mode="reasoning")
    err = error_of(exc.value)
    assert exc.value.status_code == 400 and err["param"] == "prompt_mode" and needle in err["message"]


@pytest.fixture(scope="module")
def v15_dir(tmp_path_factory) -> Path:
    """A v15 Tekken tokenizer (model settings: reasoning_effort none/high), derived from v13."""
    directory = tmp_path_factory.mktemp("v15-tekken")
    write_tokenizer("v13-tekken", directory)
    data = json.loads((directory / "tekken.json").read_text())
    data["config"]["version"] = "v15"
    data["special_tokens"] += [{"rank": 36, "token_str": "[MODEL_SETTINGS]", "is_control": True},
                               {"rank": 37, "token_str": "[/MODEL_SETTINGS]", "is_control": True}]
    data["model_settings_builder"] = {"reasoning_effort": {
        "type": "enum", "accepts_none": True, "default": None, "values": ["none", "high"]}}
    (directory / "tekken.json").write_text(json.dumps(data))
    return directory


def test_reasoning_effort_on_v15(tokenizer_dirs, v15_dir):
    s = Script({"v15-tekken": v15_dir}, "v15-tekken")
    with mistral(s, s.ids("ok")) as (m, _, fake):
        m.chat.complete(model=MODEL, messages=user(), reasoning_effort="high")
        text = decoded(s, fake.requests[-1][0])
        with pytest.raises(SDKError) as exc:
            m.chat.complete(model=MODEL, messages=user(), reasoning_effort="low")
    assert '[MODEL_SETTINGS]{"reasoning_effort": "high"}[/MODEL_SETTINGS]' in text
    err = error_of(exc.value)
    assert err["param"] == "reasoning_effort" and "'none', 'high'" in err["message"]


def test_reasoning_effort_before_v15_is_a_400(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v13-tekken")
    with mistral(s, [2]) as (m, _, _):
        with pytest.raises(SDKError) as exc:
            m.chat.complete(model=MODEL, messages=user(), reasoning_effort="high")
    err = error_of(exc.value)
    assert exc.value.status_code == 400 and err["param"] == "reasoning_effort" and "v13" in err["message"]


# -- chat.parse ----------------------------------------------------------------------------

class Mood(str, enum.Enum):
    happy = "happy"
    sad = "sad"


class Verdict(BaseModel):
    mood: Mood
    sarcastic: bool


def test_chat_parse_with_pydantic_model(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v3-spm")
    with mistral(s, s.ids('{"mood": "happy", "sarcastic": false}')) as (m, _, fake):
        parsed = m.chat.parse(response_format=Verdict, model=MODEL, messages=user("Great, rain again."))
    constraint = fake.requests[0][1].constraint
    assert constraint.kind == "json" and constraint.value["additionalProperties"] is False
    assert parsed.choices[0].message.parsed == Verdict(mood=Mood.happy, sarcastic=False)


# -- errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, param", [
    ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
    ({"guardrails": [{"block_on_error": True}]}, "guardrails"),
    ({"prompt_logprobs": True}, "prompt_logprobs"),
])
def test_unsupported_mistral_fields_are_named(tokenizer_dirs, kwargs, param):
    s = Script(tokenizer_dirs, "v3-spm")
    with mistral(s, [2]) as (m, _, _):
        with pytest.raises(SDKError) as exc:
            m.chat.complete(model=MODEL, messages=user(), **kwargs)
    err = error_of(exc.value)
    assert exc.value.status_code == 400 and err["param"] == param
    assert err["code"] == "unsupported_parameter" and param in err["message"]


def test_errors_map_to_sdk_exceptions(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v3-spm")
    with mistral(s, [2], api_keys=["secret"]) as (m, client, _):
        with pytest.raises(SDKError) as unauthorized:
            m.models.list()
        good = Mistral(api_key="secret", server_url="http://testserver",
                       client=httpx2.Client(transport=_Bridge(client)))
        with pytest.raises(SDKError) as missing:
            good.chat.complete(model="nope", messages=user())
        with pytest.raises(SDKError) as invalid:
            good.chat.stream(model=MODEL, messages=user(), temperature=5)
    assert unauthorized.value.status_code == 401
    assert missing.value.status_code == 404 and error_of(missing.value)["code"] == "model_not_found"
    assert invalid.value.status_code == 400 and error_of(invalid.value)["param"] == "temperature"
    assert "Status 400" in str(invalid.value)


def test_mistral_shape_only_for_mistral_sdk(tokenizer_dirs):
    """A Mistral field alone does not switch shapes: only the SDK's User-Agent does."""
    s = Script(tokenizer_dirs, "v13-tekken")
    body = {"model": MODEL, "messages": user(), "random_seed": 3, "safe_prompt": True}
    with mistral(s, s.ids(*THINKING)) as (_, client, _):
        openai_shape = client.post("/v1/chat/completions", json=body).json()
        mistral_shape = client.post("/v1/chat/completions", json=body,
                                    headers={"User-Agent": SDK_AGENT}).json()
    assert isinstance(openai_shape["choices"][0]["message"]["content"], str)
    assert mistral_shape["choices"][0]["message"]["content"][0]["type"] == "thinking"
    assert "reasoning" not in mistral_shape["choices"][0]["message"]


# -- LangChain -----------------------------------------------------------------------------

@tool
def get_current_weather(location: str) -> str:
    """Get the current weather for a city."""
    return "18C"


def test_langchain_invoke_stream_and_tools(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v11-tekken")
    text = s.ids("Bonjour!")
    call = s.ids("[TOOL_CALLS]", "get_current_weather", "[ARGS]", '{"location": "Paris"}')

    def script(prompt, sampling, index):
        return call if sampling.constraint is not None or s.inner.get_special_token(
            "[AVAILABLE_TOOLS]") in prompt else text

    with serve(s.dir, script) as (client, fake):
        llm = langchain(client, random_seed=5, safe_mode=True)
        reply = llm.invoke("Say hello")
        streamed = "".join(c.content for c in llm.stream("Say hello"))
        seed = fake.requests[0][1].seed
        forced = llm.bind_tools([get_current_weather], tool_choice="any").invoke("Weather in Paris?")
        chunks = list(llm.bind_tools([get_current_weather]).stream("Weather in Paris?"))
    assert reply.content == "Bonjour!" and streamed == "Bonjour!" and seed == 5
    assert reply.usage_metadata["output_tokens"] == len(text)
    assert forced.tool_calls[0]["name"] == "get_current_weather"
    assert forced.tool_calls[0]["args"] == {"location": "Paris"}
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c
    assert merged.tool_calls[0]["name"] == "get_current_weather"
    assert merged.tool_calls[0]["args"] == {"location": "Paris"}
