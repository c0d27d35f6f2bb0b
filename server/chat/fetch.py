"""Download an image by http(s) URL without letting a request reach the server's own network.

Guarantees of `fetch`:
- nothing is fetched unless `FetchPolicy.enabled`;
- only http/https URLs without credentials whose host matches `FetchPolicy.domains`;
- every address the host resolves to must be globally routable or inside `FetchPolicy.networks`,
  and the TCP connection goes only to those checked addresses (a second DNS answer cannot
  swap in another one: no DNS rebinding); TLS is still verified against the URL's hostname;
- redirects are followed by hand and every hop is checked the same way before connecting;
- a URL that does not parse (the user's or a redirect's ``Location``) is refused as
  ``invalid_image_url`` wherever it is parsed;
- the whole fetch is bounded by `FetchPolicy.timeout` and the body by `FetchPolicy.max_bytes`.
Every refusal or failure is a `FetchError` with a user-facing message and a stable `code`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import typing
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

import httpcore

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_HOSTNAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")
_SAFE = "/%:@!$&'()*+,;=-._~"
_CONNECTION_ERRORS = (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol, OSError)


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    enabled: bool = False
    domains: tuple[str, ...] = ()  # "example.com", "*.example.com" (subdomains only), or "*"
    networks: tuple[str, ...] = ()  # CIDRs that may be reached although not public
    timeout: float = 10.0  # seconds for the whole fetch, redirects included
    max_bytes: int = 10 * 1024 * 1024
    max_redirects: int = 3

    def __post_init__(self) -> None:
        for net in self.networks:
            ipaddress.ip_network(net, strict=False)  # a bad CIDR is an operator error: ValueError


class FetchError(Exception):
    """A user-facing refusal or failure: str(exc) is one sentence, `code` is machine-readable."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _reachable(ip: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return _public(ip) or any(ip in net for net in networks)


def _public(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):  # addresses that embed an IPv4 one are judged by it
        inner = ip.sixtofour or (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None)
        if inner is not None:
            return _public(inner)
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)


def _domain_allowed(host: str, ip: IPAddress | None, domains: tuple[str, ...]) -> bool:
    for entry in domains:
        entry = entry.strip().lower().rstrip(".")
        if entry == "*":
            return True
        if ip is not None:
            if _ip(entry.strip("[]")) == ip:
                return True
        elif host == entry or (entry.startswith("*.") and host.endswith(entry[1:])):
            return True
    return False


@dataclass(frozen=True, slots=True)
class _Target:
    scheme: str
    host: str  # lower-case, no trailing dot, no brackets, ASCII
    port: int | None
    path: str

    def request(self) -> tuple[httpcore.URL, list[tuple[bytes, bytes]]]:
        netloc = f"[{self.host}]" if ":" in self.host else self.host
        if self.port is not None and self.port != {"http": 80, "https": 443}[self.scheme]:
            netloc = f"{netloc}:{self.port}"
        url = httpcore.URL(scheme=self.scheme, host=self.host, port=self.port, target=self.path)
        return url, [(b"Host", netloc.encode()), (b"User-Agent", b"mistral-serve")]


def _host_desc(host: str, hop: int) -> str:
    """Name the host in messages only if the user sent it (redirect targets may be internal)."""
    return f"The image URL host '{host}'" if hop == 0 else "The host the image URL redirected to"


