"""Prometheus metrics: vLLM's own ``vllm:*`` engine metrics plus the frontend's ``mserve:*``.

vLLM registers its metrics in prometheus_client's default registry when the engine is started
with stats logging on; ours live in the same registry so ``/metrics`` renders both.

With several API processes (``api_processes`` > 1) every process writes its samples to files in
``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode, set up by the supervisor
before the processes start, as ``vllm serve --api-server-count`` does), and ``/metrics`` in any
process renders the whole server from them: counters and histograms summed over the processes,
``mserve:requests_inflight`` summed over the live ones, vLLM's engine gauges as the engine last
reported them, and ``mserve:startup_phase`` the server's phase (``server/shared.py``).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

from server.shared import PHASES, ServerShare

ADMISSION_REJECTED = Counter(
    "mserve:admission_rejected", "Requests refused by admission control (429)", ["reason"])
DISCONNECTS = Counter("mserve:client_disconnects", "Requests whose client went away mid-way")
TIMEOUTS = Counter("mserve:request_timeouts", "Requests aborted by the per-request timeout")
REQUESTS = Counter("mserve:requests", "Chat and text completion requests by outcome", ["status"])
PARSE_FAILURES = Counter(
    "mserve:tool_call_parse_failures", "Tool calls whose arguments were not valid JSON at the end")
INFLIGHT = Gauge("mserve:requests_inflight", "Generating requests admitted and not finished",
                 multiprocess_mode="livesum")
PHASE_HELP = "1 for the server's current lifecycle phase"
PHASE = Gauge("mserve:startup_phase", PHASE_HELP, ["phase"])

_whole_server: CollectorRegistry | None = None  # several API processes: rendered from the files


class _ServerPhase:
    """``mserve:startup_phase`` of the whole server, read from the shared state at scrape time."""

    def __init__(self, share: ServerShare) -> None:
        self.share = share

    def collect(self):  # type: ignore[no-untyped-def]
        family = GaugeMetricFamily("mserve:startup_phase", PHASE_HELP, labels=["phase"])
        current = self.share.server_phase()
        for name in PHASES:
            family.add_metric([name], 1 if name == current else 0)
        yield family


def use_multiprocess(share: ServerShare) -> None:
    """This is one of several API processes: ``/metrics`` renders the whole server."""
    global _whole_server
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        raise RuntimeError("several API processes need PROMETHEUS_MULTIPROC_DIR set before start")
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(_ServerPhase(share))
    _whole_server = registry


def set_phase(phase: str) -> None:
    if _whole_server is not None:
        return  # the server's phase comes from the shared state, not from one process
    for name in PHASES:
        PHASE.labels(phase=name).set(1 if name == phase else 0)


def process_exited(pid: int) -> None:
    """Drop a finished process's live gauges (``mserve:requests_inflight``) from the files."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)


def render() -> tuple[bytes, str]:
    return generate_latest(_whole_server or REGISTRY), CONTENT_TYPE_LATEST
