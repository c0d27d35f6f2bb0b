"""The official ``anthropic`` SDK against the app over the scripted engine (uvicorn on a loopback
port in a thread: the SDK brings its own HTTP client): its own request building, response
parsing, stream accumulation and exception mapping, without the real engine."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import anthropic
import httpx
import pytest
import uvicorn

from server.app import create_app
from server.engine.fake import FakeEngine
from server.model import load_model_info
from server.settings import Settings
from server.state import ServerState
from tests.api.harness import MODEL
from tests.api.test_messages import QUESTION, WEATHER
from tests.api.test_tools import Script


@contextmanager
def sdk_server(s: Script, **settings) -> Iterator[tuple[str, FakeEngine]]:
    """The app under uvicorn; a request's ``vllm_xargs.script`` (names and text, as
    ``Script.ids`` takes them) is what the engine writes, else a fixed answer."""
    def script(prompt, sampling, index):
        parts = (sampling.extra_args or {}).get("script")
        return s.ids(*parts) if parts else s.ids("A fixed answer.")

    config = Settings(model=str(s.dir), served_model_name=MODEL, responses_store="off", **settings)
    state = ServerState(settings=config, model=load_model_info(config),
                        api_keys=config.resolved_api_keys())
    fake = FakeEngine(script)

    async def factory() -> FakeEngine:
        return fake

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(state, factory), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while state.phase != "ready" or not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", fake
    finally:
        server.should_exit = True
        thread.join(10)


def scripted(*parts: str) -> dict:
    return {"extra_body": {"vllm_xargs": {"script": list(parts)}}}


@pytest.fixture(scope="module")
def v13(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v13-tekken")
    with sdk_server(s) as (url, _):
        yield anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)


def test_create_count_and_stream(v13):
    parts = ("[THINK]", "Paris, then.", "[/THINK]", "Checking.", "[TOOL_CALLS]", "get_weather",
             "[ARGS]", '{"city": "Paris"}')
    message = v13.messages.create(model=MODEL, max_tokens=256, tools=[WEATHER], messages=QUESTION,
                                  **scripted(*parts))
    thinking, text, use = message.content
    assert (thinking.thinking, text.text, use.input) == ("Paris, then.", "Checking.", {"city": "Paris"})
    assert message.stop_reason == "tool_use" and use.id.startswith("toolu_")
    count = v13.messages.count_tokens(model=MODEL, tools=[WEATHER], messages=QUESTION)
    assert count.input_tokens == message.usage.input_tokens
    fragments = []
    with v13.messages.stream(model=MODEL, max_tokens=256, tools=[WEATHER], messages=QUESTION,
                             **scripted(*parts)) as stream:
        for event in stream:
            if event.type == "input_json":
                fragments.append(event.partial_json)
        final = stream.get_final_message()
    assert [b.model_dump(exclude={"id"}) for b in final.content] == \
        [b.model_dump(exclude={"id"}) for b in message.content]
    assert json.loads("".join(fragments)) == {"city": "Paris"}
    history = [*QUESTION, {"role": "assistant", "content": final.content},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": final.content[2].id,
                                             "content": "18 degrees"}]}]
    again = v13.messages.create(model=MODEL, max_tokens=64, tools=[WEATHER], messages=history,
                                **scripted("18 degrees in Paris."))
    assert again.content[0].text == "18 degrees in Paris."


def test_errors_are_the_sdk_exceptions(v13, tokenizer_dirs):
    with pytest.raises(anthropic.NotFoundError) as missing:
        v13.messages.create(model="claude-opus-4-1", max_tokens=8, messages=QUESTION)
    assert missing.value.type == "not_found_error" and missing.value.api_message.startswith("model: ")
    with pytest.raises(anthropic.BadRequestError) as bad:
        v13.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "file", "file_id": "file_1"}}]}])
    assert bad.value.type == "invalid_request_error"
    assert bad.value.api_message.startswith("messages.0.content.0.source.type: ")
    with pytest.raises(anthropic.BadRequestError) as in_stream:
        with v13.messages.stream(model=MODEL, max_tokens=8, messages=QUESTION, tools=[WEATHER],
                                 tool_choice={"type": "tool", "name": "nope"}) as stream:
            stream.get_final_message()
    assert in_stream.value.api_message.startswith("tool_choice.name: ")
    s = Script(tokenizer_dirs, "v3-spm")
    with sdk_server(s, api_keys=["sk-local"]) as (url, _):
        wrong = anthropic.Anthropic(base_url=url, api_key="sk-other", max_retries=0)
        with pytest.raises(anthropic.AuthenticationError) as denied:
            wrong.messages.create(model=MODEL, max_tokens=8, messages=QUESTION)
        with pytest.raises(anthropic.AuthenticationError) as models_denied:
            wrong.models.list()  # /v1/models answers an Anthropic client in its envelope
        right = anthropic.Anthropic(base_url=url, api_key="sk-local", max_retries=0)
        assert right.messages.create(model=MODEL, max_tokens=8, messages=QUESTION).content[0].text
        bearer = anthropic.Anthropic(base_url=url, auth_token="sk-local", max_retries=0)
        assert bearer.messages.count_tokens(model=MODEL, messages=QUESTION).input_tokens > 0
    assert denied.value.status_code == 401 and denied.value.type == "authentication_error"
    assert models_denied.value.type == "authentication_error"


def test_models_api_for_anthropic_clients(tokenizer_dirs):
    """The SDK's ``models.list`` / ``retrieve`` get Anthropic's Models API on /v1/models (its
    clients send anthropic-version); OpenAI's clients still get OpenAI's list there."""
    s = Script(tokenizer_dirs, "v3-spm")
    with sdk_server(s, aliases=["mistral-small", "mistral-small-latest"]) as (url, _):
        sdk = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)
        everything = list(sdk.models.list())
        first = sdk.models.list(limit=2)
        second = sdk.models.list(limit=2, after_id=first.last_id)
        before = sdk.models.list(before_id="mistral-small-latest")
        one = sdk.models.retrieve("mistral-small")
        with pytest.raises(anthropic.NotFoundError) as missing:
            sdk.models.retrieve("claude-unknown")
        with pytest.raises(anthropic.BadRequestError) as bad:
            sdk.models.list(limit=0)
        openai_style = httpx.get(f"{url}/v1/models").json()
    ids = [MODEL, "mistral-small", "mistral-small-latest"]
    assert [m.id for m in everything] == ids
    assert all(m.type == "model" and m.display_name == m.id and m.lifecycle == "active"
               and m.max_input_tokens == m.max_tokens == 4096 and m.created_at.year >= 2026
               for m in everything)  # the engine's context
    assert [m.id for m in first.data] == ids[:2] and first.has_more
    assert [m.id for m in second.data] == ids[2:] and not second.has_more
    assert [m.id for m in before.data] == ids[:2] and not before.has_more
    assert one.id == "mistral-small" and one.type == "model"
    assert missing.value.type == "not_found_error"
    assert bad.value.type == "invalid_request_error" and bad.value.api_message.startswith("limit: ")
    assert openai_style["object"] == "list" and [m["id"] for m in openai_style["data"]] == ids
