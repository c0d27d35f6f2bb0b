"""Mistral's own clients against the real server on the real vLLM CPU engine.

The ``mistralai`` SDK (from PyPI, unmodified) and LangChain's ``ChatMistralAI`` are pointed at a
running server exactly as a user would (``server_url`` / ``endpoint``). Where a test needs exact
output (prefix continuation, thinking), the test-only scripted logits processor makes the random
model emit a token script: the SDK has no extra-body option, so its HTTP transport adds
``vllm_xargs`` to the JSON body; everything else is what the SDK sends and validates.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from jsonschema import validate
from langchain_mistralai import ChatMistralAI
from mistralai.client import Mistral, models
from mistralai.client.errors import SDKError
from pydantic import BaseModel

from server.chat.render import Renderer
from server.protocol import parse_request
from server.tinymodel import write_tokenizer
from tests.conftest import tokenizer_for
from tests.e2e.conftest import MODEL
from tests.spec import assert_valid

pytestmark = pytest.mark.e2e

FORECAST = {"type": "function", "function": {
    "name": "get_forecast", "description": "Weather forecast.",
    "parameters": {"type": "object", "properties": {
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7}},
        "required": ["unit", "days"], "additionalProperties": False}}}


class _Inject(httpx2.HTTPTransport):
    """Adds fields to every JSON request body (the SDK has no extra-body option)."""

    def __init__(self, extra: dict[str, Any]) -> None:
        super().__init__()
        self.extra = extra

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "POST":
            body = {**json.loads(request.read()), **self.extra}
            headers = [(k, v) for k, v in request.headers.multi_items()
                       if k.lower() not in ("content-length", "content-type")]
            request = httpx2.Request(request.method, request.url, headers=headers, json=body)
        return super().handle_request(request)


def sdk(server: Any, **extra: Any) -> Mistral:
    client = httpx2.Client(transport=_Inject(extra), timeout=180) if extra else None
    return Mistral(api_key="unused", server_url=server.url, client=client, timeout_ms=180_000)


def user(text: str = "Hello") -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    """The served models' tokenizers, to script outputs and count prompt tokens."""
    cache: dict[str, Any] = {}

    def get(kind: str) -> Any:
        if kind not in cache:
            directory = tmp_path_factory.mktemp(kind)
            write_tokenizer(kind, Path(directory))
            cache[kind] = tokenizer_for(Path(directory))
        return cache[kind]

    return get


def ids(tokenizer: Any, *parts: str) -> list[int]:
    inner = tokenizer.instruct_tokenizer.tokenizer
    out: list[int] = []
    for part in parts:
        if part.startswith("[") and part.endswith("]") and " " not in part:
            out.append(inner.get_special_token(part))
        else:
            out.extend(inner.encode(part, bos=False, eos=False))
    return out


def prompt_len(tokenizer: Any, body: dict[str, Any]) -> int:
    return len(Renderer(tokenizer, 4096).render(parse_request(body), include_tools=False).token_ids)


# -- the mistralai SDK on the v3 tiny model ------------------------------------------------

def test_models_list(tiny_server):
    m = sdk(tiny_server)
    listing = m.models.list()
    raw = httpx.get(tiny_server.url + "/v1/models").json()
    card = listing.data[0]
    assert_valid("ListModelsResponse", raw)
    assert isinstance(card, models.BaseModelCard) and card.id == MODEL and card.type == "base"
    assert card.capabilities.completion_chat and card.capabilities.function_calling
    assert not card.capabilities.reasoning and not card.capabilities.vision
    assert card.max_context_length == 4096  # the engine's max_model_len for the tiny model
    assert m.models.retrieve(model_id=MODEL).id == MODEL


def test_complete_and_stream(tiny_server):
    m = sdk(tiny_server)
    kwargs = {"model": MODEL, "messages": user("Tell me about cheese."), "temperature": 0,
              "max_tokens": 12}
    reply = m.chat.complete(**kwargs)
    chunks = list(m.chat.stream(**kwargs))
    text = reply.choices[0].message.content
    assert isinstance(text, str) and reply.choices[0].finish_reason in ("stop", "length")
    assert 0 < reply.usage.completion_tokens <= 12
    streamed = "".join(c.data.choices[0].delta.content or "" for c in chunks if c.data.choices)
    assert streamed == text  # greedy: the same answer both ways
    assert chunks[-1].data.usage.completion_tokens == reply.usage.completion_tokens


