"""A lean ``text/event-stream`` response: pre-framed bytes in, one ASGI message per step out.

Frames come from an async iterator of bytes (each already ``data: …\\n\\n``; one item may hold
several frames of the same engine step). A client disconnect cancels the pump, which closes the
iterator — that is what aborts the engine request. A comment line keeps idle streams alive
through proxies. No per-event objects, no extra task per chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

PING = b": keep-alive\n\n"


class SSEResponse(StreamingResponse):
    def __init__(self, frames: AsyncIterator[bytes], headers: dict[str, str] | None = None,
                 ping_interval: float = 15.0) -> None:
        super().__init__(frames, media_type="text/event-stream",
                         headers={"cache-control": "no-store", "x-accel-buffering": "no",
                                  **(headers or {})})
        self.frames = frames
        self.ping_interval = ping_interval
        self.last_sent = time.monotonic()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        pump = asyncio.ensure_future(self._pump(send))
        watcher = asyncio.ensure_future(self._watch(receive))
        pinger = asyncio.ensure_future(self._ping(send))
        try:
            await asyncio.wait({pump, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            pinger.cancel()
            watcher.cancel()
            if not pump.done():  # the client left: closing the frames aborts the engine work
                pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        if not pump.cancelled() and pump.exception() is None:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _pump(self, send: Send) -> None:
        try:
            async for data in self.frames:
                self.last_sent = time.monotonic()
                await send({"type": "http.response.body", "body": data, "more_body": True})
        finally:
            await self.frames.aclose()  # type: ignore[attr-defined]

    @staticmethod
    async def _watch(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def _ping(self, send: Send) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            if time.monotonic() - self.last_sent >= self.ping_interval:
                self.last_sent = time.monotonic()
                await send({"type": "http.response.body", "body": PING, "more_body": True})
