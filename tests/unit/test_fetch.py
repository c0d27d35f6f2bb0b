"""server.chat.fetch: the image-URL fetcher's refusals and its fetches.

House rule: traffic goes to loopback only. Every refusal of a non-loopback address is shown to
happen before any connection: the inner network backend records each connect_tcp call and never
connects anywhere but loopback (`Recorder`), and DNS answers come from a patched getaddrinfo.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import socket
import ssl
import threading
import time
import typing
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

import httpcore
import pytest

from server.chat.fetch import FetchError, FetchPolicy, fetch

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 56
LOOPBACK = ("127.0.0.0/8", "::1/128")


class NoConnect(Exception):
    """Raised by Recorder instead of connecting to an address it must not reach."""


class Recorder(httpcore.AsyncNetworkBackend):
    """Inner backend: records every connect_tcp host; connects (via AnyIO) to loopback only."""

    def __init__(self, real: bool = False) -> None:
        self.hosts: list[str] = []
        self.real = httpcore.AnyIOBackend() if real else None

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.hosts.append(host)
        if self.real is None or not ipaddress.ip_address(host).is_loopback:
            raise NoConnect(host)
        return await self.real.connect_tcp(host, port, timeout=timeout, local_address=local_address)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def run(url: str, policy: FetchPolicy, backend: httpcore.AsyncNetworkBackend) -> tuple[bytes, str | None]:
    return asyncio.run(fetch(url, policy, backend=backend))


def refused(url: str, policy: FetchPolicy, code: str) -> FetchError:
    """Assert `url` fails with `code` without any connection attempt."""
    recorder = Recorder()
    with pytest.raises(FetchError) as info:
        run(url, policy, recorder)
    assert info.value.code == code, str(info.value)
    assert recorder.hosts == []
    return info.value


def policy(**kwargs: typing.Any) -> FetchPolicy:
    return FetchPolicy(**{"enabled": True, "domains": ("*",), **kwargs})


class FakeDNS(dict[str, list[str]]):
    """name -> addresses; `answers_in_turn` gives a name a different answer on each lookup."""

    def __init__(self) -> None:
        super().__init__()
        self.turns: dict[str, list[list[str]]] = {}
        self.calls: collections.Counter[str] = collections.Counter()

    def answers_in_turn(self, name: str, *answers: list[str]) -> None:
        self.turns[name] = list(answers)

    async def getaddrinfo(self, host: str, port: object, *args: object, **kwargs: object) -> list[tuple]:
        self.calls[host] += 1
        answer = self.turns[host].pop(0) if self.turns.get(host) else self.get(host)
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        family = {4: socket.AF_INET, 6: socket.AF_INET6}
        return [
            (family[ipaddress.ip_address(a).version], socket.SOCK_STREAM, 6, "", (a, port or 0))
            for a in answer
        ]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    """Replace the event loop's getaddrinfo: no real name is ever looked up."""
    fake = FakeDNS()

    async def getaddrinfo(loop: object, host: str, port: object, *args: object, **kw: object) -> list[tuple]:
        return await fake.getaddrinfo(host, port)

    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "getaddrinfo", getaddrinfo)
    return fake


