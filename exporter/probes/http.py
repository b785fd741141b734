"""One HTTP probe: a bounded request, its phases, the certificate, the body up to a cap.

Clients are shared per TLS/redirect configuration (a thousand endpoints do not need a thousand
SSL contexts), but connections are not kept alive: every probe opens a fresh connection, so
connect and TLS time and the certificate are measured on every probe, as a user would see them.

The endpoint is untrusted input. The body is read raw and decoded here, in steps that can never
produce more than what is left of the cap (httpx would inflate a whole chunk, or a stack of
codings, before we could count it); redirects are followed here, so that secret headers only
ever go to the configured origin.
"""

from __future__ import annotations

import asyncio
import base64
import http.cookiejar
import ssl
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import httpx

from exporter.probes.config import TLS, Endpoint, SecretError
from exporter.secrets import looks_secret, redact, register_secret

REASONS = (
    "connect",
    "timeout",
    "tls",
    "status",
    "body_too_large",
    "encoding",
    "json",
    "assertion",
    "check_error",
)
PHASES = ("connect", "tls", "first_byte", "body")
USER_AGENT = "runbook-exporter-probe"


class ProbeFailure(Exception):
    def __init__(self, reason: str | None, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason  # None: the request could not be built (e.g. a missing secret)
        self.detail = detail


@dataclass
class HTTPResult:
    status: int | None = None
    body: bytes | None = None  # kept only when the endpoint needs its JSON
    phases: dict[str, float] = field(default_factory=dict)
    cert_expiry: float | None = None  # unix time the leaf certificate expires
    failure: ProbeFailure | None = None
    responded: bool = False  # headers of a final response arrived
    duration: float = 0.0  # request start to end of body (or failure), client setup excluded


def ssl_context(tls: TLS) -> ssl.SSLContext:
    if tls.ca_file is not None:
        ctx = ssl.create_default_context(cafile=str(tls.ca_file))
    else:
        import certifi  # httpx's own default trust store

        ctx = ssl.create_default_context(cafile=certifi.where())
    if tls.cert_file is not None:
        # an encrypted key (swapped in after the config was checked) fails here instead of
        # letting OpenSSL prompt for a passphrase on a terminal and block the probes
        key = str(tls.key_file) if tls.key_file else None
        ctx.load_cert_chain(str(tls.cert_file), key, password=lambda: b"")
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Clients:
    """httpx clients keyed by TLS settings, created on first use."""

    def __init__(self) -> None:
        self._clients: dict[TLS, httpx.AsyncClient] = {}

    def get(self, tls: TLS) -> httpx.AsyncClient:
        client = self._clients.get(tls)  # TLS is frozen: hashable, equal by value
        if client is None:
            # a bad CA or key file is not cached: it may be fixed while we run
            client = httpx.AsyncClient(
                verify=ssl_context(tls),
                # unbounded: a hanging app must not queue other endpoints' probes
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
                # redirects are followed in _exchange, which chooses the headers of each hop
                follow_redirects=False,
                trust_env=False,  # probe the app directly, not through an env proxy
                headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
                # every probe a new visitor: no cookie set by one endpoint reaches another
                cookies=http.cookiejar.CookieJar(
                    http.cookiejar.DefaultCookiePolicy(allowed_domains=[])
                ),
            )
            self._clients[tls] = client
        return client

    async def retain(self, keep: set[TLS]) -> None:
        """Close the clients no endpoint uses any more (after a reload)."""
        for tls in [t for t in self._clients if t not in keep]:
            await self._clients.pop(tls).aclose()

    async def aclose(self) -> None:
        for c in self._clients.values():
            await c.aclose()
        self._clients.clear()


def _cert_expiry(ssl_object: Any) -> float | None:
    try:
        info = ssl_object.getpeercert()
        if info and info.get("notAfter"):
            return float(ssl.cert_time_to_seconds(info["notAfter"]))
        der = ssl_object.getpeercert(binary_form=True)  # unverified: only the DER form
    except (ValueError, AttributeError, ssl.SSLError):
        return None
    if not der:
        return None
    try:
        from cryptography import x509
    except ImportError:  # optional: without it, unverified certificates have no expiry
        return None
    cert = x509.load_der_x509_certificate(der)
    return cert.not_valid_after_utc.timestamp()


class Tracer:
    """httpcore trace callback: phase durations and the peer certificate."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.phases: dict[str, float] = {}
        self.cert_expiry: float | None = None
        self.headers_at: float | None = None

    def _add(self, phase: str, seconds: float) -> None:
        # summed over redirect hops
        self.phases[phase] = self.phases.get(phase, 0.0) + seconds

    async def __call__(self, name: str, info: dict[str, Any]) -> None:
        now = time.monotonic()
        step, _, event = name.rpartition(".")
        step = step.rpartition(".")[2]  # drop the connection./http11./http2. prefix
        if event == "started":
            self.started[step] = now
            return
        if event != "complete":
            return
        if step == "connect_tcp" and "connect_tcp" in self.started:
            self._add("connect", now - self.started.pop("connect_tcp"))
        elif step == "start_tls" and "start_tls" in self.started:
            self._add("tls", now - self.started.pop("start_tls"))
            stream = info.get("return_value")
            if stream is not None:
                self.cert_expiry = _cert_expiry(stream.get_extra_info("ssl_object"))
        elif step == "receive_response_headers" and "send_request_headers" in self.started:
            self._add("first_byte", now - self.started.pop("send_request_headers"))
            self.headers_at = now


def _has_ssl_error(exc: BaseException) -> bool:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:  # bounded: stops on a cycle
        if isinstance(e, ssl.SSLError | ssl.CertificateError):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def classify(exc: BaseException) -> ProbeFailure:
    text = redact(f"{type(exc).__name__}: {exc}".strip())
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return ProbeFailure("timeout", text)
    if _has_ssl_error(exc):
        return ProbeFailure("tls", text)
    # refused, reset, DNS, broken or malformed HTTP: the exchange itself failed
    return ProbeFailure("connect", text)


def request_headers(ep: Endpoint) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in ep.headers.items():
        if isinstance(value, str):
            headers[name] = value
        else:
            try:
                headers[name] = value.load()
            except SecretError as e:
                raise ProbeFailure(None, f"header {name}: {e}") from None
    if ep.basic_auth is not None:
        try:
            password = ep.basic_auth.password.load()
        except SecretError as e:
            raise ProbeFailure(None, f"basic_auth password: {e}") from None
        token = base64.b64encode(f"{ep.basic_auth.username}:{password}".encode()).decode()
        register_secret(token)
        headers["Authorization"] = f"Basic {token}"
    return headers


async def fetch(ep: Endpoint, clients: Clients) -> HTTPResult:
    """Run the request within the endpoint's timeout. Never raises for probe failures."""
    res = HTTPResult()
    tracer = Tracer()
    started = time.monotonic()
    try:
        headers = request_headers(ep)
        try:
            client = clients.get(ep.tls)
        except (OSError, ValueError) as e:
            raise ProbeFailure("tls", f"TLS settings: {redact(str(e))}") from None
        started = time.monotonic()
        async with asyncio.timeout(ep.probe_timeout):
            await _exchange(ep, client, headers, tracer, res)
    except ProbeFailure as f:
        res.failure = f
    except Exception as e:  # every other error is a failed probe, not a failed job
        res.failure = classify(e)
    res.duration = time.monotonic() - started
    res.phases = tracer.phases
    res.cert_expiry = tracer.cert_expiry
    return res


async def _exchange(
    ep: Endpoint, client: httpx.AsyncClient, headers: dict, tracer: Tracer, res: HTTPResult
) -> None:
    origin = _origin(httpx.URL(ep.url))
    elsewhere = _headers_for_other_origins(ep, headers)
    method, url, hop_headers = ep.method, httpx.URL(ep.url), headers
    for _ in range(ep.max_redirects + 1):  # the first request and at most max_redirects more
        request = client.build_request(
            method,
            url,
            headers=hop_headers,
            timeout=httpx.Timeout(ep.probe_timeout + 1),  # asyncio.timeout in fetch is the bound
            extensions={"trace": tracer},
        )
        resp = await client.send(request, stream=True, follow_redirects=False)
        try:
            nxt = resp.next_request  # set by httpx for a redirect with a usable Location
            if nxt is None or not ep.follow_redirects:
                res.status, res.responded = resp.status_code, True
                await _read_body(ep, resp, tracer, res)
                return
        finally:
            await resp.aclose()  # a redirect's body is never read
        # httpx worked out the next method and URL; the headers are ours to choose
        method, url = nxt.method, nxt.url
        hop_headers = headers if _origin(url) == origin else elsewhere
    res.status, res.responded = resp.status_code, True  # the last answer was still a redirect
    raise ProbeFailure("status", f"still redirected after max_redirects ({ep.max_redirects})")


DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port or DEFAULT_PORTS.get(url.scheme))