def test_random_seed_reproducible(tiny_server):
    m = sdk(tiny_server)
    kwargs = {"model": MODEL, "messages": user("Write anything."), "temperature": 1.0,
              "max_tokens": 16}
    first = m.chat.complete(**kwargs, random_seed=42).choices[0].message.content
    again = m.chat.complete(**kwargs, random_seed=42).choices[0].message.content
    other = m.chat.complete(**kwargs, random_seed=43).choices[0].message.content
    assert first == again and first != other


def test_safe_prompt_in_prompt_tokens(tiny_server, tok):
    m = sdk(tiny_server)
    messages = user("What is the best French cheese?")
    plain = m.chat.complete(model=MODEL, messages=messages, max_tokens=1)
    safe = m.chat.complete(model=MODEL, messages=messages, max_tokens=1, safe_prompt=True)
    expected = prompt_len(tok("v3-spm"), {"messages": messages, "safe_prompt": True})
    assert plain.usage.prompt_tokens == prompt_len(tok("v3-spm"), {"messages": messages})
    assert safe.usage.prompt_tokens == expected > plain.usage.prompt_tokens + 30


def test_prefix_continuation(tiny_server, tok):
    prefix = "Arr, matey! The best French cheese is"
    messages = [*user("Best French cheese? Answer like a pirate."),
                {"role": "assistant", "content": prefix, "prefix": True}]
    m = sdk(tiny_server, vllm_xargs={"script": ids(tok("v3-spm"), "Roquefort.")})
    reply = m.chat.complete(model=MODEL, messages=messages, max_tokens=20)
    assert reply.choices[0].message.content.strip() == "Roquefort."  # the prefix is not echoed
    assert reply.usage.prompt_tokens == prompt_len(tok("v3-spm"), {"messages": messages})


def test_tool_choice_any_gives_a_valid_call(tiny_server):
    m = sdk(tiny_server)
    for seed in (1, 2, 3):
        reply = m.chat.complete(model=MODEL, messages=user("Forecast for Paris"), tools=[FORECAST],
                                tool_choice="any", parallel_tool_calls=False, temperature=1.0,
                                random_seed=seed, max_tokens=80)
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls", choice
        (call,) = choice.message.tool_calls
        assert call.function.name == "get_forecast" and len(call.id) == 9
        validate(json.loads(call.function.arguments), FORECAST["function"]["parameters"])


class Mood(str, enum.Enum):
    happy = "happy"
    sad = "sad"


class Verdict(BaseModel):
    mood: Mood
    sarcastic: bool


def test_chat_parse_pydantic(tiny_server):
    m = sdk(tiny_server)
    for seed in (1, 2):
        parsed = m.chat.parse(response_format=Verdict, model=MODEL, temperature=1.0,
                              random_seed=seed, max_tokens=60,
                              messages=user("Great, it is raining again. Mood and sarcasm?"))
        verdict = parsed.choices[0].message.parsed
        assert isinstance(verdict, Verdict), parsed.choices[0].message.content


def test_errors_map_to_sdk_exceptions(tiny_server):
    m = sdk(tiny_server)
    with pytest.raises(SDKError) as missing:
        m.chat.complete(model="nope", messages=user())
    with pytest.raises(SDKError) as invalid:
        m.chat.stream(model=MODEL, messages=user(), temperature=5)
    with pytest.raises(SDKError) as unsupported:
        m.chat.complete(model=MODEL, messages=user(), prediction={"type": "content", "content": "x"})
    assert missing.value.status_code == 404
    assert json.loads(missing.value.body)["error"]["code"] == "model_not_found"
    assert invalid.value.status_code == 400
    assert json.loads(invalid.value.body)["error"]["param"] == "temperature"
    assert json.loads(unsupported.value.body)["error"]["param"] == "prediction"


