"""``create_app(state, engine_factory)``: routes, middleware and the one error renderer."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server import auth, metrics, openapi
from server.errors import (
    INTERNAL,
    APIError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    envelope_for,
)
from server.logs import request_id_var
from server.protocol import validation_error
from server.routes import chat, completions, health, messages, models, responses, tokens
from server.state import EngineFactory, ServerState

log = logging.getLogger(__name__)


# Answered without an API key: probes, and the API's own description.
OPEN_PATHS = frozenset({"/health", "/ready", "/status", "/openapi.json", "/docs"})


def error_response(err: APIError, scope: Scope) -> JSONResponse:
    """``err`` in the envelope of the API the request's path (and client) belongs to."""
    return JSONResponse(envelope_for(scope["path"], scope.get("headers", ()))(err),
                        status_code=err.status, headers=err.headers)


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes (declared or streamed) with a 413."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = PayloadTooLarge(f"The request body exceeds the limit of {self.limit} bytes.")
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await error_response(too_large, scope)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise too_large
            return message

        await self.app(scope, limited, send)


class FrontDoor:
    """Request id (X-Request-Id honoured and returned), API keys, one access-log line.

    Pure ASGI: streamed bodies pass through untouched (no per-chunk re-queueing)."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state
        self.keys = auth.KeyRing(state.api_keys)
        self.log = logging.getLogger("server.access")

    def _guarded(self, path: str) -> bool:
        """Every path needs the key, but probes, the API description and (if the operator
        says so) metrics."""
        if path == "/metrics":
            return not self.state.settings.metrics_open
        return path not in OPEN_PATHS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        request_id = headers.get(b"x-request-id", b"").decode("latin-1") or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        path = scope["path"]
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        try:
            scope[auth.SCOPE_KEY] = ""
            if self._guarded(path):
                try:
                    scope[auth.SCOPE_KEY] = auth.identify(scope.get("headers", []), self.keys)
                except APIError as err:
                    await error_response(err, scope)(scope, receive, send_with_id)
                    return
            await self.app(scope, receive, send_with_id)
        finally:
            if path in ("/v1/chat/completions", "/v1/completions"):
                metrics.REQUESTS.labels(status=str(status)).inc()
            if path not in ("/health", "/ready", "/metrics"):
                method = scope["method"]
                self.log.info("%s %s %d", method, path, status, extra={
                    "method": method, "path": path, "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1)})
            request_id_var.reset(token)


def create_app(state: ServerState, engine_factory: EngineFactory) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        loader = asyncio.create_task(state.load(engine_factory))
        try:
            yield
        finally:
            loader.cancel()
            await state.shutdown()

    # /openapi.json (built once by server/openapi.py) and Swagger UI at /docs: not under /v1,
    # so no API key; neither touches the engine.
    app = FastAPI(title=openapi.TITLE, version=openapi.VERSION, lifespan=lifespan,
                  openapi_url="/openapi.json", docs_url="/docs", redoc_url=None,
                  swagger_ui_oauth2_redirect_url=None)
    app.openapi = openapi.document  # type: ignore[method-assign]
    app.state.server = state
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(chat.router)
    app.include_router(responses.router)
    app.include_router(messages.router)
    app.include_router(completions.router)
    app.include_router(tokens.router)

    app.add_middleware(FrontDoor, state=state)

    @app.exception_handler(APIError)
    async def api_error(request: Request, err: APIError) -> JSONResponse:
        return error_response(err, request.scope)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(list(err.errors())), request.scope)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        found: APIError
        if err.status_code == 404:
            found = NotFound(f"Unknown route: {request.method} {request.url.path}.")
        elif err.status_code == 405:
            found = MethodNotAllowed(f"Method {request.method} is not allowed on {request.url.path}.")
        else:
            found = APIError(str(err.detail))
        return error_response(found, request.scope)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=err)
        return error_response(INTERNAL, request.scope)

    app.add_middleware(BodyLimit, limit=state.settings.max_body_bytes)
    return app