def _headers_for_other_origins(ep: Endpoint, headers: dict[str, str]) -> dict[str, str]:
    """The configured headers that may follow a redirect to another origin (scheme, host,
    port): none given as a secret, none whose name looks sensitive, no Cookie, no
    Authorization (basic auth included) and no Host (it named the configured origin)."""
    secret = {name.lower() for name, value in ep.headers.items() if not isinstance(value, str)}
    return {
        name: value
        for name, value in headers.items()
        if name.lower() not in secret
        and name.lower() not in ("host", "cookie", "authorization")
        and not looks_secret(name)
    }


async def _read_body(ep: Endpoint, resp: httpx.Response, tracer: Tracer, res: HTTPResult) -> None:
    cap = ep.max_body_size
    declared = resp.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise ProbeFailure("body_too_large", f"Content-Length {declared} is above {cap} bytes")
    decoder: Decoder | None = None
    keep = bytearray() if ep.needs_json else None
    wire = size = 0
    # raw bytes as they arrive, decoded here: both counts stay within the cap, so memory does
    # too, whatever the server sends or however well it compresses
    async for chunk in resp.aiter_raw():
        wire += len(chunk)
        if wire > cap:
            raise ProbeFailure("body_too_large", f"body is above {cap} bytes; stopped reading")
        if decoder is None:  # made on the first byte: an empty body needs no decoding
            decoder = Decoder.for_header(resp.headers.get("content-encoding", ""))
        data = decoder.decode(chunk, cap - size)
        size += len(data)
        if size > cap:
            raise ProbeFailure(
                "body_too_large", f"decoded body is above {cap} bytes; stopped decoding"
            )
        if keep is not None:
            keep.extend(data)
    res.body = bytes(keep) if keep is not None else None
    if tracer.headers_at is not None:
        tracer.phases["body"] = time.monotonic() - tracer.headers_at


