"""Accepting connections on the listening socket all API processes share: the least loaded wins.

Every API process of a server waits on the same listening socket (``server/multiproc.py``). A
new connection wakes all of them, and an event loop that gets to it first accepts it, plus any
others queued behind it: with keep-alive clients one process can end up holding most of the
connections while another idles (measured: every curl request of a smoke test landed on the
same process). So each process publishes how many connections it has open (``ServerShare``), and
when it wakes up while another has fewer, it leaves the connection to that one for up to
``PATIENCE`` seconds before taking it anyway (the other may be busy). vLLM 0.32's API server does
the same for ``--api-server-count``. One connection is accepted per wake-up, so a burst of new
connections is dealt out instead of taken in one go.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from server.shared import ServerShare

PATIENCE = 0.005  # seconds a process leaves a new connection to a less loaded one
CHECK = 0.001  # seconds between looks at the other processes' loads while waiting
log = logging.getLogger(__name__)


class BalancedAccept:
    """Accepts for one uvicorn ``Server`` (started with no sockets of its own)."""

    def __init__(self, server: Any, share: ServerShare) -> None:
        self.server = server
        self.share = share
        self.accepting = 0  # connections accepted and not yet handed to uvicorn's protocol
        self.tasks: set[asyncio.Task[None]] = set()

    def start(self, sockets: list[socket.socket]) -> None:
        for sock in sockets:
            sock.listen(self.server.config.backlog)
            sock.setblocking(False)
            self._spawn(self._accept_loop(sock))
        self._publish()

    async def stop(self) -> None:
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.share.stop_accepting()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _publish(self) -> None:
        self.share.publish_connections(len(self.server.server_state.connections) + self.accepting)

    async def _accept_loop(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await _readable(loop, sock)
            self._publish()  # connections closed since the last look count now
            waited = 0.0
            while waited < PATIENCE and not self.share.least_connections():
                await asyncio.sleep(CHECK)
                waited += CHECK
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue  # another process took it
            except OSError:  # out of file descriptors and the like: as asyncio's server does
                log.exception("cannot accept a connection")
                await asyncio.sleep(1)
                continue
            self.accepting += 1
            self._publish()
            self._spawn(self._serve(loop, conn))

    async def _serve(self, loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
        """Hand ``conn`` to uvicorn's HTTP protocol, as its own server would."""
        server, config = self.server, self.server.config

        def protocol() -> Any:
            http = config.http_protocol_class(config=config, server_state=server.server_state,
                                              app_state=server.lifespan.state, _loop=loop)
            lost = http.connection_lost

            def connection_lost(exc: Exception | None) -> None:
                lost(exc)
                self._publish()  # the others see this process's load drop at once

            http.connection_lost = connection_lost
            return http

        try:
            await loop.connect_accepted_socket(protocol, conn, ssl=config.ssl)
        except asyncio.CancelledError:
            conn.close()
            raise
        except OSError:
            conn.close()
        finally:
            self.accepting -= 1
            self._publish()


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready = loop.create_future()
    loop.add_reader(sock.fileno(), lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())
