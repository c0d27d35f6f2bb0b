"""Liveness, readiness, status and metrics (probes and scrapers call these)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from server import metrics
from server.state import ServerState

router = APIRouter()


def _state(request: Request) -> ServerState:
    return request.app.state.server


@router.get("/health")
async def health() -> JSONResponse:
    """Liveness: the process answers HTTP (it exits by itself when the engine dies)."""
    return JSONResponse({"status": "ok"})


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """Readiness: 200 only when the engine is loaded, healthy and the server is not draining
    (with several API processes: when every one of them is ready)."""
    state = _state(request)
    if state.phase == "ready" and state.engine is not None:
        try:
            await state.engine.check_health()
        except Exception:  # noqa: BLE001 - any failure means not ready
            state.fail("engine health check failed")
    phase = state.server_phase
    code = 200 if phase == "ready" else 503
    headers = {} if code == 200 else {"Retry-After": "5"}
    return JSONResponse({"status": phase}, status_code=code, headers=headers)


@router.get("/status")
async def status(request: Request) -> JSONResponse:
    """Startup progress and load: phase, timings, in-flight requests (the whole server's; with
    several API processes also each one's, and which one answered)."""
    state = _state(request)
    now = time.time()
    body = {
        "phase": state.server_phase,
        "model": state.model.id,
        "uptime_s": round(now - state.started_at, 1),
        "load_time_s": round(state.ready_at - state.started_at, 1) if state.ready_at else None,
        "loading_for_s": round(now - state.started_at, 1) if state.phase == "loading" else None,
        "inflight_requests": state.admission.server_inflight,
        # The reason is in the server log; probes without a key do not get internal text.
        "error": "the inference engine failed; see the server log" if state.error else None,
    }
    if state.share is not None:
        body["api_process"] = state.share.index
        body["api_processes"] = state.share.describe()
    return JSONResponse(body)


@router.get("/metrics")
async def prometheus() -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
