"""A real server process (python -m server) on the real vLLM CPU engine, once per session."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache"
MODEL = "mistralai/Mistral-7B-Instruct-v0.3"


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
    full_env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", "MSERVE_CACHE_DIR": str(CACHE),
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


@pytest.fixture(scope="session")
def tiny_server() -> Iterator[RunningServer]:
    """The README default (embedded tiny v3 model), served under a real model id.

    It also loads the test-only scripted logits processor by qualified class name, as a user's
    custom processor would be."""
    server = start_server("tiny-v3", ["--served-model-name", MODEL, *SCRIPTED])
    yield server
    stop_server(server)


def _tiny(kind: str, model_id: str) -> Iterator[RunningServer]:
    server = start_server(f"tiny-{kind}", ["--served-model-name", model_id, "--tiny-tokenizer", kind,
                                           *SCRIPTED])
    yield server
    stop_server(server)


@pytest.fixture(scope="session")
def v11_server() -> Iterator[RunningServer]:
    """A tiny model with a v11 Tekken tokenizer ([TOOL_CALLS]name[ARGS]{…}, like Small 3.2)."""
    yield from _tiny("v11-tekken", "mistralai/Mistral-Small-3.2-24B-Instruct-2506")


@pytest.fixture(scope="session")
def v13_server() -> Iterator[RunningServer]:
    """A tiny model with a v13 Tekken tokenizer ([THINK] reasoning, like Ministral 3 Reasoning)."""
    yield from _tiny("v13-tekken", "mistralai/Ministral-3-14B-Reasoning-2512")


def _tiny_vision(kind: str, model_id: str, *extra: str) -> Iterator[RunningServer]:
    server = start_server(f"tiny-{kind}-vision", [
        "--served-model-name", model_id, "--tiny-tokenizer", kind, "--tiny-vision",
        "--image-limit", "4", *SCRIPTED, *extra])
    yield server
    stop_server(server)


# Fetching is on for loopback only, so the tests can serve images from 127.0.0.1.
LOOPBACK_FETCH = ("--image-fetch", "--image-fetch-domains", "127.0.0.1", "--image-fetch-networks",
                  "127.0.0.0/8", "--image-fetch-timeout", "2")


@pytest.fixture(scope="session")
def v11_vision_server() -> Iterator[RunningServer]:
    """A tiny Pixtral-format model, v11 Tekken with an image section (like Small 3.2)."""
    yield from _tiny_vision("v11-tekken", "mistralai/Mistral-Small-3.2-24B-Instruct-2506",
                            *LOOPBACK_FETCH)


@pytest.fixture(scope="session")
def v7_vision_server() -> Iterator[RunningServer]:
    """A tiny Pixtral-format model, v7 Tekken (pre-v11 tool calls, like Small 3.1)."""
    yield from _tiny_vision("v7-tekken", "mistralai/Mistral-Small-3.1-24B-Instruct-2503")


@pytest.fixture(scope="session")
def v13_vision_server() -> Iterator[RunningServer]:
    """A tiny Pixtral-format model, v13 Tekken ([THINK] reasoning, like Ministral 3 Reasoning)."""
    yield from _tiny_vision("v13-tekken", "mistralai/Ministral-3-14B-Reasoning-2512")