# Content-Encoding -> zlib wbits; None for deflate: zlib-wrapped as the RFC says, or raw as
# some servers send it, told apart by the first two bytes
CODINGS: dict[str, int | None] = {
    "gzip": zlib.MAX_WBITS | 16,
    "x-gzip": zlib.MAX_WBITS | 16,
    "deflate": None,
}


class Decoder:
    """One Content-Encoding undone in bounded steps: decode(data, room) never returns more than
    room + 1 bytes, whatever the compression ratio, so a bomb stops at the cap."""

    def __init__(self, coding: str | None) -> None:
        self.coding = coding  # None: identity
        self.head = b""  # deflate: bytes kept until the format is known
        self.z: Any = None
        if coding is not None and CODINGS[coding] is not None:
            self.z = zlib.decompressobj(CODINGS[coding])

    @classmethod
    def for_header(cls, value: str) -> Decoder:
        codings = [c.strip().lower() for c in value.split(",")]
        codings = [c for c in codings if c and c != "identity"]
        if len(codings) > 1:
            # each layer multiplies: 1.8 KB of `gzip, gzip` inflates to gigabytes
            raise ProbeFailure("encoding", f"stacked Content-Encoding {value[:60]!r} refused")
        if codings and codings[0] not in CODINGS:
            raise ProbeFailure(
                "encoding", f"unsupported Content-Encoding {codings[0][:40]!r} (identity asked)"
            )
        return cls(codings[0] if codings else None)

    def decode(self, data: bytes, room: int) -> bytes:
        if self.coding is None:
            return data
        if self.z is None:
            self.head += data
            if len(self.head) < 2:
                return b""
            data, self.head = self.head, b""
            cmf, flg = data[0], data[1]
            zlib_wrapped = cmf & 0x0F == 8 and (cmf << 8 | flg) % 31 == 0
            self.z = zlib.decompressobj(zlib.MAX_WBITS if zlib_wrapped else -zlib.MAX_WBITS)
        try:
            # max_length > 0 always (0 would mean unlimited); input left over when the limit
            # is hit does not matter: the caller stops at room + 1
            return self.z.decompress(data, room + 1)
        except zlib.error as e:
            raise ProbeFailure("encoding", f"invalid {self.coding} body: {e}") from None