def _parse(url: str, hop: int, policy: FetchPolicy) -> _Target:
    subject = "The image URL" if hop == 0 else "The image URL's redirect target"

    def invalid(why: str) -> FetchError:
        return FetchError(f"{subject} {why}.", "invalid_image_url")

    try:  # urlsplit and .port raise ValueError on a malformed host ("http://[x") or port
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise invalid("is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise invalid("must use http or https")
    if "@" in parts.netloc:
        raise invalid("must not contain a user name or password")
    host = (parts.hostname or "").rstrip(".")
    ip = _ip(host)
    if ip is None:
        try:
            host = host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise invalid("has an invalid host name") from None
        if not _HOSTNAME.fullmatch(host):
            raise invalid("has no valid host name")
    if not _domain_allowed(host, ip, policy.domains):
        desc = _host_desc(host, hop)
        raise FetchError(f"{desc} is not in the server's allowed image domains.", "image_url_not_allowed")
    try:  # quote encodes to UTF-8: a lone surrogate raises
        path = quote(parts.path or "/", safe=_SAFE)
        if parts.query:
            path += "?" + quote(parts.query, safe=_SAFE + "?")
    except UnicodeError:
        raise invalid("is not a valid URL") from None
    return _Target(scheme, host, port, path)


def _redirect(url: str, location: str) -> str:
    """The absolute URL a redirect's Location names (checked by ``_parse`` on the next hop)."""
    try:  # urljoin splits both URLs: a malformed Location ("http://[x") raises ValueError
        return urljoin(url, location.strip())
    except ValueError:
        raise FetchError("The image URL's redirect target is not a valid URL.",
                         "invalid_image_url") from None


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves each host once, checks every address, and connects the inner backend only to those."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend, networks: tuple[IPNetwork, ...]) -> None:
        self._inner = inner
        self._networks = networks
        self._checked: dict[str, list[IPAddress]] = {}

    async def resolve(self, host: str, desc: str = "The image URL host") -> list[IPAddress]:
        if host not in self._checked:
            literal = _ip(host)
            if literal is not None:
                addresses = [literal]
            else:
                try:
                    loop = asyncio.get_running_loop()
                    infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
                except (OSError, UnicodeError):
                    infos = []
                found = (_ip(str(info[4][0]).split("%")[0]) for info in infos)
                addresses = list(dict.fromkeys(ip for ip in found if ip is not None))
                if not addresses:
                    raise FetchError(f"{desc} could not be resolved.", "image_fetch_failed")
            if not all(_reachable(ip, self._networks) for ip in addresses):
                raise FetchError(
                    f"{desc} resolves to a private, loopback or link-local address, "
                    "which the server does not fetch images from.",
                    "image_url_not_allowed",
                )
            self._checked[host] = addresses
        return self._checked[host]

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        error: Exception = httpcore.ConnectError("no address to connect to")
        for ip in await self.resolve(host):
            try:
                return await self._inner.connect_tcp(
                    str(ip), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _header(response: httpcore.Response, name: bytes) -> str | None:
    return next((v.decode("latin-1") for k, v in response.headers if k.lower() == name), None)


async def _fetch(url: str, policy: FetchPolicy, guard: _GuardedBackend) -> tuple[bytes, str | None]:
    def too_large() -> FetchError:
        mb = policy.max_bytes / (1024 * 1024)
        return FetchError(f"The image is larger than the server's {mb:.6g} MB limit.", "image_too_large")

    async with httpcore.AsyncConnectionPool(network_backend=guard, retries=0) as pool:
        for hop in range(policy.max_redirects + 1):
            target = _parse(url, hop, policy)
            await guard.resolve(target.host, _host_desc(target.host, hop))
            request_url, headers = target.request()
            async with pool.stream("GET", request_url, headers=headers) as response:
                if response.status in _REDIRECTS:
                    location = _header(response, b"location")
                    if location is None:
                        message = "The image URL redirected without a Location header."
                        raise FetchError(message, "image_fetch_failed")
                    url = _redirect(url, location)
                    continue
                if not 200 <= response.status < 300:
                    message = f"The image URL returned HTTP status {response.status}."
                    raise FetchError(message, "image_fetch_failed")
                length = _header(response, b"content-length")
                if length and length.strip().isdigit() and int(length) > policy.max_bytes:
                    raise too_large()  # refuse before reading anything
                body = bytearray()
                async for chunk in response.aiter_stream():
                    body += chunk
                    if len(body) > policy.max_bytes:
                        raise too_large()
                return bytes(body), _header(response, b"content-type")
    message = f"The image URL redirected more than {policy.max_redirects} times."
    raise FetchError(message, "image_fetch_failed")


async def fetch(
    url: str, policy: FetchPolicy, *, backend: httpcore.AsyncNetworkBackend | None = None
) -> tuple[bytes, str | None]:
    """Fetch `url` under `policy`: (body, Content-Type header or None). `backend` is the inner
    network backend the checked connections go through (default `httpcore.AnyIOBackend()`)."""
    if not policy.enabled:
        raise FetchError(
            "This server does not fetch image URLs; send the image as a base64 data: URL instead "
            "(the operator can enable fetching with the image_fetch setting).",
            "image_fetch_disabled",
        )
    networks = tuple(ipaddress.ip_network(net, strict=False) for net in policy.networks)
    guard = _GuardedBackend(httpcore.AnyIOBackend() if backend is None else backend, networks)
    try:
        return await asyncio.wait_for(_fetch(url, policy, guard), policy.timeout)
    except (asyncio.TimeoutError, httpcore.TimeoutException):
        message = f"Fetching the image URL timed out after {policy.timeout:g} seconds."
        raise FetchError(message, "image_fetch_timeout") from None
    except _CONNECTION_ERRORS:  # the details may name internal addresses: not passed on
        message = "The image URL could not be fetched: the connection failed."
        raise FetchError(message, "image_fetch_failed") from None