# --- a local HTTP server on 127.0.0.1 -------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LocalServer

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.seen.append((self.path, dict(self.headers)))
        path, query = urlsplit(self.path).path, parse_qs(urlsplit(self.path).query)
        if path == "/img":
            self.reply(200, PNG, "image/png")
        elif path == "/redirect":
            self.send_response(int(query.get("status", ["302"])[0]))
            self.send_header("Location", query["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/big":
            self.reply(200, b"x" * int(query["n"][0]), "image/jpeg")
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(int(query["chunks"][0])):
                self.wfile.write(b"1f4\r\n" + b"x" * 500 + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/declared":  # announces a large body, sends a few bytes and hangs up
            self.send_response(200)
            self.send_header("Content-Length", query["n"][0])
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.close_connection = True
        elif path == "/stall":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.wfile.flush()
            self.server.release.wait(5)
        else:
            self.reply(404, b"not found", "text/plain")

    def reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class LocalServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, Handler)
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.release = threading.Event()

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that hang up early (body caps, timeouts) are expected here


def serve(server: LocalServer) -> Iterator[str]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{'[::1]' if host == '::1' else host}:{port}"
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def local_server() -> Iterator[LocalServer]:
    server = LocalServer(("127.0.0.1", 0))
    for _ in serve(server):
        yield server


@pytest.fixture
def local(local_server: LocalServer) -> str:
    host, port = local_server.server_address[:2]
    return f"http://{host}:{port}"


LOCAL = FetchPolicy(enabled=True, domains=("127.0.0.1",), networks=("127.0.0.0/8",), timeout=5)


# --- rule 1: disabled --------------------------------------------------------------------------------


def test_disabled_refuses_and_explains() -> None:
    error = refused("http://127.0.0.1/img", FetchPolicy(), "image_fetch_disabled")
    assert "data:" in str(error) and "image_fetch" in str(error)
    assert FetchPolicy().enabled is False


# --- rule 2: URL shape -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/a.png",
        "gopher://example.com/",
        "javascript:alert(1)",
        "data:image/png;base64,AAAA",
        "http:///a.png",
        "https://",
        "example.com/a.png",
        "http://user:pass@example.com/a.png",
        "http://user@example.com/a.png",
        "http://example.com\\@127.0.0.1/a.png",
        "http://example.com:99999/a.png",
        "http://exa mple.com/a.png",
    ],
)
def test_bad_urls_are_invalid(url: str) -> None:
    refused(url, policy(), "invalid_image_url")


# --- rule 3: domain allowlist ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("domains", "host", "allowed"),
    [
        (("example.com",), "example.com", True),
        (("example.com",), "www.example.com", False),
        (("example.com",), "notexample.com", False),
        (("*.example.com",), "img.example.com", True),
        (("*.example.com",), "a.b.example.com", True),
        (("*.example.com",), "example.com", False),
        (("*.example.com",), "badexample.com", False),
        (("*",), "anything.org", True),
        (("Example.COM.",), "EXAMPLE.com.", True),
        (("other.org", "example.com"), "example.com", True),
        ((), "example.com", False),
        (("example.com",), "1.1.1.1", False),
        (("*.example.com",), "1.1.1.1", False),
        (("1.1.1.1",), "1.1.1.1", True),
        (("*",), "1.1.1.1", True),
        (("2606:4700::1111",), "[2606:4700::1111]", True),
        (("[2606:4700::1111]",), "[2606:4700::1111]", True),
    ],
)
def test_domain_allowlist(dns: FakeDNS, domains: tuple[str, ...], host: str, allowed: bool) -> None:
    for name in ("example.com", "www.example.com", "notexample.com", "img.example.com",
                 "a.b.example.com", "badexample.com", "anything.org"):
        dns[name] = ["1.1.1.1"]
    url = f"https://{host}/a.png"
    if not allowed:
        refused(url, policy(domains=domains), "image_url_not_allowed")
        return
    recorder = Recorder()
    with pytest.raises(NoConnect):  # the policy let it through; the recorder stops the connection
        run(url, policy(domains=domains), recorder)
    assert recorder.hosts == [host.strip("[]") if host[0] == "[" else "1.1.1.1"]


# --- rule 4: addresses -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1", "127.1.2.3", "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254",
        "0.0.0.0", "100.64.0.1", "224.0.0.1", "255.255.255.255", "240.0.0.1", "192.0.2.1",
        "[::1]", "[fe80::1]", "[fc00::1]", "[::]", "[::ffff:127.0.0.1]", "[::ffff:10.0.0.1]",
        "[64:ff9b::7f00:1]", "[2002:7f00:1::]", "[ff02::1]", "2130706433", "127.1",
    ],
)
def test_non_public_ip_literals_refused_without_connecting(host: str) -> None:
    error = refused(f"http://{host}/a.png", policy(), "image_url_not_allowed")
    assert "private, loopback or link-local" in str(error)


