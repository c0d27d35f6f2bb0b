"""Several API processes over one engine core (``api_processes`` > 1), the way
``vllm serve --api-server-count N`` runs them (vLLM 0.32's ``run_multi_api_server``).

    python -m server          supervisor: binds the port, starts the engine core and the API
    │                         processes, watches them, forwards SIGTERM; no HTTP, no engine client
    ├── EngineCore            vLLM's engine core (its GPU workers under it with TP/PP > 1)
    ├── ApiServer_0 … _N-1    the whole app (server/serving.py) on the shared listening socket,
    │                         each with its own AsyncLLM client (client_index i of N)
    └── resource_tracker      Python's, for the shared-memory lock

The supervisor binds the one listening socket and every API process accepts on it, so the port,
HTTP/1.1 and keep-alive are what one process serves; the kernel hands each new connection to one
of them. vLLM's own launch machinery starts the engine core with N client slots
(``server/engine/vllm_launch.py``). What the processes share is in ``server/shared.py`` (phases,
admission counts) and in ``PROMETHEUS_MULTIPROC_DIR`` (metrics); stored responses are shared
through their database (SQLite in WAL mode, or PostgreSQL).

Lifecycle: SIGTERM (or SIGINT) to the supervisor is forwarded to every API process, which drains
as one process does; the supervisor then stops the engine core and exits 0. A second signal is
forwarded too (the API processes exit at once). If the engine core exits, the supervisor tells
every API process (SIGUSR1: requests in flight fail as on an engine death) and exits 3; if an API
process exits, the others drain and the supervisor exits 4 (3 if that process saw the engine
fail). The first process to see the server fail logs why, once (``SharedServer.claim_failure``).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from multiprocessing import connection
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

from server import metrics
from server.engine.base import EngineClient
from server.engine.vllm_engine import EngineConfig
from server.serving import EXIT_ENGINE_FAILED
from server.settings import Settings
from server.shared import SharedServer

log = logging.getLogger("server.supervisor")

EXIT_API_PROCESS_FAILED = 4
STOP_GRACE = 15.0  # seconds an API process gets beyond drain_timeout before it is killed
FAIL_GRACE = 10.0  # seconds API processes get to fail their requests when the engine is gone


class Launch(Protocol):
    """The engine core being started (``vllm_launch.EngineLaunch``; a fake one in tests)."""

    @property
    def engine_processes(self) -> list[BaseProcess]: ...

    def start_clients(self, target: Callable[..., None], sock: socket.socket, address: str,
                      payload: Any) -> list[BaseProcess]: ...

    def stop(self, timeout: float) -> None: ...


Launcher = Callable[[EngineConfig, int], AbstractContextManager[Launch]]
StartEngine = Callable[[EngineConfig, dict[str, Any]], EngineClient]


@dataclass(frozen=True)
class Payload:
    """What every API process is started with (pickled by multiprocessing's spawn)."""

    settings: Settings
    config: EngineConfig
    shared: SharedServer
    start_engine: StartEngine  # (config, client_config) -> engine client, in a worker thread


class _Interrupted(BaseException):
    """SIGTERM/SIGINT while the engine core starts (vLLM's start-up wait catches Exception)."""


class _Signals:
    """SIGTERM/SIGINT: interrupt the start-up, later wake the watch loop through a pipe.

    The pipe is Python's wakeup fd: the C-level handler writes one byte per signal whichever
    thread the kernel delivered it to. A Python handler alone runs only when the main thread
    executes bytecode, and the main thread sleeps in ``connection.wait``: a signal the kernel
    delivers to one of vLLM's threads would go unnoticed until some process exits."""

    def __init__(self) -> None:
        self.fd, self._write = os.pipe()
        os.set_blocking(self._write, False)
        os.set_blocking(self.fd, False)
        self.starting = True
        signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.starting:
            self.starting = False
            raise _Interrupted

    def take(self) -> bool:
        """Whether SIGTERM or SIGINT came since the last look (the pipe holds signal numbers)."""
        try:
            got = os.read(self.fd, 64)
        except BlockingIOError:
            return False
        return any(n in (signal.SIGTERM, signal.SIGINT) for n in got)


def _failed(shared: SharedServer, message: str, *args: Any) -> None:
    """Why the server ends, at error level by the first process to say it, at info by others."""
    (log.error if shared.claim_failure() else log.info)(message, *args)


def _bind(settings: Settings) -> socket.socket:
    """The one listening socket, bound as uvicorn binds it for its own worker processes."""
    import uvicorn

    return uvicorn.Config(None, host=settings.host, port=settings.port,
                          log_config=None).bind_socket()


def supervise(settings: Settings, config: EngineConfig, *, launcher: Launcher | None = None,
              start_engine: StartEngine | None = None) -> int:
    if launcher is None:
        from server.engine.vllm_launch import launch as launcher
    if start_engine is None:
        from server.engine.vllm_engine import VllmEngine

        start_engine = VllmEngine.start
    count = settings.api_processes
    shared = SharedServer.create(count, multiprocessing.get_context("spawn"))
    signals = _Signals()
    sock = _bind(settings)
    address = f"http://{settings.host}:{sock.getsockname()[1]}"
    payload = Payload(settings, config, shared, start_engine)
    started: Launch | None = None
    try:
        try:
            with launcher(config, count) as started:
                clients = started.start_clients(api_process, sock, address, payload)
                log.info("engine core (pid %s) and %d API processes (pids %s) on %s",
                         ", ".join(str(p.pid) for p in started.engine_processes), count,
                         ", ".join(str(p.pid) for p in clients), address)
            signals.starting = False
            log.info("engine core ready")
        except _Interrupted:
            log.info("stopped while the engine core was starting")
            return 0
        except Exception as exc:  # noqa: BLE001 - vLLM's start-up errors: the engine or a client died
            signals.starting = False
            _failed(shared, "the server failed to start: %s", exc)
            return EXIT_ENGINE_FAILED
        return Watch(settings, shared, started, clients, signals).run()
    finally:
        signals.starting = False
        if started is not None:
            started.stop(timeout=5)
        sock.close()


class Watch:
    """The running server: wait for a signal or for any process to exit, then end it all."""

    def __init__(self, settings: Settings, shared: SharedServer, launch: Launch,
                 clients: list[BaseProcess], signals: _Signals) -> None:
        self.settings = settings
        self.shared = shared
        self.clients = clients
        self.engine = {p.sentinel: p for p in launch.engine_processes}
        self.signals = signals

    def run(self) -> int:
        by_sentinel = {p.sentinel: (i, p) for i, p in enumerate(self.clients)}
        while True:
            ready = connection.wait([*self.engine, *by_sentinel, self.signals.fd])
            if self.signals.fd in ready and self.signals.take():
                log.info("signal received: draining %d API processes (up to %.0f s)",
                         len(self.clients), self.settings.drain_timeout)
                return self._stop(self.settings.drain_timeout + STOP_GRACE)
            for sentinel in (r for r in ready if r != self.signals.fd):
                _reap(self.engine.get(sentinel) or by_sentinel[sentinel][1])
                if sentinel in self.engine:
                    core = self.engine.pop(sentinel)
                    _failed(self.shared, "the engine core process %s (pid %s) exited with code "
                            "%s: stopping every API process", core.name, core.pid, core.exitcode)
                    return self._engine_gone()
                index, proc = by_sentinel[sentinel]
                self.shared.set_phase(index, "failed")  # readiness fails everywhere from now on
                if proc.exitcode == EXIT_ENGINE_FAILED:
                    _failed(self.shared, "API process %d (pid %s) exited: the engine failed",
                            index, proc.pid)
                    return self._engine_gone()
                _failed(self.shared, "API process %d (pid %s) exited with code %s: draining the "
                        "others", index, proc.pid, proc.exitcode)
                code = self._stop(self.settings.drain_timeout + STOP_GRACE)
                return code if code == EXIT_ENGINE_FAILED else EXIT_API_PROCESS_FAILED

    def _alive(self) -> list[BaseProcess]:
        return [p for p in self.clients if p.exitcode is None]

    def _engine_gone(self) -> int:
        """Every API process fails what it has in flight and exits (SIGUSR1)."""
        self.engine.clear()
        for proc in self._alive():
            _signal(proc, signal.SIGUSR1)
        self._wait(FAIL_GRACE)
        return EXIT_ENGINE_FAILED

    def _stop(self, timeout: float) -> int:
        """SIGTERM to every API process (they drain) and wait; a second signal is forwarded
        (they stop at once); an engine core exit meanwhile fails them (exit 3)."""
        for proc in self._alive():
            _signal(proc, signal.SIGTERM)
        return self._wait(timeout)

    def _wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        code = 0
        while (alive := self._alive()) and (left := deadline - time.monotonic()) > 0:
            ready = connection.wait([*self.engine, *(p.sentinel for p in alive), self.signals.fd],
                                    timeout=left)
            if self.signals.fd in ready and self.signals.take():
                log.info("second signal: stopping the API processes now")
                for proc in alive:
                    _signal(proc, signal.SIGTERM)
            if any(sentinel in self.engine for sentinel in ready):
                core = next(self.engine[s] for s in ready if s in self.engine)
                _reap(core)
                _failed(self.shared, "the engine core process %s (pid %s) exited with code %s "
                        "while draining", core.name, core.pid, core.exitcode)
                self.engine.clear()
                for proc in alive:
                    _signal(proc, signal.SIGUSR1)
                code = EXIT_ENGINE_FAILED
                deadline = min(deadline, time.monotonic() + FAIL_GRACE)
        for proc in self.clients:
            if proc.exitcode is not None:
                metrics.process_exited(proc.pid)
                log.info("API process %s (pid %s) exited with code %s", proc.name, proc.pid,
                         proc.exitcode)
        if any(p.exitcode == EXIT_ENGINE_FAILED for p in self.clients):
            code = EXIT_ENGINE_FAILED
        return code


def _reap(proc: BaseProcess) -> None:
    """Its sentinel fired: wait the moment it takes until its exit code is known."""
    proc.join(timeout=5)


def _signal(proc: BaseProcess, sig: int) -> None:
    try:
        os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass


# --- one API process ------------------------------------------------------------------------------
def api_process(address: str, sock: socket.socket, payload: Payload,
                client_config: dict[str, Any]) -> None:
    """The spawned API process: the whole app on the shared socket, with its own engine client."""
    from server.logs import setup_logging
    from server.model import load_model_info
    from server.serving import run_http
    from server.state import ServerState

    index = client_config["client_index"]
    settings = payload.settings
    setup_logging(settings.log_level, settings.log_format, f"api-{index}")
    _set_title(f"mserve::api-{index}")
    share = payload.shared.for_process(index)
    share.started(os.getpid())
    metrics.use_multiprocess(share)
    # vLLM's own HTTP server uses this array to accept on its least loaded process; uvicorn
    # here accepts as one process does, and the kernel spreads the connections.
    client_config.pop("api_server_loads", None)
    code = 1
    try:
        model = load_model_info(settings)
        state = ServerState(settings=settings, model=model, api_keys=settings.resolved_api_keys(),
                            share=share)
        config, start = payload.config, payload.start_engine
        code = run_http(state, lambda: asyncio.to_thread(start, config, client_config), sock=sock,
                        on_start=lambda: _watch_supervisor(state))
    except Exception:  # noqa: BLE001 - logged here: the supervisor only sees the exit code
        logging.getLogger("server").exception("API process %d failed", index)
    finally:
        metrics.process_exited(os.getpid())
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        # Not a normal interpreter exit: an engine client still waiting for the engine core
        # (a stop during start-up) would hold it in its worker thread.
        os._exit(code)


def _watch_supervisor(state: Any) -> None:
    """SIGUSR1 from the supervisor: the engine core is gone. The supervisor itself gone: end."""
    loop = asyncio.get_running_loop()

    def engine_gone() -> None:
        if state.engine is not None:
            state.engine.engine_died()
        state.fail("the engine core process exited")

    loop.add_signal_handler(signal.SIGUSR1, engine_gone)
    try:
        fd = os.pidfd_open(os.getppid())
    except (AttributeError, OSError):  # no pidfd (old kernel): the supervisor stops us itself
        return

    def supervisor_gone() -> None:
        loop.remove_reader(fd)
        os.close(fd)
        state.fail("the supervisor process exited")

    loop.add_reader(fd, supervisor_gone)


def _set_title(title: str) -> None:
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.setproctitle(title)
