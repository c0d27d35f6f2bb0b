"""Two API processes under the real supervisor, over a stand-in engine core (tests/api/fake_cluster.py).

What an operator of one server sees, whichever process a connection lands on: both processes
serve; admission limits, /metrics, /ready and /status are the whole server's; a conversation
stored by one process continues on the other; SIGTERM drains both; an engine core or an API
process that dies ends every process, non-zero, with the reason logged once. Which process
served a request is read from the JSON log lines (each carries its process and request id).
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.api.harness import MODEL, sse_events
from tests.spec import assert_error, assert_valid_response

ROOT = Path(__file__).resolve().parents[2]
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Cluster:
    url: str
    process: subprocess.Popen
    log: Path

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()
                if line.startswith("{")]

    def served_by(self, request_ids: list[str]) -> list[str]:
        """The process that logged each request's access line (waits for the lines)."""
        for _ in range(50):
            seen = {e["request_id"]: e["process"] for e in self.lines()
                    if e.get("logger") == "server.access" and e.get("request_id") in request_ids}
            if len(seen) == len(set(request_ids)):
                return [seen[r] for r in request_ids]
            time.sleep(0.1)
        raise AssertionError(f"no access lines for {request_ids}")

    def errors(self) -> list[dict]:
        return [e for e in self.lines() if e["level"] == "error"]

    def status(self) -> dict:
        return httpx.get(self.url + "/status", timeout=10).json()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp: Path, name: str, tokenizer_dirs, *extra: str, env: dict | None = None) -> Cluster:
    port = free_port()
    log = tmp / f"{name}.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.api.fake_cluster", "--model", str(tokenizer_dirs["v3-spm"]),
         "--served-model-name", MODEL, "--host", "127.0.0.1", "--port", str(port),
         "--api-processes", "2", "--log-format", "json", "--cache-dir", str(tmp / name),
         "--drain-timeout", "20", *extra],
        cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    return Cluster(f"http://127.0.0.1:{port}", proc, log)


def start(tmp: Path, name: str, tokenizer_dirs, *extra: str) -> Cluster:
    cluster = launch(tmp, name, tokenizer_dirs, *extra)
    proc, log = cluster.process, cluster.log
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(cluster.url + "/ready", timeout=2).status_code == 200:
                return cluster
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop(cluster)
    raise AssertionError(f"not ready:\n{log.read_text()[-3000:]}")


def stop(cluster: Cluster) -> None:
    if cluster.process.poll() is None:
        os.killpg(cluster.process.pid, signal.SIGKILL)
        cluster.process.wait(10)


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tokenizer_dirs) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("cluster")
    # connections opened by one_each wait idle while the others are opened: past uvicorn's 5 s
    # on a busy machine, and the server would close them under the test's next request
    server = start(tmp, "main", tokenizer_dirs, "--max-inflight-requests", "3",
                   "--keep-alive-timeout", "60")
    yield server
    stop(server)


def one_each(url: str, per_process: int = 1, processes: int = 2) -> list[tuple[httpx.Client, str]]:
    """Open connections (kept open) until each API process holds ``per_process`` of them; the
    connections and the process each landed on, process by process. A new connection goes to the
    process with fewer open ones unless that one is too busy to take it within a few
    milliseconds (this shared 2-core machine is often that busy), so a few may be spare."""
    kept: dict[str, list[httpx.Client]] = {}
    spare: list[httpx.Client] = []
    for _ in range(10 * per_process * processes):
        client = httpx.Client(base_url=url, timeout=180)
        name = f"api-{client.get('/status').json()['api_process']}"
        (kept.setdefault(name, []) if len(kept.get(name, [])) < per_process else spare).append(client)
        if len(kept) == processes and all(len(c) == per_process for c in kept.values()):
            break
    for client in spare:
        client.close()
    assert sorted(len(c) for c in kept.values()) == [per_process] * processes, kept
    return [(client, name) for name in sorted(kept) for client in kept[name]]


def test_both_processes_serve_and_report_the_server(cluster):
    connections = one_each(cluster.url)
    status = connections[0][0].get("/status").json()
    assert status["phase"] == "ready" and status["inflight_requests"] == 0
    assert [p["phase"] for p in status["api_processes"]] == ["ready", "ready"]
    assert all(p["pid"] > 0 for p in status["api_processes"])
    for client, _ in connections:
        assert client.get("/ready").json() == {"status": "ready"}
        client.close()
    processes = {e.get("process") for e in cluster.lines()}
    assert {"supervisor", "api-0", "api-1"} <= processes


def test_idle_connections_stay_open_for_keep_alive_timeout(cluster):
    def local_port(response: httpx.Response) -> int:
        return response.extensions["network_stream"].get_extra_info("socket").getsockname()[1]

    with httpx.Client(base_url=cluster.url, limits=httpx.Limits(keepalive_expiry=60)) as client:
        first = local_port(client.get("/ready"))
        time.sleep(6)  # past the 5 s default: the server closes idle connections at 60 s here
        assert local_port(client.get("/ready")) == first


