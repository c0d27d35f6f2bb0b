"""What several API processes of one server share (``api_processes`` > 1), in shared memory.

The supervisor (``server/multiproc.py``) creates one ``SharedServer`` before it starts the API
processes and hands it to each of them; an API process sees it through its own ``ServerShare``
(the same memory plus its index). It holds, per API process, the lifecycle phase and the number
of admitted requests, so that readiness, ``/status``, ``mserve:startup_phase`` and the admission
limits are the whole server's; the number of open connections, so that a new connection goes to
the least loaded process (``server/accept.py``); and one flag that the first process to see the
server fail takes, so that the reason is logged once.

Each process writes only its own slots. Admission checks the server-wide count and takes a slot
under one inter-process lock (a futex-backed semaphore, held for a few array reads), so
``max_inflight_requests`` holds exactly across processes; a release needs no lock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Phase = Literal["loading", "ready", "draining", "failed"]
PHASES: tuple[Phase, ...] = ("loading", "ready", "draining", "failed")
# The server's phase is the "worst" of its processes': one failed process fails the server, one
# draining drains it, one still loading keeps it loading; it is ready when all of them are.
_PRECEDENCE: tuple[Phase, ...] = ("failed", "draining", "loading", "ready")
LOCK_TIMEOUT = 1.0  # seconds; only a process killed while holding the lock could make it wait
NOT_ACCEPTING = 2**31 - 1  # the connection count of a process that is not accepting (yet)


@dataclass
class SharedServer:
    """Shared memory for ``processes`` API processes (create it in the supervisor)."""

    processes: int
    lock: Any  # multiprocessing Lock
    inflight: Any  # RawArray('q'): admitted requests per process
    phases: Any  # RawArray('b'): index into PHASES per process
    pids: Any  # RawArray('q'): each process's pid, written by itself (0 until it runs)
    connections: Any  # RawArray('i'): open connections per process (NOT_ACCEPTING: none yet)
    failure: Any  # RawValue('b'): 1 once some process (or the supervisor) claimed the failure

    @classmethod
    def create(cls, processes: int, context: Any) -> SharedServer:
        """``context``: a multiprocessing context (the API processes are spawned from it)."""
        return cls(processes, context.Lock(), context.RawArray("q", processes),
                   context.RawArray("b", processes), context.RawArray("q", processes),
                   context.RawArray("i", [NOT_ACCEPTING] * processes), context.RawValue("b", 0))

    def phase_of(self, index: int) -> Phase:
        return PHASES[self.phases[index]]

    def set_phase(self, index: int, phase: Phase) -> None:
        self.phases[index] = PHASES.index(phase)

    def server_phase(self) -> Phase:
        present = {self.phase_of(i) for i in range(self.processes)}
        return next(p for p in _PRECEDENCE if p in present)

    def total_inflight(self) -> int:
        return sum(self.inflight[i] for i in range(self.processes))

    def claim_failure(self) -> bool:
        """True for the first caller only (any process): that one logs why the server ends."""
        with self.lock:
            first = self.failure.value == 0
            self.failure.value = 1
        return first

    def for_process(self, index: int) -> ServerShare:
        if not 0 <= index < self.processes:
            raise ValueError(f"no API process {index} in a server of {self.processes}")
        return ServerShare(self, index)


@dataclass
class ServerShare:
    """One API process's view of the shared state."""

    server: SharedServer
    index: int

    @property
    def processes(self) -> int:
        return self.server.processes

    def set_phase(self, phase: Phase) -> None:
        self.server.set_phase(self.index, phase)

    def server_phase(self) -> Phase:
        return self.server.server_phase()

    def total_inflight(self) -> int:
        return self.server.total_inflight()

    def admit(self, refusal: Callable[[int], str | None]) -> str | None:
        """Take a slot unless ``refusal(server-wide in-flight count)`` names a reason (returned)."""
        locked = self.server.lock.acquire(timeout=LOCK_TIMEOUT)
        try:
            reason = refusal(self.server.total_inflight())
            if reason is None:
                self.server.inflight[self.index] += 1
            return reason
        finally:
            if locked:
                self.server.lock.release()

    def release(self) -> None:
        self.server.inflight[self.index] -= 1

    def claim_failure(self) -> bool:
        return self.server.claim_failure()

    def publish_connections(self, count: int) -> None:
        self.server.connections[self.index] = count

    def stop_accepting(self) -> None:
        self.server.connections[self.index] = NOT_ACCEPTING

    def least_connections(self) -> bool:
        """Whether no other process has fewer connections open than this one."""
        connections = self.server.connections
        mine = connections[self.index]
        return all(mine <= connections[i] for i in range(self.server.processes))

    def started(self, pid: int) -> None:
        self.server.pids[self.index] = pid

    def describe(self) -> list[dict[str, Any]]:
        """Per process: pid, phase and admitted requests (for /status)."""
        server = self.server
        return [{"pid": server.pids[i], "phase": server.phase_of(i),
                 "inflight_requests": server.inflight[i]} for i in range(server.processes)]
