"""The one error hierarchy of the server, rendered once.

    APIError                      500 server_error
    ├── InvalidRequest            400 invalid_request_error
    │   └── ContextLengthExceeded 400 invalid_request_error / context_length_exceeded
    ├── Unauthorized              401 authentication_error / invalid_api_key
    ├── NotFound                  404 invalid_request_error
    │   └── ModelNotFound         404 invalid_request_error / model_not_found
    ├── MethodNotAllowed          405 invalid_request_error
    ├── PayloadTooLarge           413 invalid_request_error / payload_too_large
    ├── Overloaded                429 rate_limit_error / rate_limit_exceeded (Retry-After)
    ├── Unavailable               503 server_error / service_unavailable (Retry-After)
    ├── RequestTimeout            504 server_error / request_timeout
    └── EngineFailure             500 server_error / engine_error

Code raises these; ``error_body`` turns one into the OpenAI envelope
``{"error": {"message", "type", "param", "code"}}`` for JSON responses and for the SSE error
event alike; paths of another API get that API's envelope (``ENVELOPES``: Anthropic's
``{"type": "error", "error": {"type", "message"}}`` under ``/v1/messages``, and under
``/v1/models`` for Anthropic's clients). Anything else that
escapes is logged and answered as a generic 500 with no Python internals in the message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from server.logs import request_id_var


class APIError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers = headers or {}


class InvalidRequest(APIError):
    status = 400
    type = "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    default_code = "context_length_exceeded"


class Unauthorized(APIError):
    status = 401
    type = "authentication_error"
    default_code = "invalid_api_key"


class NotFound(APIError):
    status = 404
    type = "invalid_request_error"
    default_code = "not_found"


class ModelNotFound(NotFound):
    default_code = "model_not_found"


class MethodNotAllowed(APIError):
    status = 405
    type = "invalid_request_error"
    default_code = "method_not_allowed"


class PayloadTooLarge(APIError):
    status = 413
    type = "invalid_request_error"
    default_code = "payload_too_large"


class Overloaded(APIError):
    status = 429
    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class Unavailable(APIError):
    status = 503
    type = "server_error"
    default_code = "service_unavailable"


class RequestTimeout(APIError):
    status = 504
    type = "server_error"
    default_code = "request_timeout"


class EngineFailure(APIError):
    status = 500
    type = "server_error"
    default_code = "engine_error"


def error_body(err: APIError) -> dict[str, Any]:
    """The OpenAI error envelope for ``err`` (same for JSON responses and SSE events)."""
    return {"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}}


# Anthropic's error types by status (docs: "HTTP errors"); other 4xx are invalid_request_error,
# other 5xx api_error. Our 503s (loading, draining) are its overloaded_error.
ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                   403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                   429: "rate_limit_error", 500: "api_error", 503: "overloaded_error",
                   504: "timeout_error"}


def anthropic_error_body(err: APIError) -> dict[str, Any]:
    """Anthropic's envelope for ``err``: the field a 400 is about leads its message, as
    Anthropic writes it (``messages.1.content.0.source: …``)."""
    kind = ANTHROPIC_TYPES.get(err.status) or ("api_error" if err.status >= 500
                                               else "invalid_request_error")
    message = f"{err.param}: {err.message}" if err.param else err.message
    body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
    request_id = request_id_var.get()
    if request_id:
        body["request_id"] = request_id
    return body


Envelope = Callable[[APIError], dict[str, Any]]
# Path prefix → the envelope of the API served there; everything else speaks OpenAI's.
ENVELOPES: tuple[tuple[str, Envelope], ...] = (("/v1/messages", anthropic_error_body),)


def envelope_for(path: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> Envelope:
    """How errors on ``path`` are written (the same for its JSON answers and its middleware).
    ``/v1/models`` belongs to both APIs: Anthropic's clients, which send ``anthropic-version``
    on every request, get Anthropic's envelope there."""
    for prefix, envelope in ENVELOPES:
        if path.startswith(prefix):
            return envelope
    if path.startswith("/v1/models") and is_anthropic_client(headers):
        return anthropic_error_body
    return error_body


def is_anthropic_client(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    return any(name.lower() == b"anthropic-version" for name, _ in headers)


INTERNAL = EngineFailure("The server had an error while processing your request.", code="internal_error")