def test_ipv4_mapped_addresses_judged_by_their_ipv4(dns: FakeDNS) -> None:
    recorder = Recorder()
    with pytest.raises(NoConnect):  # a mapped public address is public
        run("http://[::ffff:1.1.1.1]/a.png", policy(), recorder)
    assert [ipaddress.ip_address(h) for h in recorder.hosts] == [ipaddress.ip_address("::ffff:1.1.1.1")]
    dns["mapped.internal"] = ["::ffff:10.1.2.3"]
    recorder = Recorder()
    with pytest.raises(NoConnect):  # and a mapped private one is inside an IPv4 network
        run("http://mapped.internal/a.png", policy(networks=("10.1.0.0/16",)), recorder)
    assert [ipaddress.ip_address(h) for h in recorder.hosts] == [ipaddress.ip_address("::ffff:10.1.2.3")]


def test_literal_listed_in_domains_still_needs_a_public_address() -> None:
    metadata = "http://169.254.169.254/latest/meta-data/"
    refused(metadata, policy(domains=("169.254.169.254",)), "image_url_not_allowed")


def test_public_ip_literal_passes_and_only_that_address_is_dialled() -> None:
    recorder = Recorder()
    with pytest.raises(NoConnect):
        run("http://1.1.1.1/a.png", policy(domains=("1.1.1.1",)), recorder)
    assert recorder.hosts == ["1.1.1.1"]


def test_name_resolving_to_private_address_refused(dns: FakeDNS) -> None:
    dns["internal.example.com"] = ["10.0.0.5"]
    error = refused("http://internal.example.com/x", policy(), "image_url_not_allowed")
    assert "internal.example.com" in str(error) and "10.0.0.5" not in str(error)


def test_name_resolving_to_public_and_private_addresses_refused(dns: FakeDNS) -> None:
    dns["mixed.example.com"] = ["1.1.1.1", "192.168.0.10"]
    refused("http://mixed.example.com/x", policy(), "image_url_not_allowed")


def test_name_resolving_to_mapped_loopback_refused(dns: FakeDNS) -> None:
    dns["mapped.example.com"] = ["::ffff:127.0.0.1"]
    refused("http://mapped.example.com/x", policy(), "image_url_not_allowed")


def test_connects_to_the_checked_address_not_the_name(dns: FakeDNS) -> None:
    # A rebinding resolver: public on the first lookup, loopback afterwards.
    dns.answers_in_turn("rebind.example.com", ["1.1.1.1", "2606:4700::1111"], ["127.0.0.1"], ["127.0.0.1"])
    recorder = Recorder()
    with pytest.raises(NoConnect):
        run("http://rebind.example.com/x", policy(), recorder)
    assert recorder.hosts == ["1.1.1.1"]
    assert dns.calls["rebind.example.com"] == 1


def test_dns_failure_is_fetch_failed(dns: FakeDNS) -> None:
    refused("http://nxdomain.example.com/x", policy(), "image_fetch_failed")


def test_networks_allow_listed_private_ranges(dns: FakeDNS) -> None:
    dns["cache.internal"] = ["10.1.2.3"]
    recorder = Recorder()
    with pytest.raises(NoConnect):
        run("http://cache.internal/x", policy(networks=("10.1.0.0/16",)), recorder)
    assert recorder.hosts == ["10.1.2.3"]
    refused("http://10.2.0.1/x", policy(networks=("10.1.0.0/16",)), "image_url_not_allowed")


def test_bad_network_setting_is_rejected() -> None:
    with pytest.raises(ValueError):
        FetchPolicy(enabled=True, networks=("not-a-cidr",))


# --- fetching from the local server ------------------------------------------------------------------


def test_fetch_from_local_server(local: str) -> None:
    recorder = Recorder(real=True)
    body, content_type = run(f"{local}/img", LOCAL, recorder)
    assert (body, content_type) == (PNG, "image/png")
    assert recorder.hosts == ["127.0.0.1"]


def test_request_headers(local: str, local_server: LocalServer) -> None:
    run(f"{local}/img?tag=headers", LOCAL, Recorder(real=True))
    server_seen = [headers for path, headers in local_server.seen if path == "/img?tag=headers"]
    assert len(server_seen) == 1
    headers = {k.lower(): v for k, v in server_seen[0].items()}
    assert headers["user-agent"] == "mistral-serve"
    assert headers["host"] == local.removeprefix("http://")
    assert "cookie" not in headers and "authorization" not in headers


