"""A real server process (python -m server) on the real vLLM CPU engine, once per session."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache"
MODEL = "mistralai/Mistral-7B-Instruct-v0.3"
# Each tiny-model server holds ~3 GB (torch, vLLM, engine core, worker) plus its KV cache; the
# tiny models need far less than the default cache, and at most POOL_SIZE run at once (24 GB).
KV_CACHE_GIB = "1"
POOL_SIZE = 4


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen
    log: Path

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(name: str, args: list[str], env: dict[str, str] | None = None,
                 timeout: float = 420) -> RunningServer:
    port = free_port()
    log = CACHE / f"e2e-{name}.log"
    CACHE.mkdir(exist_ok=True)
    full_env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": KV_CACHE_GIB, "MSERVE_CACHE_DIR": str(CACHE),
                **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(port), *args],
        cwd=ROOT, env=full_env, stdout=log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True)
    server = RunningServer(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server {name} exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(server.url + "/ready", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(1)
    stop_server(server)
    pytest.fail(f"server {name} not ready after {timeout}s:\n{server.log_tail()}")


def stop_server(server: RunningServer) -> None:
    if server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(10)


SCRIPTED = ["--logits-processors", "tests.e2e.scripted:ScriptedLogits"]


class ServerPool:
    """The tiny-model servers of a session, at most ``POOL_SIZE`` alive at once.

    Asking for one that is not running starts it (stopping the least recently used first), so
    every test gets a live server whatever ran before it; a server a test uses stays warm."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.running: OrderedDict[str, RunningServer] = OrderedDict()

    def get(self, name: str, args: list[str]) -> RunningServer:
        server = self.running.get(name)
        if server is not None and server.process.poll() is None:
            self.running.move_to_end(name)
            return server
        self.running.pop(name, None)
        self.make_room(1)
        server = start_server(name, args)
        self.running[name] = server
        return server

    def make_room(self, servers: int) -> None:
        """Stop the least recently used servers until ``servers`` more fit."""
        while self.running and len(self.running) + servers > self.capacity:
            _, oldest = self.running.popitem(last=False)
            stop_server(oldest)

    def close(self) -> None:
        while self.running:
            stop_server(self.running.popitem()[1])


@pytest.fixture(scope="session")
def pool() -> Iterator[ServerPool]:
    servers = ServerPool(POOL_SIZE)
    yield servers
    servers.close()


@pytest.fixture()
def tiny_server(pool: ServerPool) -> RunningServer:
    """The README default (embedded tiny v3 model), served under a real model id.

    It also loads the test-only scripted logits processor by qualified class name, as a user's
    custom processor would be."""
    return pool.get("tiny-v3", ["--served-model-name", MODEL, *SCRIPTED])


def _tiny(pool: ServerPool, kind: str, model_id: str, *extra: str, vision: bool = False) -> RunningServer:
    name = f"tiny-{kind}" + ("-vision" if vision else "")
    return pool.get(name, ["--served-model-name", model_id, "--tiny-tokenizer", kind, *SCRIPTED,
                           *(("--tiny-vision", "--image-limit", "4") if vision else ()), *extra])


@pytest.fixture()
def v11_server(pool: ServerPool) -> RunningServer:
    """A tiny model with a v11 Tekken tokenizer ([TOOL_CALLS]name[ARGS]{…}, like Small 3.2)."""
    return _tiny(pool, "v11-tekken", "mistralai/Mistral-Small-3.2-24B-Instruct-2506")


@pytest.fixture()
def v13_server(pool: ServerPool) -> RunningServer:
    """A tiny model with a v13 Tekken tokenizer ([THINK] reasoning, like Ministral 3 Reasoning)."""
    return _tiny(pool, "v13-tekken", "mistralai/Ministral-3-14B-Reasoning-2512")


# Fetching is on for loopback only, so the tests can serve images from 127.0.0.1.
LOOPBACK_FETCH = ("--image-fetch", "--image-fetch-domains", "127.0.0.1", "--image-fetch-networks",
                  "127.0.0.0/8", "--image-fetch-timeout", "2")


@pytest.fixture()
def v11_vision_server(pool: ServerPool) -> RunningServer:
    """A tiny Pixtral-format model, v11 Tekken with an image section (like Small 3.2)."""
    return _tiny(pool, "v11-tekken", "mistralai/Mistral-Small-3.2-24B-Instruct-2506",
                 *LOOPBACK_FETCH, vision=True)


@pytest.fixture()
def v7_vision_server(pool: ServerPool) -> RunningServer:
    """A tiny Pixtral-format model, v7 Tekken (pre-v11 tool calls, like Small 3.1)."""
    return _tiny(pool, "v7-tekken", "mistralai/Mistral-Small-3.1-24B-Instruct-2503", vision=True)


@pytest.fixture()
def v13_vision_server(pool: ServerPool) -> RunningServer:
    """A tiny Pixtral-format model, v13 Tekken ([THINK] reasoning, like Ministral 3 Reasoning)."""
    return _tiny(pool, "v13-tekken", "mistralai/Ministral-3-14B-Reasoning-2512", vision=True)
