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
event alike. Anything else that escapes is logged and answered as a generic 500 with no
Python internals in the message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar


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


Envelope = Callable[[APIError], dict[str, Any]]
# Path prefix → the envelope of the API served there; everything else speaks OpenAI's.
ENVELOPES: tuple[tuple[str, Envelope], ...] = ()


def envelope_for(path: str) -> Envelope:
    """How errors on ``path`` are written (the same for its JSON answers and its middleware)."""
    for prefix, envelope in ENVELOPES:
        if path.startswith(prefix):
            return envelope
    return error_body


INTERNAL = EngineFailure("The server had an error while processing your request.", code="internal_error")
