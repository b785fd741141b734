"""One HTTP probe: a bounded request, its phases, the certificate, the body up to a cap.

Clients are shared per TLS/redirect configuration (a thousand endpoints do not need a thousand
SSL contexts), but connections are not kept alive: every probe opens a fresh connection, so
connect and TLS time and the certificate are measured on every probe, as a user would see them.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from exporter.probes.config import TLS, Endpoint, SecretError
from exporter.secrets import redact, register_secret

REASONS = ("connect", "timeout", "tls", "status", "body_too_large", "json", "assertion")
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
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Clients:
    """httpx clients keyed by TLS settings and redirect limit, created on first use."""

    def __init__(self) -> None:
        self._clients: dict[tuple[TLS, int], httpx.AsyncClient] = {}

    def get(self, tls: TLS, max_redirects: int) -> httpx.AsyncClient:
        key = (tls, max_redirects)  # TLS is frozen: hashable, equal by value
        client = self._clients.get(key)
        if client is None:
            # a bad CA or key file is not cached: it may be fixed while we run
            client = httpx.AsyncClient(
                verify=ssl_context(tls),
                # unbounded: a hanging app must not queue other endpoints' probes
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
                max_redirects=max_redirects,
                trust_env=False,  # probe the app directly, not through an env proxy
                headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
            )
            self._clients[key] = client
        return client

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
    if isinstance(exc, httpx.TooManyRedirects):
        return ProbeFailure("status", text)  # the final answer is still a redirect
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
            client = clients.get(ep.tls, ep.max_redirects)
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
    async with client.stream(
        ep.method,
        ep.url,
        headers=headers,
        follow_redirects=ep.follow_redirects,
        timeout=httpx.Timeout(ep.probe_timeout + 1),  # asyncio.timeout above is the bound
        extensions={"trace": tracer},
    ) as resp:
        res.status = resp.status_code
        res.responded = True
        declared = resp.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > ep.max_body_size:
            raise ProbeFailure(
                "body_too_large", f"Content-Length {declared} is above {ep.max_body_size} bytes"
            )
        keep = bytearray() if ep.needs_json else None
        size = 0
        # streamed: memory stays bounded by the cap whatever the server sends
        async for chunk in resp.aiter_bytes():
            size += len(chunk)
            if size > ep.max_body_size:
                raise ProbeFailure(
                    "body_too_large", f"body is above {ep.max_body_size} bytes; stopped reading"
                )
            if keep is not None:
                keep.extend(chunk)
        res.body = bytes(keep) if keep is not None else None
        if tracer.headers_at is not None:
            tracer.phases["body"] = time.monotonic() - tracer.headers_at