def test_localhost_name_with_loopback_networks(local: str) -> None:
    port = local.rsplit(":", 1)[1]
    recorder = Recorder(real=True)
    localhost = policy(domains=("localhost",), networks=LOOPBACK)
    body, _ = run(f"http://LocalHost.:{port}/img", localhost, recorder)
    assert body == PNG
    assert all(ipaddress.ip_address(h).is_loopback for h in recorder.hosts)


def test_localhost_refused_without_networks(local: str) -> None:
    port = local.rsplit(":", 1)[1]
    refused(f"http://localhost:{port}/img", policy(domains=("localhost",)), "image_url_not_allowed")


def test_default_inner_backend_fetches(local: str) -> None:
    body, content_type = asyncio.run(fetch(f"{local}/img", LOCAL))
    assert (body, content_type) == (PNG, "image/png")


@pytest.mark.parametrize(
    ("to", "domains", "code"),
    [
        ("http://10.0.0.5/x", ("*",), "image_url_not_allowed"),
        ("http://10.0.0.5/x", ("127.0.0.1",), "image_url_not_allowed"),
        ("http://169.254.169.254/latest/meta-data/", ("*",), "image_url_not_allowed"),
        ("http://[::1]/x", ("*",), "image_url_not_allowed"),
        ("//10.0.0.5/x", ("*",), "image_url_not_allowed"),
        ("file:///etc/passwd", ("*",), "invalid_image_url"),
        ("http://user:pw@127.0.0.1/img", ("*",), "invalid_image_url"),
    ],
)
def test_redirect_to_forbidden_target_refused_before_connecting(
    local: str, to: str, domains: tuple[str, ...], code: str
) -> None:
    recorder = Recorder(real=True)
    url = f"{local}/redirect?to={to}"
    with pytest.raises(FetchError) as info:
        run(url, FetchPolicy(enabled=True, domains=domains, networks=("127.0.0.0/8",)), recorder)
    assert info.value.code == code, str(info.value)
    assert recorder.hosts == ["127.0.0.1"]  # only the local server was dialled
    assert "10.0.0.5" not in str(info.value) and "169.254" not in str(info.value)


@pytest.mark.parametrize("to", ["http://[x", "http://[::1", "//[x]/a.png", "http://[:::1]/",
                                "http://127.0.0.1:99999/img", "http://127.0.0.1:port/img"])
def test_malformed_redirect_target_is_invalid_not_a_crash(local: str, to: str) -> None:
    recorder = Recorder(real=True)
    with pytest.raises(FetchError) as info:
        run(f"{local}/redirect?to={quote(to)}", LOCAL, recorder)
    assert info.value.code == "invalid_image_url", str(info.value)
    assert "redirect target" in str(info.value)
    assert recorder.hosts == ["127.0.0.1"]  # only the local server was dialled


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_relative_redirect_followed(local: str, status: int) -> None:
    recorder = Recorder(real=True)
    body, content_type = run(f"{local}/redirect?status={status}&to=/img", LOCAL, recorder)
    assert (body, content_type) == (PNG, "image/png")
    assert set(recorder.hosts) == {"127.0.0.1"}


def test_too_many_redirects(local: str) -> None:
    recorder = Recorder(real=True)
    with pytest.raises(FetchError) as info:
        run(f"{local}/loop", replace(LOCAL, max_redirects=2), recorder)
    assert info.value.code == "image_fetch_failed"
    assert "2" in str(info.value)


def test_redirect_limit_is_inclusive(local: str) -> None:
    chained = f"{local}/redirect?to=/img"
    policy_1 = replace(LOCAL, max_redirects=1)
    assert run(chained, policy_1, Recorder(real=True))[0] == PNG
    policy_0 = replace(LOCAL, max_redirects=0)
    with pytest.raises(FetchError) as info:
        run(chained, policy_0, Recorder(real=True))
    assert info.value.code == "image_fetch_failed"


