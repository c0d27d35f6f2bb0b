"""``/v1/messages`` errors in Anthropic's envelope, every type: bad fields (a 400 whose message
leads with the field's path), keys, unknown models and routes, body limit, admission, loading,
engine failure before and during a stream, timeouts; images; pings while the output waits."""

from __future__ import annotations

import asyncio
import base64

import httpx
import pytest

from server.anthropic import service as messages_service
from server.app import create_app
from server.engine.fake import FakeEngine
from server.model import load_model_info
from server.settings import Settings
from server.state import ServerState
from tests.anthropic_spec import assert_count, assert_error, assert_message, stream_events
from tests.api.harness import MODEL, serve
from tests.api.test_images import picture, vision_dir
from tests.api.test_messages import QUESTION, WEATHER, create
from tests.api.test_tools import Script

USE = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
RESULT = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18"}


@pytest.fixture(scope="module")
def client(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v7-tekken")
    with serve(s.dir, lambda p, sp, i: s.ids("Hello."), max_model_len=1024) as (c, _):
        yield c


BAD = [
    ({"max_tokens": None}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": "10"}, "max_tokens"),
    ({"model": ""}, "model"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
    ({"messages": [{"role": "user"}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages.0.content.0.text"),
    ({"messages": [{"role": "user", "content": [{"type": "video", "url": "x"}]}]}, "messages.0.content.0.type"),
    ({"messages": [{"role": "user", "content": [{"text": "no type"}]}]}, "messages.0.content.0.type"),
    ({"messages": [{"role": "user", "content": [RESULT]}]}, "messages.0.content.0.tool_use_id"),
    ({"messages": [*QUESTION, {"role": "assistant", "content": [USE]},
                   {"role": "user", "content": "no result"}]}, "messages.2"),
    ({"messages": [*QUESTION, {"role": "assistant", "content": [USE]}]}, "messages.1"),
    ({"messages": [*QUESTION, {"role": "assistant", "content": [{**USE, "input": "x"}]}]},
     "messages.1.content.0.input"),
    ({"messages": [{"role": "user", "content": [USE]}]}, "messages.0.content.0.type"),
    ({"messages": [*QUESTION, {"role": "assistant", "content": [USE, USE]}]}, "messages.1.content.1.id"),
    ({"messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}}]}]},
     "messages.0.content.0.source.type"),
    ({"system": 5}, "system"),
    ({"system": [{"type": "image"}]}, "system.0.type"),
    ({"temperature": 1.5}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_k": -1}, "top_k"),
    ({"stream": "yes"}, "stream"),
    ({"stop_sequences": [""]}, "stop_sequences"),
    ({"metadata": {"user_id": 7}}, "metadata.user_id"),
    ({"tools": [{"name": "get_weather"}]}, "tools.0.input_schema"),
    ({"tools": [{**WEATHER, "name": "bad name!"}]}, "tools.0.name"),
    ({"tools": [{**WEATHER, "input_schema": {"type": "object", "properties": 5}}]}, "tools.0.input_schema"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0.type"),
    ({"tools": [WEATHER, WEATHER]}, "tools.1.name"),
    ({"tools": [WEATHER], "tool_choice": {"type": "tool"}}, "tool_choice.name"),
    ({"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "nope"}}, "tool_choice.name"),
    ({"tools": [WEATHER], "tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
    ({"tool_choice": {"type": "any"}}, "tool_choice.type"),
    ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens"),
    ({"thinking": {"type": "enabled", "budget_tokens": 100}}, "thinking.budget_tokens"),
    ({"thinking": {"type": "enabled", "budget_tokens": 2048}, "max_tokens": 1024}, "thinking.budget_tokens"),
    ({"thinking": {"type": "sometimes"}}, "thinking.type"),
    ({"output_config": {"format": {"type": "json_schema", "schema": {"type": "nope"}}}},
     "output_config.format.schema"),
    ({"mcp_servers": [{"type": "url", "url": "https://example.com", "name": "x"}]}, "mcp_servers"),
]


@pytest.mark.parametrize("patch, param", BAD)
def test_bad_fields_are_400_naming_the_field(client, patch, param):
    body = {"model": MODEL, "max_tokens": 64, "messages": QUESTION, **patch}
    body = {k: v for k, v in body.items() if v is not None}
    assert_error(client.post("/v1/messages", json=body), 400, param)
    if "max_tokens" not in patch and "stream" not in patch:  # count_tokens reads the same fields
        assert_error(client.post("/v1/messages/count_tokens", json=body), 400, param)


def test_body_route_and_model_errors(client):
    assert_error(client.post("/v1/messages", content=b"{nope"), 400)
    assert_error(client.post("/v1/messages", json=[1, 2]), 400)
    message = assert_error(create(client, model="claude-opus-4-1"), 404, "model")
    assert "claude-opus-4-1" in message
    assert_error(client.post("/v1/messages/batches", json={}), 404)
    r = client.get("/v1/messages")
    assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error"
    assert_error(client.post("/v1/messages", content=b"x" * (64 * 1024 * 1024 + 1)), 413)


def test_prompt_too_long_reads_like_anthropic(client):
    r = create(client, messages=[{"role": "user", "content": "word " * 3000}])
    message = assert_error(r, 400)
    assert message.startswith("prompt is too long: ") and message.endswith(" tokens > 1024 maximum"), message
    assert_error(client.post("/v1/messages/count_tokens", json={
        "model": MODEL, "messages": [{"role": "user", "content": "word " * 3000}]}), 400)


def test_api_keys_x_api_key_or_bearer(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v3-spm")
    with serve(s.dir, lambda p, sp, i: s.ids("Hi."), api_keys=["sk-local"]) as (client, _):
        missing = create(client)
        wrong = client.post("/v1/messages", headers={"x-api-key": "sk-other"},
                            json={"model": MODEL, "max_tokens": 8, "messages": QUESTION})
        keyed = client.post("/v1/messages", headers={"x-api-key": "sk-local"},
                            json={"model": MODEL, "max_tokens": 8, "messages": QUESTION})
        bearer = client.post("/v1/messages/count_tokens", headers={"Authorization": "Bearer sk-local"},
                             json={"model": MODEL, "messages": QUESTION})
    assert_error(missing, 401)
    assert_error(wrong, 401)
    assert_message(keyed.json())
    assert_count(bearer.json())


def _state(tokenizer_dirs, engine: FakeEngine, **settings) -> tuple[ServerState, object]:
    directory = tokenizer_dirs["v3-spm"]
    config = Settings(model=str(directory), served_model_name=MODEL, responses_store="off", **settings)
    state = ServerState(settings=config, model=load_model_info(config), api_keys=[])
    return state, create_app(state, lambda: _ready(engine))


async def _ready(engine: FakeEngine) -> FakeEngine:
    return engine


def test_overload_loading_engine_failure_and_timeout(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v3-spm")
    words = s.ids("word " * 30)
    body = {"model": MODEL, "max_tokens": 64, "messages": QUESTION}

    def run(engine, bodies, load=True, **settings):
        state, app = _state(tokenizer_dirs, engine, **settings)

        async def go():
            if load:
                await state.load(lambda: _ready(engine))
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                return await asyncio.gather(*(c.post("/v1/messages", json=b) for b in bodies))
        return asyncio.run(go())

    busy = run(FakeEngine(lambda p, sp, i: words, step_delay=0.02), [body] * 3, max_inflight_requests=1)
    assert sorted(r.status_code for r in busy) == [200, 429, 429]
    assert_error(next(r for r in busy if r.status_code == 429), 429)
    (loading,) = run(FakeEngine(lambda p, sp, i: words), [body], load=False)
    assert_error(loading, 503)
    assert loading.headers["retry-after"] == "5"
    failing = FakeEngine(lambda p, sp, i: words, fail_after=3)
    plain, streamed = run(failing, [body, {**body, "stream": True}])
    assert_error(plain, 500)
    events = stream_events(streamed)
    assert [e["type"] for e in events][:2] == ["message_start", "ping"]
    assert events[-1]["type"] == "error" and events[-1]["error"]["type"] == "api_error"
    assert "message_stop" not in [e["type"] for e in events]
    slow = FakeEngine(lambda p, sp, i: words, step_delay=0.05)
    timed_out, timed_stream = run(slow, [body, {**body, "stream": True}], request_timeout=0.3)
    assert_error(timed_out, 504)
    assert stream_events(timed_stream)[-1]["error"]["type"] == "timeout_error"


class _SlowStart(FakeEngine):
    """The first step comes late (a long prefill); the rest at once."""

    async def generate(self, prompt_token_ids, sampling, request_id, *, images=()):
        await asyncio.sleep(0.5)
        async for batch in super().generate(prompt_token_ids, sampling, request_id, images=images):
            yield batch


def test_pings_while_the_output_has_not_started(tokenizer_dirs, monkeypatch):
    monkeypatch.setattr(messages_service, "FIRST_STEP_WAIT", 0.05)
    monkeypatch.setattr(messages_service, "PING_INTERVAL", 0.05)
    s = Script(tokenizer_dirs, "v3-spm")
    engine = _SlowStart(lambda p, sp, i: s.ids("Late but here."))
    with serve(s.dir, engine.script, engine=engine) as (client, _):
        events = stream_events(create(client, stream=True))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "message_start" and kinds.count("ping") >= 2
    first_block = kinds.index("content_block_start")
    assert set(kinds[1:first_block]) == {"ping"} and "ping" not in kinds[first_block:]
    assert kinds[-1] == "message_stop"


def test_images_in_messages_and_tool_results(tmp_path, tokenizer_dirs):
    directory = vision_dir(tmp_path / "v11-vision", "v11-tekken")
    s = Script(tokenizer_dirs, "v11-tekken")
    png = base64.b64encode(picture(1)).decode()
    jpeg = base64.b64encode(picture(2, fmt="JPEG")).decode()
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}}
    history = [{"role": "user", "content": [{"type": "text", "text": "Two pictures."}, image]},
               {"role": "assistant", "content": [{**USE, "name": "screenshot", "input": {}}]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [
                   {"type": "text", "text": "taken"},
                   {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": jpeg}}]}]}]
    tools = [{"name": "screenshot", "input_schema": {"type": "object", "properties": {}}}]
    with serve(directory, lambda p, sp, i: s.ids("Two.")) as (client, fake):
        r = create(client, messages=history, tools=tools)
        images = next(iter(fake.images.values()))
        count = client.post("/v1/messages/count_tokens", json={"model": MODEL, "messages": history, "tools": tools})
        url = create(client, messages=[{"role": "user", "content": [
            image, {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]}])
        file_ = create(client, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "file", "file_id": "file_1"}}]}])
        bad_type = create(client, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/tiff", "data": png}}]}])
        bad_data = create(client, messages=[{"role": "user", "content": [
            {"type": "text", "text": "x"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "bm90IGFuIGltYWdl"}}]}])
    assert_message(r.json())
    assert len(images) == 2
    assert assert_count(count.json()) == r.json()["usage"]["input_tokens"]
    assert_error(url, 400, "messages.0.content.1.source.url")
    assert_error(file_, 400, "messages.0.content.0.source.type")
    assert_error(bad_type, 400, "messages.0.content.0.source.media_type")
    assert_error(bad_data, 400, "messages.0.content.1")
    s7 = Script(tokenizer_dirs, "v7-tekken")
    with serve(s7.dir, lambda p, sp, i: s7.ids("No.")) as (client, _):
        assert_error(create(client, messages=history[:1]), 400, "messages.0.content.1")