# -- LangChain's ChatMistralAI --------------------------------------------------------------

def test_langchain_invoke_stream_tools(tiny_server):
    llm = ChatMistralAI(model=MODEL, api_key="unused", endpoint=tiny_server.url + "/v1",
                        temperature=0, max_tokens=12, max_retries=1)
    reply = llm.invoke("Tell me about cheese.")
    streamed = "".join(c.content for c in llm.stream("Tell me about cheese."))
    assert isinstance(reply.content, str) and reply.content == streamed
    assert 0 < reply.usage_metadata["output_tokens"] <= 12
    loose = ChatMistralAI(model=MODEL, api_key="unused", endpoint=tiny_server.url + "/v1",
                          temperature=1.0, max_tokens=80, random_seed=7, max_retries=1)
    forced = loose.bind_tools([FORECAST], tool_choice="any", parallel_tool_calls=False)
    called = forced.invoke("Forecast please")
    chunks = list(forced.stream("Forecast please"))
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c
    for message in (called, merged):
        assert len(message.tool_calls) == 1 and not message.invalid_tool_calls, message
        assert message.tool_calls[0]["name"] == "get_forecast"
        validate(message.tool_calls[0]["args"], FORECAST["function"]["parameters"])


# -- reasoning on the v13 tiny model --------------------------------------------------------

V13_MODEL = "mistralai/Ministral-3-14B-Reasoning-2512"


def test_thinking_chunks_and_whole_tool_calls(v13_server, tok):
    t = tok("v13-tekken")
    thinking = ids(t, "[THINK]", "Compare 9.11 and 9.8.", "[/THINK]", "9.8 is greater.")
    m = sdk(v13_server, vllm_xargs={"script": thinking})
    reply = m.chat.complete(model=V13_MODEL, messages=user("9.11 or 9.8?"), max_tokens=40)
    think, text = reply.choices[0].message.content
    assert isinstance(think, models.ThinkChunk) and think.thinking[0].text == "Compare 9.11 and 9.8."
    assert isinstance(text, models.TextChunk) and text.text == "9.8 is greater."
    thought, answer = "", ""
    for c in m.chat.stream(model=V13_MODEL, messages=user("9.11 or 9.8?"), max_tokens=40):
        for choice in c.data.choices:
            if isinstance(choice.delta.content, list):
                thought += "".join(p.thinking[0].text for p in choice.delta.content)
            else:
                answer += choice.delta.content or ""
    assert (thought, answer) == ("Compare 9.11 and 9.8.", "9.8 is greater.")
    # OpenAI clients keep OpenAI's shape: the reasoning field, content a string
    raw = httpx.post(v13_server.url + "/v1/chat/completions", timeout=180, json={
        "model": V13_MODEL, "messages": user("9.11 or 9.8?"), "max_tokens": 40,
        "vllm_xargs": {"script": thinking}}).json()
    assert_valid("CreateChatCompletionResponse", raw)
    assert raw["choices"][0]["message"]["reasoning"] == "Compare 9.11 and 9.8."
    call = ids(t, "[TOOL_CALLS]", "get_forecast", "[ARGS]", '{"unit": "celsius", "days": 2}')
    chunks = list(sdk(v13_server, vllm_xargs={"script": call}).chat.stream(
        model=V13_MODEL, messages=user("Forecast"), tools=[FORECAST], max_tokens=40))
    deltas = [c.data.choices[0].delta for c in chunks
              if c.data.choices and c.data.choices[0].delta.tool_calls]
    assert len(deltas) == 1 and deltas[0].tool_calls[0].function.name == "get_forecast"
    assert json.loads(deltas[0].tool_calls[0].function.arguments) == {"unit": "celsius", "days": 2}


def test_prompt_mode_reasoning_without_preset_prompt(v13_server):
    with pytest.raises(SDKError) as exc:
        sdk(v13_server).chat.complete(model=V13_MODEL, messages=user(), prompt_mode="reasoning")
    err = json.loads(exc.value.body)["error"]
    assert exc.value.status_code == 400 and err["param"] == "prompt_mode"
