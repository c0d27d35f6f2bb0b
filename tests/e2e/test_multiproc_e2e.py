"""``--api-processes 2`` on the real engine: two API processes, each with its own AsyncLLM client,
over one vLLM engine core (the tiny v3 model).

The seed's chat, streaming, tool and Responses tests run here unchanged against it (they are
imported: ``tiny_server`` in this module is the two-process server). Then what makes it one
server: connections spread over both processes, a stored response continues on the other
process, ``/metrics`` totals (ours and vLLM's) equal what was sent whichever process answers,
the admission cap holds for the whole server, SIGTERM drains both, and killing the engine core
ends every process non-zero. Which process served a request comes from the JSON log lines.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.api.harness import sse_events
from tests.api.test_multiproc import one_each
from tests.e2e import test_tools_e2e as tools_e2e
from tests.e2e.conftest import MODEL, SCRIPTED, RunningServer, start_server, stop_server
from tests.e2e.test_chat_e2e import (  # noqa: F401 - collected here, on the two-process server
    test_basic_request,
    test_errors_from_the_real_server,
    test_multi_parameter_request_with_logprobs,
    test_n_and_ignore_eos_and_max_tokens,
    test_streamed_text_equals_non_streamed_at_temperature_zero,
    test_streaming_with_usage,
)
from tests.e2e.test_responses_e2e import test_text_json_stream_retrieve  # noqa: F401
from tests.e2e.test_tools_e2e import script, tokenizers  # noqa: F401 - fixture
from tests.spec import assert_error, assert_valid_response

pytestmark = pytest.mark.e2e
# one_each's connections wait idle while it opens the others: keep them past uvicorn's 5 s
TWO = ["--api-processes", "2", "--log-format", "json", "--keep-alive-timeout", "60"]


@pytest.fixture()
def tiny_server(pool) -> RunningServer:
    """The README default of tests/e2e/conftest.py, with two API processes."""
    return pool.get("tiny-v3-two-processes", ["--served-model-name", MODEL, *SCRIPTED, *TWO])


@pytest.mark.parametrize("choice", ["required", "named"])
def test_forced_calls(request, choice):
    tools_e2e.test_forced_calls_from_random_model_are_valid(request, "tiny_server", choice)


def test_openai_client_tool_loop(request, tokenizers):  # noqa: F811
    tools_e2e.test_openai_client_tool_loop(request, tokenizers, "tiny_server", "v3-spm")


# --- one server ----------------------------------------------------------------------------
def lines(server: RunningServer) -> list[dict]:
    return [json.loads(line) for line in server.log.read_text(errors="replace").splitlines()
            if line.startswith("{")]


def served_by(server: RunningServer, request_ids: list[str]) -> list[str]:
    for _ in range(50):
        seen = {e["request_id"]: e["process"] for e in lines(server)
                if e.get("logger") == "server.access" and e.get("request_id") in request_ids}
        if len(seen) == len(set(request_ids)):
            return [seen[r] for r in request_ids]
        time.sleep(0.2)
    raise AssertionError(f"no access lines for {request_ids}")


def close(connections: list[tuple[httpx.Client, str]]) -> None:
    for client, _ in connections:
        client.close()


def metrics(client: httpx.Client) -> dict[str, float]:
    totals: dict[str, float] = {}
    for line in client.get("/metrics").text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            base = name.split("{")[0]
            if name.startswith('mserve:requests_total{status="200"}'):
                base = "mserve:requests_total_200"
            totals[base] = totals.get(base, 0.0) + float(value)
    return totals


def test_both_processes_serve_one_server(tiny_server):
    connections = one_each(tiny_server.url, per_process=2)
    status = connections[0][0].get("/status").json()
    assert status["phase"] == "ready"
    assert [p["phase"] for p in status["api_processes"]] == ["ready", "ready"]
    assert all(c.get("/ready").json() == {"status": "ready"} for c, _ in connections)
    close(connections)


def test_responses_continue_on_the_other_process(tiny_server, tokenizers):  # noqa: F811
    tok = tokenizers("v3-spm")
    (a, first_process), (b, second_process) = one_each(tiny_server.url)
    first = a.post("/v1/responses", headers={"X-Request-Id": "mp-resp-1"}, json={
        "model": MODEL, "input": "Capital of France?",
        "vllm_xargs": {"script": script(tok, "Paris.")}})
    assert first.status_code == 200, first.text
    second = b.post("/v1/responses", headers={"X-Request-Id": "mp-resp-2"}, json={
        "model": MODEL, "input": "And of Italy?", "previous_response_id": first.json()["id"],
        "vllm_xargs": {"script": script(tok, "Rome.")}})
    assert second.status_code == 200, second.text
    assert_valid_response("Response", second.json())
    assert second.json()["output_text"] == "Rome."
    assert second.json()["usage"]["input_tokens"] > first.json()["usage"]["input_tokens"]
    assert served_by(tiny_server, ["mp-resp-1", "mp-resp-2"]) == [first_process, second_process]
    items = a.get(f"/v1/responses/{second.json()['id']}/input_items").json()["data"]
    assert items[0]["content"][0]["text"] == "And of Italy?"
    close([(a, ""), (b, "")])


def test_metrics_totals_equal_the_requests_sent(tiny_server):
    connections = one_each(tiny_server.url)
    before = [metrics(c) for c, _ in connections]
    prompt = completion = 0
    ids = [f"mp-count-{i}" for i in range(8)]
    for i, rid in enumerate(ids):
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi " * (i + 1)}],
                "max_tokens": 4 + i, "ignore_eos": True}
        if i % 2:
            body.update(stream=True, stream_options={"include_usage": True})
        r = connections[i % 2][0].post("/v1/chat/completions", json=body,
                                       headers={"X-Request-Id": rid})
        assert r.status_code == 200, r.text
        usage = sse_events(r)[-2]["usage"] if i % 2 else r.json()["usage"]
        prompt += usage["prompt_tokens"]
        completion += usage["completion_tokens"]
    assert sorted(set(served_by(tiny_server, ids))) == ["api-0", "api-1"]
    for _ in range(100):  # vLLM records a request's stats when its last output is processed
        after = [metrics(c) for c, _ in connections]
        if all(a["vllm:request_success_total"] - before[0]["vllm:request_success_total"] >= 8
               for a in after):
            break
        time.sleep(0.2)
    for name, sent in (("mserve:requests_total_200", 8), ("vllm:request_success_total", 8),
                       ("vllm:prompt_tokens_total", prompt),
                       ("vllm:generation_tokens_total", completion)):
        # the same whole-server count from either process: not one process's share, not doubled
        assert before[0][name] == before[1][name] and after[0][name] == after[1][name], name
        assert after[0][name] - before[0][name] == sent, (name, after[0][name], before[0][name])
    close(connections)


# --- admission and drain, on a server of their own (the drain stops it) -------------------------
@pytest.fixture(scope="module")
def capped(pool):
    pool.make_room(1)
    server = start_server("two-processes-capped", [
        "--served-model-name", MODEL, *SCRIPTED, *TWO, "--max-inflight-requests", "3",
        "--drain-timeout", "30"])
    yield server
    stop_server(server)


def test_admission_cap_holds_for_the_whole_server(capped, tmp_path):
    hold = tmp_path / "hold"  # the three admitted stay in flight until every answer is in
    hold.touch()
    connections = one_each(capped.url, per_process=4)
    codes: dict[int, int] = {}
    answered = threading.Barrier(9)
    release = threading.Event()

    def one(i: int, client: httpx.Client) -> None:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 300, "ignore_eos": True, "stream": True,
                "vllm_xargs": {"hold": str(hold), "hold_for": 3}}
        with client.stream("POST", "/v1/chat/completions", json=body,
                           headers={"X-Request-Id": f"mp-cap-{i}"}) as r:
            codes[i] = r.status_code
            answered.wait(60)
            release.wait(60)  # admitted streams stay open until every answer is in

    threads = [threading.Thread(target=one, args=(i, c)) for i, (c, _) in enumerate(connections)]
    for t in threads:
        t.start()
    answered.wait(60)
    status = connections[0][0].get("/status").json()
    hold.unlink()
    release.set()
    for t in threads:
        t.join(60)
    assert sorted(codes.values()) == [200] * 3 + [429] * 5, codes
    assert status["inflight_requests"] == 3
    assert sum(p["inflight_requests"] for p in status["api_processes"]) == 3
    assert set(served_by(capped, [f"mp-cap-{i}" for i in range(8)])) == {"api-0", "api-1"}
    rejected = sum(v for k, v in metrics(connections[0][0]).items()
                   if k == "mserve:admission_rejected_total")
    assert rejected == 5
    close(connections)


def test_sigterm_drains_every_process(capped, tmp_path):
    # both streams are held in flight (tests/e2e/scripted.py) while the draining server is
    # probed, then released: they must still end normally, inside the drain window
    hold = tmp_path / "hold"
    hold.touch()
    connections = one_each(capped.url)
    results: dict[int, list[str]] = {}
    streaming = threading.Barrier(3)

    def one(i: int, client: httpx.Client) -> None:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 300, "ignore_eos": True, "stream": True,
                "vllm_xargs": {"hold": str(hold), "hold_for": 2}}
        got: list[str] = []
        with client.stream("POST", "/v1/chat/completions", json=body) as r:
            for line in r.iter_lines():
                if len(got) == 2:
                    streaming.wait(60)
                got.append(line)
        results[i] = got

    threads = [threading.Thread(target=one, args=(i, c)) for i, (c, _) in enumerate(connections)]
    for t in threads:
        t.start()
    streaming.wait(60)  # a stream runs on each process
    os.kill(capped.process.pid, signal.SIGTERM)
    try:
        for _ in range(60):  # the supervisor forwards the signal to each API process
            phases = [p["phase"] for p in httpx.get(capped.url + "/status").json()["api_processes"]]
            if phases == ["draining", "draining"]:
                break
            time.sleep(0.5)
        ready = [c.get("/ready", timeout=10) for c, _ in connections]
        refused = httpx.post(capped.url + "/v1/chat/completions", timeout=30, json={
            "model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    finally:
        hold.unlink()
    for t in threads:
        t.join(120)
    assert capped.process.wait(60) == 0
    assert [r.json()["status"] for r in ready] == ["draining", "draining"]
    assert_error(refused, 503, code="server_draining")
    for got in results.values():
        events = sse_events("\n".join(got) + "\n")
        assert events[-1] == "[DONE]"
        assert [ch["finish_reason"] for c in events[:-1] for ch in c["choices"]
                if ch["finish_reason"]] == ["length"]
    assert [e for e in lines(capped) if e["level"] == "error"] == []


# --- last: the engine core dies (ends the module's pool server) ----------------------------------
def _children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
            for c in (task / "children").read_text().split()]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] not in ("Z", "X")
    except FileNotFoundError:
        return False


def test_killing_the_engine_core_ends_every_process(tiny_server, tmp_path):
    hold = tmp_path / "hold"  # both streams are still in flight when the core dies
    hold.touch()
    api = [p["pid"] for p in httpx.get(tiny_server.url + "/status").json()["api_processes"]]
    (core,) = [c for c in _children(tiny_server.process.pid)
               if b"EngineCore" in Path(f"/proc/{c}/cmdline").read_bytes()]
    connections = one_each(tiny_server.url)
    results: dict[int, list[str]] = {}
    streaming = threading.Barrier(3)

    def one(i: int, client: httpx.Client) -> None:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 300, "ignore_eos": True, "stream": True,
                "vllm_xargs": {"hold": str(hold), "hold_for": 2}}
        got: list[str] = []
        try:
            with client.stream("POST", "/v1/chat/completions", json=body) as r:
                for line in r.iter_lines():
                    if len(got) == 2:
                        streaming.wait(60)
                    got.append(line)
        except httpx.HTTPError as exc:
            got.append(f"closed: {exc!r}")
        results[i] = got

    threads = [threading.Thread(target=one, args=(i, c)) for i, (c, _) in enumerate(connections)]
    for t in threads:
        t.start()
    streaming.wait(60)
    os.kill(core, signal.SIGKILL)
    for t in threads:
        t.join(60)
    assert tiny_server.process.wait(60) == 3
    assert not any(_alive(pid) for pid in api)
    for got in results.values():  # each stream ends with an error event, not a hang
        events = sse_events("\n".join(got) + "\n")
        assert events[-1] == "[DONE]" and events[-2]["error"]["code"] == "engine_error", events[-2:]
    ours = [e for e in lines(tiny_server) if e["level"] == "error" and e["logger"].startswith("server")]
    assert len(ours) == 1 and "engine core" in ours[0]["msg"], ours
    exits = [e["msg"] for e in lines(tiny_server) if e["msg"].startswith("API process ApiServer_")]
    assert len(exits) == 2 and all(m.endswith("exited with code 3") for m in exits), exits
