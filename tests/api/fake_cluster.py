"""The real supervisor and API processes (``server/multiproc.py``) over a stand-in engine core.

``python -m tests.api.fake_cluster <server flags>`` runs ``supervise`` exactly as
``python -m server --api-processes N`` does, except that vLLM is replaced: the "engine core" is a
process that only sleeps (kill it to see the server end), and each API process serves with a
``FakeEngine`` (every request streams ``TOKENS`` tokens, one every ``STEP`` seconds) instead of an
``AsyncLLM`` client. Everything else — the shared socket, shared admission and phases, metrics in
multiprocess mode, signals, exit codes — is the production code.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from multiprocessing.process import BaseProcess
from typing import Any

from server.engine.fake import FakeEngine
from server.engine.vllm_engine import EngineConfig

TOKENS = [1032] * 40 + [2]  # 40 tokens, then EOS
STEP = float(os.environ.get("FAKE_CLUSTER_STEP", "0.05"))


def _engine_core() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(ImportError):  # so tests can find it, as vLLM names its own
        import setproctitle

        setproctitle.setproctitle("fake::EngineCore")
    while True:
        time.sleep(3600)


def start_fake_engine(config: EngineConfig, client: dict[str, Any]) -> FakeEngine:
    assert client["client_count"] > 1 and 0 <= client["client_index"] < client["client_count"]
    return FakeEngine(lambda prompt, sampling, index: list(TOKENS), step_delay=STEP)


class FakeLaunch:
    def __init__(self, clients: int) -> None:
        self.context = multiprocessing.get_context("spawn")
        self.clients = clients
        self.core = self.context.Process(target=_engine_core, name="EngineCore", daemon=True)
        self.core.start()
        self.processes: list[BaseProcess] = []

    @property
    def engine_processes(self) -> list[BaseProcess]:
        return [self.core]

    def start_clients(self, target: Callable[..., None], sock: socket.socket, address: str,
                      payload: Any) -> list[BaseProcess]:
        for index in range(self.clients):
            config = {"client_count": self.clients, "client_index": index}
            proc = self.context.Process(target=target, args=(address, sock, payload, config),
                                        name=f"ApiServer_{index}")
            proc.start()
            self.processes.append(proc)
        return self.processes

    def stop(self, timeout: float) -> None:
        for proc in [*self.processes, self.core]:
            if proc.is_alive():
                proc.terminate()
            proc.join(timeout)
            if proc.is_alive():
                proc.kill()
                proc.join()


@contextlib.contextmanager
def fake_launch(config: EngineConfig, clients: int) -> Iterator[FakeLaunch]:
    # what vLLM's setup_multiprocess_prometheus does before anything starts
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="fake-cluster-"))
    yield FakeLaunch(clients)
    # vLLM's wait for the engine core's handshake: FAKE_CLUSTER_START seconds, or "fail"
    start = os.environ.get("FAKE_CLUSTER_START", "0")
    if start == "fail":
        raise RuntimeError("Engine core initialization failed. Failed core proc(s): {'EngineCore': 1}")
    time.sleep(float(start))


def main(argv: list[str]) -> int:
    from server.logs import setup_logging
    from server.model import load_model_info
    from server.multiproc import supervise
    from server.runconfig import engine_config
    from server.settings import load_settings

    settings, _, _ = load_settings(argv)
    setup_logging(settings.log_level, settings.log_format, "supervisor")
    config = engine_config(settings, load_model_info(settings))
    return supervise(settings, config, launcher=fake_launch, start_engine=start_fake_engine)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