def test_admission_cap_holds_for_the_whole_server(cluster):
    before = metric(httpx.get(cluster.url + "/metrics").text, "mserve:admission_rejected_total")
    connections = one_each(cluster.url, per_process=4)
    results: dict[int, int] = {}
    answered = threading.Barrier(9)
    release = threading.Event()

    def one(i: int, client: httpx.Client) -> None:
        body = {**BODY, "stream": True}
        with client.stream("POST", "/v1/chat/completions", json=body,
                           headers={"X-Request-Id": f"cap-{i}"}) as r:
            results[i] = r.status_code
            answered.wait(30)
            release.wait(30)  # admitted streams stay open until every answer is in

    threads = [threading.Thread(target=one, args=(i, c)) for i, (c, _) in enumerate(connections)]
    for t in threads:
        t.start()
    answered.wait(30)
    inflight = cluster.status()["inflight_requests"]
    release.set()
    for t in threads:
        t.join(30)
    codes = [results[i] for i in range(8)]
    assert sorted(codes) == [200] * 3 + [429] * 5, codes
    assert inflight == 3
    assert set(cluster.served_by([f"cap-{i}" for i in range(8)])) == {"api-0", "api-1"}
    after = metric(httpx.get(cluster.url + "/metrics").text, "mserve:admission_rejected_total")
    assert after - before == 5
    for client, _ in connections:
        client.close()


def test_metrics_totals_are_the_requests_sent(cluster):
    def totals(client: httpx.Client) -> tuple[float, float]:
        text = client.get("/metrics").text
        return (metric(text, 'mserve:requests_total{status="200"}'),
                metric(text, "mserve:requests_inflight"))

    connections = one_each(cluster.url)
    before = [totals(c) for c, _ in connections]
    ids = [f"count-{i}" for i in range(10)]
    for i, rid in enumerate(ids):
        client = connections[i % 2][0]
        assert client.post("/v1/chat/completions", json=BODY, headers={"X-Request-Id": rid}).status_code == 200
    assert sorted(set(cluster.served_by(ids))) == ["api-0", "api-1"]
    after = [totals(c) for c, _ in connections]
    assert before[0] == before[1] and after[0] == after[1]  # one server, whichever process asks
    assert after[0][0] - before[0][0] == 10 and after[0][1] == 0
    for client, _ in connections:
        client.close()


def test_a_stored_response_continues_on_the_other_process(cluster):
    connections = one_each(cluster.url)
    (first_client, first_process), (second_client, second_process) = connections
    first = first_client.post("/v1/responses", json={"model": MODEL, "input": "Hello"},
                              headers={"X-Request-Id": "resp-1"})
    assert first.status_code == 200, first.text
    assert_valid_response("Response", first.json())
    second = second_client.post("/v1/responses", headers={"X-Request-Id": "resp-2"}, json={
        "model": MODEL, "input": "And then?", "previous_response_id": first.json()["id"]})
    assert second.status_code == 200, second.text
    assert second.json()["usage"]["input_tokens"] > first.json()["usage"]["input_tokens"]
    assert cluster.served_by(["resp-1", "resp-2"]) == [first_process, second_process]
    got = second_client.get(f"/v1/responses/{second.json()['id']}")
    assert got.json() == second.json()
    for client, _ in connections:
        client.close()


def test_sigterm_drains_every_process(cluster):
    connections = one_each(cluster.url)
    results: dict[int, list] = {}
    streaming = threading.Barrier(3)

    def one(i: int, client: httpx.Client) -> None:
        with client.stream("POST", "/v1/chat/completions", json={**BODY, "stream": True},
                           headers={"X-Request-Id": f"drain-{i}"}) as r:
            lines = []
            for line in r.iter_lines():
                if len(lines) == 2:
                    streaming.wait(30)
                lines.append(line)
            results[i] = lines

    threads = [threading.Thread(target=one, args=(i, c)) for i, (c, _) in enumerate(connections)]
    for t in threads:
        t.start()
    streaming.wait(30)  # a stream is running on each process
    os.kill(cluster.process.pid, signal.SIGTERM)
    time.sleep(0.5)
    ready = [c.get("/ready") for c, _ in connections]
    refused = httpx.post(cluster.url + "/v1/chat/completions", json=BODY, timeout=10)
    for t in threads:
        t.join(30)
    assert cluster.process.wait(30) == 0
    assert [r.json()["status"] for r in ready] == ["draining", "draining"]
    assert_error(refused, 503, code="server_draining")
    assert sorted(cluster.served_by(["drain-0", "drain-1"])) == ["api-0", "api-1"]
    for lines in results.values():
        events = sse_events("\n".join(lines) + "\n")
        assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"] == "stop"
    assert cluster.errors() == []


def _children(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return children


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] not in ("Z", "X")
    except FileNotFoundError:
        return False