def test_not_found(local: str) -> None:
    with pytest.raises(FetchError) as info:
        run(f"{local}/missing", LOCAL, Recorder(real=True))
    assert info.value.code == "image_fetch_failed"
    assert "404" in str(info.value)


@pytest.mark.parametrize("path", ["/big?n=2000", "/chunked?chunks=5"])
def test_body_over_cap(local: str, path: str) -> None:
    capped = replace(LOCAL, max_bytes=1000)
    with pytest.raises(FetchError) as info:
        run(f"{local}{path}", capped, Recorder(real=True))
    assert info.value.code == "image_too_large"
    assert "MB" in str(info.value)


def test_content_length_checked_before_reading(local: str) -> None:
    capped = replace(LOCAL, max_bytes=1000)
    with pytest.raises(FetchError) as info:
        run(f"{local}/declared?n=5000", capped, Recorder(real=True))
    assert info.value.code == "image_too_large"


@pytest.mark.parametrize("path", ["/big?n=1000", "/chunked?chunks=2"])
def test_body_at_cap(local: str, path: str) -> None:
    capped = replace(LOCAL, max_bytes=1000)
    body, content_type = run(f"{local}{path}", capped, Recorder(real=True))
    assert body == b"x" * 1000 and content_type == "image/jpeg"


def test_stalled_server_times_out(local: str) -> None:
    quick = replace(LOCAL, timeout=0.5)
    start = time.monotonic()
    with pytest.raises(FetchError) as info:
        run(f"{local}/stall", quick, Recorder(real=True))
    assert info.value.code == "image_fetch_timeout"
    assert time.monotonic() - start < 2


def test_connection_refused_is_fetch_failed() -> None:
    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(FetchError) as info:
        run(f"http://127.0.0.1:{port}/img", LOCAL, Recorder(real=True))
    assert info.value.code == "image_fetch_failed"
    assert "Errno" not in str(info.value)


def test_ipv6_loopback_server() -> None:
    try:
        server = LocalServer(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    gen = serve(server)
    base = next(gen)
    try:
        recorder = Recorder(real=True)
        got = run(f"{base}/img", FetchPolicy(enabled=True, domains=("::1",), networks=("::1/128",)), recorder)
        assert got == (PNG, "image/png")
        assert recorder.hosts == ["::1"]
        assert dict(server.seen[-1][1])["Host"] == base.removeprefix("http://")
    finally:
        gen.close()


# --- TLS: connecting by checked IP still verifies the certificate against the URL's host name --------


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalServer, str, list[str]]]:
    """An HTTPS server on 127.0.0.1 whose self-signed certificate names only 'images.test'."""
    pytest.importorskip("cryptography")
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "images.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("images.test")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    sni: list[str] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    context.sni_callback = lambda sock, server_name, ctx: sni.append(server_name)  # type: ignore[assignment]
    server = LocalServer(("127.0.0.1", 0))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    for _ in serve(server):
        yield server, str(cert_path), sni


def test_https_by_checked_ip_verifies_original_hostname(
    tls_server: tuple[LocalServer, str, list[str]], dns: FakeDNS, monkeypatch: pytest.MonkeyPatch
) -> None:
    import certifi

    server, ca, sni = tls_server
    monkeypatch.setattr(certifi, "where", lambda: ca)  # httpcore's default context trusts our CA too
    dns["images.test"] = ["127.0.0.1"]
    dns["other.test"] = ["127.0.0.1"]
    port = server.server_address[1]
    tls_policy = FetchPolicy(enabled=True, domains=("*.test",), networks=("127.0.0.0/8",), timeout=5)

    recorder = Recorder(real=True)
    assert run(f"https://images.test:{port}/img", tls_policy, recorder) == (PNG, "image/png")
    assert recorder.hosts == ["127.0.0.1"] and sni[-1] == "images.test"

    recorder = Recorder(real=True)
    with pytest.raises(FetchError) as info:  # same IP, but the certificate does not name other.test
        run(f"https://other.test:{port}/img", tls_policy, recorder)
    assert info.value.code == "image_fetch_failed"
    assert recorder.hosts == ["127.0.0.1"] and sni[-1] == "other.test"
