"""Admission control before any tokenisation, and the in-flight count that drain waits on.

With several API processes (``api_processes`` > 1) the limits count the whole server's admitted
requests (``server/shared.py``); ``inflight`` stays this process's own count, which its drain
waits on.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from server import metrics
from server.errors import Overloaded
from server.shared import ServerShare


@dataclass
class Admission:
    max_inflight: int | None = None
    max_queued: int | None = None
    batch_capacity: int = 256  # the engine's max_num_seqs: admitted requests beyond it queue
    inflight: int = 0
    shared: ServerShare | None = None  # the other API processes' counts, when there are some
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._idle.set()

    @property
    def server_inflight(self) -> int:
        """Admitted requests of the whole server (every API process)."""
        return self.inflight if self.shared is None else self.shared.total_inflight()

    def _refusal(self, inflight: int) -> str | None:
        if self.max_inflight is not None and inflight >= self.max_inflight:
            return "inflight"
        if self.max_queued is not None and inflight - self.batch_capacity >= self.max_queued:
            return "queue"
        return None

    def admit(self) -> None:
        """Take a slot or raise a 429 with Retry-After."""
        if self.shared is None:
            reason = self._refusal(self.inflight)
        else:
            reason = self.shared.admit(self._refusal)
        if reason is not None:
            metrics.ADMISSION_REJECTED.labels(reason=reason).inc()
            raise Overloaded("The server is at capacity; retry shortly.", headers={"Retry-After": "1"})
        self.inflight += 1
        self._idle.clear()
        metrics.INFLIGHT.set(self.inflight)

    def release(self) -> None:
        self.inflight -= 1
        if self.shared is not None:
            self.shared.release()
        metrics.INFLIGHT.set(self.inflight)
        if self.inflight == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """True if every admitted request finished within ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False