def _streams(cluster: Cluster, count: int) -> tuple[list[threading.Thread], dict[int, list[str]]]:
    """One stream running on each of ``count`` connections (alternating processes)."""
    results: dict[int, list[str]] = {}
    started = threading.Barrier(count + 1)

    def one(i: int, client: httpx.Client) -> None:
        lines: list[str] = []
        try:
            with client.stream("POST", "/v1/chat/completions", json={**BODY, "stream": True}) as r:
                for line in r.iter_lines():
                    if len(lines) == 2:
                        started.wait(30)
                    lines.append(line)
        except httpx.HTTPError as exc:
            lines.append(f"closed: {exc!r}")
        results[i] = lines

    threads = [threading.Thread(target=one, args=(i, c))
               for i, (c, _) in enumerate(one_each(cluster.url, per_process=count // 2))]
    for t in threads:
        t.start()
    started.wait(30)
    return threads, results


def test_engine_core_death_ends_every_process(tmp_path, tokenizer_dirs):
    cluster = start(tmp_path, "engine-dies", tokenizer_dirs)
    try:
        api = [p["pid"] for p in cluster.status()["api_processes"]]
        (core,) = [c for c in _children(cluster.process.pid)
                   if b"EngineCore" in Path(f"/proc/{c}/cmdline").read_bytes()]
        threads, results = _streams(cluster, 2)
        os.kill(core, signal.SIGKILL)
        for t in threads:
            t.join(30)
        assert cluster.process.wait(30) == 3
        assert not any(_alive(pid) for pid in api)
        for lines in results.values():  # each stream ends with an error event, not a hang
            events = sse_events("\n".join(lines) + "\n")
            assert events[-1] == "[DONE]" and events[-2]["error"]["code"] == "engine_error"
        (reason,) = cluster.errors()
        assert "engine core" in reason["msg"] and reason["process"] == "supervisor"
        exits = [e["msg"] for e in cluster.lines() if "exited with code" in e["msg"]
                 and e["msg"].startswith("API process")]
        assert len(exits) == 2 and all("code 0" not in m for m in exits), exits
    finally:
        stop(cluster)


def test_api_process_death_drains_the_other_and_fails_the_server(tmp_path, tokenizer_dirs):
    cluster = start(tmp_path, "api-dies", tokenizer_dirs)
    try:
        threads, results = _streams(cluster, 2)
        victim, survivor = cluster.status()["api_processes"]
        os.kill(victim["pid"], signal.SIGKILL)
        time.sleep(0.5)
        ready = httpx.get(cluster.url + "/ready", timeout=10)
        for t in threads:
            t.join(30)
        assert cluster.process.wait(30) == 4
        assert not _alive(survivor["pid"])
        assert ready.status_code == 503 and ready.json()["status"] == "failed"
        finished = [lines for lines in results.values() if "data: [DONE]" in lines]
        assert len(finished) == 1  # the survivor's stream ran to its end, the other was cut
        assert sse_events("\n".join(finished[0]) + "\n")[-2]["choices"][0]["finish_reason"] == "stop"
        (reason,) = cluster.errors()
        assert "API process" in reason["msg"] and str(victim["pid"]) in reason["msg"]
    finally:
        stop(cluster)


def _started_pids(cluster: Cluster) -> list[int]:
    """The engine core and API processes the supervisor said it started."""
    line = next(e["msg"] for e in cluster.lines() if e["msg"].startswith("engine core (pid"))
    found = re.search(r"engine core \(pid ([\d, ]+)\) and \d+ API processes \(pids ([\d, ]+)\)", line)
    assert found, line
    return [int(pid) for group in found.groups() for pid in group.split(",")]


def test_a_failed_engine_start_ends_the_server(tmp_path, tokenizer_dirs):
    cluster = launch(tmp_path, "start-fails", tokenizer_dirs, env={"FAKE_CLUSTER_START": "fail"})
    try:
        assert cluster.process.wait(60) == 3
        (reason,) = cluster.errors()
        assert "failed to start" in reason["msg"] and "EngineCore" in reason["msg"]
        pids = _started_pids(cluster)
        assert len(pids) == 3 and not any(_alive(pid) for pid in pids)
    finally:
        stop(cluster)


def test_sigterm_while_the_engine_starts_stops_at_once(tmp_path, tokenizer_dirs):
    cluster = launch(tmp_path, "start-stopped", tokenizer_dirs, env={"FAKE_CLUSTER_START": "600"})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "engine core (pid" not in cluster.log.read_text():
            time.sleep(0.2)
        os.kill(cluster.process.pid, signal.SIGTERM)
        assert cluster.process.wait(30) == 0
        pids = _started_pids(cluster)
        assert len(pids) == 3 and not any(_alive(pid) for pid in pids)
        assert "stopped while the engine core was starting" in cluster.log.read_text()
        assert cluster.errors() == []
    finally:
        stop(cluster)
