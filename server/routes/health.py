"""Liveness, readiness and status: no API key needed (probes and load balancers call them)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from server.state import ServerState

router = APIRouter()


def _state(request: Request) -> ServerState:
    return request.app.state.server


@router.get("/health")
async def health() -> JSONResponse:
    """Liveness: the process answers HTTP."""
    return JSONResponse({"status": "ok"})


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """Readiness: 200 only when the engine is loaded and healthy."""
    state = _state(request)
    if state.phase == "ready" and state.engine is not None:
        try:
            await state.engine.check_health()
        except Exception:  # noqa: BLE001 - any failure means not ready
            state.fail("engine health check failed")
    code = 200 if state.phase == "ready" else 503
    return JSONResponse({"status": state.phase}, status_code=code)


@router.get("/status")
async def status(request: Request) -> JSONResponse:
    state = _state(request)
    now = time.time()
    return JSONResponse({
        "phase": state.phase,
        "model": state.model.id,
        "uptime_s": round(now - state.started_at, 1),
        "load_time_s": round(state.ready_at - state.started_at, 1) if state.ready_at else None,
        "error": state.error,
    })
