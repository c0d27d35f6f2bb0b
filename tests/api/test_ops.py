"""Operations over the in-process app: admission, timeouts, drain, metrics, request ids, logs."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time

import httpx

from server.app import create_app
from server.engine.fake import FakeEngine
from server.logs import JsonFormatter, request_id_var
from server.model import load_model_info
from server.settings import Settings
from server.state import ServerState
from tests.api.harness import MODEL, serve, sse_events, text_tokens
from tests.conftest import tokenizer_for
from tests.spec import assert_error

BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


def _setup(tokenizer_dirs, step_delay=0.02, words=30, **settings):
    directory = tokenizer_dirs["v3-spm"]
    tok = tokenizer_for(directory)
    config = Settings(model=str(directory), served_model_name=MODEL, **settings)
    state = ServerState(settings=config, model=load_model_info(config), api_keys=config.resolved_api_keys())
    fake = FakeEngine(lambda p, s, i: text_tokens(tok, "word " * words), step_delay=step_delay)

    async def factory():
        return fake

    return state, fake, create_app(state, factory), factory


def test_admission_control_429_with_retry_after(tokenizer_dirs):
    state, fake, app, factory = _setup(tokenizer_dirs, max_inflight_requests=1)

    async def run():
        await state.load(factory)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await asyncio.gather(*(c.post("/v1/chat/completions", json=BODY) for _ in range(3)))

    responses = asyncio.run(run())
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 429, 429]
    rejected = next(r for r in responses if r.status_code == 429)
    assert_error(rejected, 429, code="rate_limit_exceeded")
    assert rejected.headers["retry-after"] == "1"
    assert state.admission.inflight == 0


def test_request_timeout_aborts(tokenizer_dirs):
    state, fake, app, factory = _setup(tokenizer_dirs, step_delay=0.05, request_timeout=0.3)

    async def run():
        await state.load(factory)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            plain = await c.post("/v1/chat/completions", json=BODY)
            stream = await c.post("/v1/chat/completions", json={**BODY, "stream": True})
            return plain, stream

    plain, stream = asyncio.run(run())
    assert_error(plain, 504, code="request_timeout")
    events = sse_events(stream)
    assert events[-1] == "[DONE]" and events[-2]["error"]["code"] == "request_timeout"
    assert len(fake.aborted) == 2 and not fake.running


def test_drain_lets_in_flight_finish_and_refuses_new_work(tokenizer_dirs):
    state, fake, app, factory = _setup(tokenizer_dirs, step_delay=0.02, words=20)

    async def run():
        await state.load(factory)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            inflight = asyncio.ensure_future(c.post("/v1/chat/completions", json=BODY))
            await asyncio.sleep(0.1)
            drain = asyncio.ensure_future(state.drain(timeout=10))
            await asyncio.sleep(0.05)
            refused = await c.post("/v1/chat/completions", json=BODY)
            ready = await c.get("/ready")
            await drain
            return await inflight, refused, ready

    done, refused, ready = asyncio.run(run())
    assert done.status_code == 200 and done.json()["choices"][0]["finish_reason"] == "stop"
    assert_error(refused, 503, code="server_draining")
    assert refused.headers["retry-after"]
    assert ready.status_code == 503 and ready.json()["status"] == "draining"


def test_drain_timeout_ends_the_rest_with_an_error(tokenizer_dirs):
    state, fake, app, factory = _setup(tokenizer_dirs, step_delay=0.05, words=200)

    async def run():
        await state.load(factory)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            slow = asyncio.ensure_future(c.post("/v1/chat/completions", json=BODY))
            await asyncio.sleep(0.1)
            await state.drain(timeout=0.2)
            return await slow

    slow = asyncio.run(run())
    assert_error(slow, 503, code="server_draining")
    assert fake.aborted and not fake.running


def test_metrics_and_request_ids(tokenizer_dirs):
    directory = tokenizer_dirs["v3-spm"]
    tok = tokenizer_for(directory)
    with serve(directory, lambda p, s, i: text_tokens(tok, "ok"), api_keys=["k"]) as (client, _):
        assert_error(client.get("/metrics"), 401)
        auth = {"Authorization": "Bearer k"}
        r = client.post("/v1/chat/completions", json=BODY, headers={**auth, "X-Request-Id": "abc-123"})
        assert r.headers["x-request-id"] == "abc-123"
        assert client.post("/v1/chat/completions", json=BODY, headers=auth).headers["x-request-id"]
        text = client.get("/metrics", headers=auth).text
    for name in ("mserve:admission_rejected_total", "mserve:client_disconnects_total",
                 "mserve:requests_inflight", 'mserve:startup_phase{phase="ready"} 1.0'):
        assert name in text
    with serve(directory, lambda p, s, i: [2], api_keys=["k"], metrics_open=True) as (client, _):
        assert client.get("/metrics").status_code == 200


def test_json_log_lines_carry_request_id():
    record = logging.LogRecord("server.access", logging.INFO, __file__, 1, "POST %s %d",
                               ("/v1/chat/completions", 200), None)
    record.status = 200
    token = request_id_var.set("rid-1")
    try:
        from server.logs import _RequestIdFilter

        _RequestIdFilter().filter(record)
    finally:
        request_id_var.reset(token)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["request_id"] == "rid-1" and entry["status"] == 200
    assert entry["msg"] == "POST /v1/chat/completions 200"


def test_requests_and_bad_tool_arguments_are_counted(tokenizer_dirs):
    from server import metrics

    directory = tokenizer_dirs["v11-tekken"]
    inner = tokenizer_for(directory).instruct_tokenizer.tokenizer
    tokens = ([inner.get_special_token("[TOOL_CALLS]")] + inner.encode("f", bos=False, eos=False)
              + [inner.get_special_token("[ARGS]")] + inner.encode('{"a": tru', bos=False, eos=False)
              + [inner.eos_id])
    tools = [{"type": "function", "function": {"name": "f"}}]
    bad_before = metrics.PARSE_FAILURES._value.get()
    ok_before = metrics.REQUESTS.labels(status="200")._value.get()
    with serve(directory, lambda p, s, i: tokens) as (client, _):
        r = client.post("/v1/chat/completions", json={**BODY, "tools": tools})
    assert r.json()["choices"][0]["finish_reason"] == "tool_calls"
    assert metrics.PARSE_FAILURES._value.get() == bad_before + 1
    assert metrics.REQUESTS.labels(status="200")._value.get() == ok_before + 1


def test_not_ready_until_the_engine_is_warmed_up(tokenizer_dirs):
    class SlowWarmUp(FakeEngine):
        def __init__(self) -> None:
            super().__init__(lambda p, s, i: [])
            self.go = threading.Event()

        async def warm_up(self) -> None:
            while not self.go.is_set():
                await asyncio.sleep(0.01)
            await super().warm_up()

    engine = SlowWarmUp()
    with serve(tokenizer_dirs["v3-spm"], engine.script, engine=engine) as (client, _):
        assert client.get("/ready").status_code == 503
        assert not engine.warmed_up
        engine.go.set()
        deadline = time.monotonic() + 10
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, "never became ready"
            time.sleep(0.02)
        assert engine.warmed_up
