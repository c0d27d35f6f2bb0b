"""Auth, models, health and readiness, and client disconnects."""

from __future__ import annotations

import asyncio
import json

from server.engine.fake import FakeEngine
from tests.api.harness import MODEL, serve, text_tokens
from tests.conftest import tokenizer_for
from tests.spec import assert_error, assert_valid

OK = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


def test_api_keys_guard_v1_routes_only(tokenizer_dirs, tmp_path):
    directory = tokenizer_dirs["v3-spm"]
    tok = tokenizer_for(directory)
    key_file = tmp_path / "keys"
    key_file.write_text("file-key\n")
    with serve(directory, lambda p, s, i: text_tokens(tok, "x"), api_keys=["env-key"],
               api_key_file=key_file) as (client, _):
        assert_error(client.post("/v1/chat/completions", json=OK), 401, code="invalid_api_key")
        assert_error(client.get("/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
        for key in ("env-key", "file-key"):
            r = client.post("/v1/chat/completions", json=OK, headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 200


def test_models_list_and_get(tokenizer_dirs):
    directory = tokenizer_dirs["v3-spm"]
    with serve(directory, lambda p, s, i: [2], aliases=["mistral-7b"]) as (client, _):
        listing = client.get("/v1/models").json()
        assert_valid("ListModelsResponse", listing)
        assert [m["id"] for m in listing["data"]] == [MODEL, "mistral-7b"]
        assert client.get(f"/v1/models/{MODEL}").json()["id"] == MODEL
        assert_error(client.get("/v1/models/nope"), 404, code="model_not_found")
        r = client.post("/v1/chat/completions", json={**OK, "model": "mistral-7b"})
        assert r.status_code == 200 and r.json()["model"] == MODEL


def test_readiness_and_loading_answers(tokenizer_dirs):
    directory = tokenizer_dirs["v3-spm"]
    gate = asyncio.Event()
    from fastapi.testclient import TestClient

    from server.app import create_app
    from server.model import load_model_info
    from server.settings import Settings
    from server.state import ServerState

    settings = Settings(model=str(directory), served_model_name=MODEL)
    state = ServerState(settings=settings, model=load_model_info(settings), api_keys=[])
    fake = FakeEngine(lambda p, s, i: [2])

    async def factory():
        await gate.wait()
        return fake

    with TestClient(create_app(state, factory)) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 503
        r = client.post("/v1/chat/completions", json=OK)
        assert_error(r, 503, code="model_loading")
        assert r.headers["retry-after"]
        client.portal.call(gate.set)
        for _ in range(100):
            if client.get("/ready").status_code == 200:
                break
        assert client.get("/ready").status_code == 200
        assert client.get("/status").json()["phase"] == "ready"


def test_client_disconnect_aborts_engine_request(tokenizer_dirs):
    """A raw ASGI client that leaves after the first streamed bytes."""
    directory = tokenizer_dirs["v3-spm"]
    tok = tokenizer_for(directory)
    from server.app import create_app
    from server.model import load_model_info
    from server.settings import Settings
    from server.state import ServerState

    settings = Settings(model=str(directory), served_model_name=MODEL)
    state = ServerState(settings=settings, model=load_model_info(settings), api_keys=[])
    fake = FakeEngine(lambda p, s, i: text_tokens(tok, "word " * 200), step_delay=0.01)

    async def factory():
        return fake

    app = create_app(state, factory)

    async def run(stream: bool) -> None:
        await state.load(factory)
        body = json.dumps({**OK, "stream": stream}).encode()
        sent_first = asyncio.Event()
        delivered = False

        async def receive():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            if stream:
                await sent_first.wait()
            else:
                await asyncio.sleep(0.1)
            return {"type": "http.disconnect"}

        async def send(message):
            if message["type"] == "http.response.body" and message.get("body"):
                sent_first.set()

        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
                 "raw_path": b"/v1/chat/completions", "query_string": b"", "root_path": "",
                 "headers": [(b"content-type", b"application/json")], "scheme": "http",
                 "server": ("test", 80), "client": ("test", 1), "http_version": "1.1",
                 "asgi": {"version": "3.0"}}
        await asyncio.wait_for(app(scope, receive, send), timeout=10)
        for _ in range(100):
            if not fake.running:
                break
            await asyncio.sleep(0.02)

    asyncio.run(run(stream=True))
    assert len(fake.aborted) == 1 and not fake.running
    asyncio.run(run(stream=False))
    assert len(fake.aborted) == 2 and not fake.running
    assert not fake.finished
