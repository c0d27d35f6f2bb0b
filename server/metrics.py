"""Prometheus metrics: vLLM's own ``vllm:*`` engine metrics plus the frontend's ``mserve:*``.

vLLM registers its metrics in prometheus_client's default registry when the engine is started
with stats logging on; ours live in the same registry so ``/metrics`` renders both.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, generate_latest

PHASES = ("loading", "ready", "draining", "failed")

ADMISSION_REJECTED = Counter(
    "mserve:admission_rejected", "Requests refused by admission control (429)", ["reason"])
DISCONNECTS = Counter("mserve:client_disconnects", "Requests whose client went away mid-way")
TIMEOUTS = Counter("mserve:request_timeouts", "Requests aborted by the per-request timeout")
REQUESTS = Counter("mserve:requests", "Chat and text completion requests by outcome", ["status"])
PARSE_FAILURES = Counter(
    "mserve:tool_call_parse_failures", "Tool calls whose arguments were not valid JSON at the end")
INFLIGHT = Gauge("mserve:requests_inflight", "Generating requests admitted and not finished")
PHASE = Gauge("mserve:startup_phase", "1 for the server's current lifecycle phase", ["phase"])


def set_phase(phase: str) -> None:
    for name in PHASES:
        PHASE.labels(phase=name).set(1 if name == phase else 0)


def render() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
