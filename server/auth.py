"""Who a request speaks for, decided once at the door (``FrontDoor``) and read from its scope.

A client presents its API key as ``Authorization: Bearer <key>`` (OpenAI's clients) or as
``x-api-key: <key>`` (Anthropic's). One request carries at most one credential: a second
``Authorization`` header, a second ``x-api-key``, or both headers with different keys is a 400
(which of them would count is exactly what an attacker would like to choose). The key that
matched becomes the request's owner, the SHA-256 of the key: stored data (``/v1/responses``)
belongs to it. Routes never read credentials themselves; they call ``owner(request)``.

With no API keys configured every request is the anonymous owner ``""``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Any

from server.errors import InvalidRequest, Unauthorized

SCOPE_KEY = "mserve.owner"
_BEARER = "bearer"


def owner_for(api_key: str | None) -> str:
    """"" without a key, else the key's SHA-256 (keys are never stored)."""
    return hashlib.sha256(api_key.encode()).hexdigest() if api_key else ""


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The one API key the request presents (None: none). Raises InvalidRequest for ambiguous
    credentials and Unauthorized for an Authorization header that is not a Bearer key."""
    auth = [v for k, v in headers if k.lower() == b"authorization"]
    api_key = [v for k, v in headers if k.lower() == b"x-api-key"]
    for name, values in (("Authorization", auth), ("x-api-key", api_key)):
        if len(values) > 1:
            raise InvalidRequest(f"The request has {len(values)} {name} headers; send exactly one "
                                 "API key.", code="ambiguous_credentials")
    bearer = None
    if auth:
        scheme, _, token = auth[0].decode("latin-1").strip().partition(" ")
        if scheme.lower() != _BEARER or not token.strip():
            raise Unauthorized("The Authorization header must be 'Bearer <key>'.")
        bearer = token.strip()
    keyed = api_key[0].decode("latin-1").strip() if api_key else None
    if bearer is not None and keyed is not None and not hmac.compare_digest(
            bearer.encode("latin-1"), keyed.encode("latin-1")):
        raise InvalidRequest("The request sends different API keys in 'Authorization' and "
                             "'x-api-key'; send one.", code="ambiguous_credentials")
    return bearer if bearer is not None else keyed


class KeyRing:
    """The server's API keys, compared in constant time (timing does not tell which matched)."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = [k.encode("latin-1") for k in keys]

    def __bool__(self) -> bool:
        return bool(self._keys)

    def matches(self, given: str | None) -> bool:
        if given is None:
            return False
        raw = given.encode("latin-1", "replace")
        ok = False
        for key in self._keys:
            ok |= hmac.compare_digest(raw, key)
        return ok


def identify(headers: Iterable[tuple[bytes, bytes]], keys: KeyRing) -> str:
    """The owner of a request to a guarded path; raises Unauthorized / InvalidRequest."""
    if not keys:
        return ""
    given = presented_key(headers)
    if not keys.matches(given):
        raise Unauthorized("Invalid or missing API key. Send it as 'Authorization: Bearer <key>' "
                           "(or 'x-api-key: <key>').")
    return owner_for(given)


def owner(request: Any) -> str:
    """The owner ``FrontDoor`` derived for this request (``request``: a Starlette request)."""
    return request.scope.get(SCOPE_KEY, "")
