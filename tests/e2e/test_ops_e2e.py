"""Operations against a real server process: startup, admission, disconnects, metrics, drain.

The drain test stops the server, so it runs last in this module.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.e2e.conftest import (
    CACHE,
    KV_CACHE_GIB,
    ROOT,
    SCRIPTED,
    RunningServer,
    free_port,
    stop_server,
)
from tests.spec import assert_error

pytestmark = pytest.mark.e2e
MODEL = "ops-tiny"


@pytest.fixture(scope="module")
def ops(pool):
    """A server started here so its startup can be watched: /ready and inference while loading."""
    pool.make_room(1)  # it counts against the servers that may run at once
    port = free_port()
    log = CACHE / "e2e-ops.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": KV_CACHE_GIB, "MSERVE_CACHE_DIR": str(CACHE)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(port),
         "--served-model-name", MODEL, "--max-inflight-requests", "2", "--drain-timeout", "20",
         "--log-format", "json", *SCRIPTED],
        cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    server = RunningServer(f"http://127.0.0.1:{port}", proc, log)
    seen: list[tuple[int, str | None]] = []
    deadline = time.monotonic() + 420
    while time.monotonic() < deadline:
        assert proc.poll() is None, server.log_tail()
        try:
            ready = httpx.get(server.url + "/ready", timeout=2)
        except httpx.HTTPError:
            time.sleep(0.5)
            continue
        code = None
        if ready.status_code == 503:
            chat = httpx.post(server.url + "/v1/chat/completions", timeout=10,
                              json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
            code = chat.json()["error"]["code"] if chat.status_code == 503 else str(chat.status_code)
        seen.append((ready.status_code, code))
        if ready.status_code == 200:
            break
        time.sleep(1)
    server.startup = seen  # type: ignore[attr-defined]
    yield server
    stop_server(server)


def chat(server, **extra):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, **extra}
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120)


def metric(server, name: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    values = [float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)]
    return sum(values)


def test_http_up_before_engine_then_ready(ops):
    assert ops.startup[0][0] == 503, ops.startup
    assert ("model_loading" in {code for _, code in ops.startup}), ops.startup
    assert ops.startup[-1][0] == 200
    status = httpx.get(ops.url + "/status").json()
    assert status["phase"] == "ready" and status["load_time_s"] > 0


def test_admission_429_under_burst(ops, tmp_path):
    hold = tmp_path / "hold"  # the admitted requests stay in flight until it is deleted
    hold.touch()
    results: list[httpx.Response] = []

    def one():
        results.append(chat(ops, max_tokens=16, ignore_eos=True, vllm_xargs={"hold": str(hold)}))

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(results) < 4 and time.monotonic() < deadline:  # the four beyond the cap of 2
        time.sleep(0.05)
    hold.unlink()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in results)
    assert codes == [200] * 2 + [429] * 4, codes
    rejected = next(r for r in results if r.status_code == 429)
    assert_error(rejected, 429, code="rate_limit_exceeded")
    assert rejected.headers["retry-after"]
    assert metric(ops, "mserve:admission_rejected_total") >= 1


def test_disconnect_aborts_engine_request(ops):
    before = metric(ops, "mserve:client_disconnects_total")
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3000,
            "ignore_eos": True, "stream": True}
    with httpx.stream("POST", ops.url + "/v1/chat/completions", json=body, timeout=60) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i > 10:
                break
    for _ in range(100):
        if metric(ops, "vllm:num_requests_running") == 0 and \
                metric(ops, "mserve:client_disconnects_total") > before:
            break
        time.sleep(0.2)
    assert metric(ops, "vllm:num_requests_running") == 0
    assert metric(ops, "mserve:client_disconnects_total") > before
    assert chat(ops).status_code == 200


def test_metrics_names(ops):
    text = httpx.get(ops.url + "/metrics").text
    for name in ("vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
                 "vllm:e2e_request_latency_seconds", "vllm:num_requests_running",
                 "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                 "mserve:admission_rejected_total", "mserve:client_disconnects_total",
                 "mserve:startup_phase", "mserve:requests_inflight"):
        assert name in text, name


def test_json_logs_with_request_id(ops):
    r = chat(ops, max_tokens=2)
    rid = r.headers["x-request-id"]
    for _ in range(100):  # the access line is written once the response is sent
        lines = [json.loads(x) for x in ops.log.read_text().splitlines() if x.startswith("{")]
        access = [e for e in lines if e.get("logger") == "server.access" and e.get("request_id") == rid]
        if access:
            break
        time.sleep(0.1)
    assert access and access[0]["status"] == 200 and "duration_ms" in access[0]
    assert "hi" not in json.dumps(access[0])  # no prompt text unless log_prompts


def test_sigterm_drains_a_stream_in_flight(ops, tmp_path):
    # the stream is held in flight (tests/e2e/scripted.py) while the draining server is probed,
    # then released: it must still end normally, inside the 20 s drain window
    hold = tmp_path / "hold"
    hold.touch()
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 300,
            "ignore_eos": True, "stream": True, "vllm_xargs": {"hold": str(hold)}}
    result: dict = {"lines": []}
    started = threading.Event()

    def consume():
        try:
            with httpx.stream("POST", ops.url + "/v1/chat/completions", json=body, timeout=120) as r:
                result["status"] = r.status_code
                for line in r.iter_lines():
                    result["lines"].append(line)
                    if line.startswith("data:"):
                        started.set()
        finally:
            started.set()

    t = threading.Thread(target=consume)
    t.start()
    assert started.wait(60), "the stream never started"
    assert result.get("status") == 200 and t.is_alive(), result
    os.kill(ops.process.pid, signal.SIGTERM)
    try:
        for _ in range(60):
            ready = httpx.get(ops.url + "/ready", timeout=5)
            if ready.status_code == 503:
                break
            time.sleep(0.5)
        refused = chat(ops)
    finally:
        hold.unlink()
    t.join(120)
    assert ready.status_code == 503
    assert_error(refused, 503, code="server_draining")
    events = [json.loads(x[5:]) if x[5:].strip() != "[DONE]" else "[DONE]"
              for x in result["lines"] if x.startswith("data:")]
    assert events[-1] == "[DONE]"
    finishes = [ch["finish_reason"] for c in events[:-1] if "choices" in c for ch in c["choices"] if ch["finish_reason"]]
    assert finishes == ["length"], events[-3:]
    assert ops.process.wait(60) == 0
    drain_lines = [e for e in (json.loads(x) for x in ops.log.read_text().splitlines()
                               if x.startswith("{"))
                   if e.get("msg", "").startswith(("draining:", "drained"))]
    # not attributed to whichever request the signal happened to interrupt
    assert len(drain_lines) == 2 and not any("request_id" in e for e in drain_lines), drain_lines
