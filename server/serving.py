"""One API process: the app under uvicorn, HTTP up at once, the engine loading in the background.

SIGTERM drains: readiness flips to 503, new requests get 503 + Retry-After, in-flight requests
get ``drain_timeout`` seconds, then the rest end with an error and the process exits 0. A
second signal exits at once. An engine that fails makes the process exit 3.

``python -m server`` runs this once (it binds the port itself); with ``api_processes`` > 1 each
API process runs it on the socket the supervisor bound (``server/multiproc.py``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import socket
from collections.abc import Callable
from typing import Any

from server.accept import BalancedAccept
from server.state import EngineFactory, ServerState

EXIT_ENGINE_FAILED = 3
log = logging.getLogger("server")


def run_http(state: ServerState, engine_factory: EngineFactory, *,
             sock: socket.socket | None = None, on_start: Callable[[], None] | None = None) -> int:
    """Serve until drained (0) or the engine failed (3). ``on_start`` runs on the event loop once
    HTTP is up."""
    import uvicorn

    from server.app import create_app

    settings = state.settings
    app = create_app(state, engine_factory)
    balanced = None

    class DrainingServer(uvicorn.Server):
        draining = False

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.draining or state.phase in ("loading", "failed"):
                super().handle_exit(sig, frame)  # nothing to drain, or a second signal
                return
            self.draining = True
            # a signal handler runs inside whatever task was interrupted: a fresh context keeps
            # that request's id off the drain's log lines
            asyncio.get_event_loop().create_task(self._drain(), context=contextvars.Context())

        async def _drain(self) -> None:
            await state.drain(settings.drain_timeout)
            self.should_exit = True

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            nonlocal balanced
            if state.share is not None and sockets:  # a socket shared with other API processes
                await super().startup([])
                if self.started:
                    balanced = BalancedAccept(self, state.share)
                    balanced.start(sockets)
            else:
                await super().startup(sockets)
            if on_start is not None and self.started:
                on_start()

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            if balanced is not None:
                await balanced.stop()
            await super().shutdown(sockets)

    server = DrainingServer(uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level,
        access_log=False, log_config=None, timeout_graceful_shutdown=5,
        timeout_keep_alive=settings.keep_alive_timeout))
    exit_code = 0

    def on_fatal(reason: str) -> None:
        nonlocal exit_code
        if state.share is None or state.share.claim_failure():
            log.error("engine failed (%s): exiting so the orchestrator restarts the server", reason)
        else:  # another process of this server already said why it ends
            log.info("engine failed (%s): this API process exits with the server", reason)
        exit_code = EXIT_ENGINE_FAILED
        server.should_exit = True

    state.on_fatal = on_fatal
    server.run(sockets=None if sock is None else [sock])
    return exit_code
