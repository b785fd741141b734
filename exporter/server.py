"""HTTP endpoints: /metrics, a landing page, /-/healthy, /-/ready and POST /-/reload.

One asyncio event loop in its own thread serves every connection; a request costs a header
parse and a write of bytes rendered beforehand, so the loop never holds the interpreter for
long and the collection loop (another thread of this process) keeps its timing while the
server is flooded (docs/benchmarks.md). What keeps it standing:

- /metrics is rendered once per change of the result store (`Store.version`) by one render
  thread (single-flight), plain and gzip, and at most once per two render durations, so a
  scrape flood cannot turn into a render flood; a scrape is a copy of cached bytes.
- A connection cap: at the cap, a new connection evicts the one that has waited longest
  without a complete request (idle keep-alive, slow headers, TLS handshake), so idle or slow
  clients can never lock Prometheus out; when every connection is mid-request, the newcomer
  is closed at once instead of queuing.
- Deadlines: a request (headers and body), and a TLS handshake, must arrive within
  `read_timeout`, and an answer must be read by the client within `read_timeout` too; a
  keep-alive connection is closed after `idle_timeout` without a request. Headers are capped
  at `max_header_bytes`, bodies at `max_body_bytes`; a client that pipelines requests without
  reading the answers is not read from until it does (asyncio's write flow control).
- TLS and basic auth from `--web.config.file` (exporter/webconfig.py), reread on change;
  bcrypt runs on its own thread and verdicts are remembered.
"""

from __future__ import annotations

import asyncio
import errno
import gzip
import html
import logging
import resource
import socket
import ssl
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING

import h11
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from exporter import __version__
from exporter.secrets import redact
from exporter.webconfig import BasicAuth, WebConfig, WebConfigSource

if TYPE_CHECKING:
    from exporter.runtime import Exporter

log = logging.getLogger("exporter.http")

DEFAULT_PORT = 9883  # not taken in the Prometheus default port allocations list
Reload = Callable[[], tuple[bool, str]]
TEXT = b"text/plain; charset=utf-8"
NOFILE_CEILING = 1 << 20  # what to aim for when the hard limit is "unlimited"


@dataclass(frozen=True)
class Limits:
    max_connections: int = 512
    read_timeout: float = 10.0  # accept/first byte -> complete request; also the TLS handshake
    idle_timeout: float = 60.0  # keep-alive wait for the next request
    max_header_bytes: int = 8192
    max_body_bytes: int = 4096
    max_auth_pending: int = 16  # bcrypt checks queued before answering 503
    backlog: int = 1024


@dataclass(frozen=True)
class Rendered:
    version: int
    body: bytes
    gzipped: bytes
    at: float  # monotonic time the render finished
    cost: float  # seconds the render took


class MetricsCache:
    """The exposition of `exporter.registry`, rendered again only when the store changed.

    `fresh()` is the loop's cheap check; `get()` renders (on the render thread) when needed.
    Concurrent callers of a new version wait on one lock and find the render done. While a
    render is younger than `gap_factor` times its own cost the previous one is served, which
    bounds rendering to a third of one core however hard /metrics is hit (for the demo's
    409 series that is a 10 ms window; for 45,000 series about one second).
    """

    def __init__(self, exporter: Exporter, gap_factor: float = 2.0) -> None:
        self._exporter = exporter
        self._gap_factor = gap_factor
        self._lock = threading.Lock()
        self._entry: Rendered | None = None

    def fresh(self) -> Rendered | None:
        e = self._entry
        if e is None:
            return None
        if e.version == self._exporter.store.version:
            return e
        if time.monotonic() - e.at < e.cost * self._gap_factor:
            return e
        return None

    def get(self) -> Rendered:
        with self._lock:
            e = self.fresh()
            if e is not None:
                return e
            version = self._exporter.store.version  # read first: a put during the render
            started = time.monotonic()  # leaves the entry stale, so the next scrape renders
            body = generate_latest(self._exporter.registry)
            gzipped = gzip.compress(body, compresslevel=6, mtime=0)
            now = time.monotonic()
            self._entry = e = Rendered(version, body, gzipped, now, now - started)
            return e


def landing_page(exporter: Exporter) -> bytes:
    rows = "".join(
        f"<li>target <b>{html.escape(t.name)}</b>: {len(t.queues)} queue(s)</li>"
        for t in exporter.config.targets
    ) + "".join(
        f"<li>app <b>{html.escape(a.name)}</b>: {len(a.endpoints)} endpoint(s)</li>"
        for a in exporter.config.apps
    )
    return (
        "<!doctype html><html><head><title>runbook-exporter</title></head><body>"
        f"<h1>runbook-exporter {__version__}</h1>"
        '<p><a href="metrics">Metrics</a> · <a href="-/healthy">healthy</a> · '
        f'<a href="-/ready">ready</a></p><ul>{rows}</ul></body></html>'
    ).encode()


def parse_listen_address(addr: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` (host "" = every interface)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid listen address {addr!r}: use host:port, e.g. :{DEFAULT_PORT}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"invalid listen address {addr!r}: write IPv6 hosts in brackets, [::1]:0")
    return host, int(port)


def listen_sockets(addresses: Sequence[str], backlog: int) -> list[socket.socket]:
    """Bound, listening sockets for every address (a host name may give v4 and v6)."""
    socks: list[socket.socket] = []
    try:
        for addr in addresses:
            host, port = parse_listen_address(addr)
            if not host:  # every interface: one dual-stack socket where IPv6 exists
                socks.append(_all_interfaces(port, backlog))
                continue
            first_port = None
            seen = set()
            for family, _, _, _, sa in socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            ):
                if sa[0] in seen:
                    continue
                seen.add(sa[0])
                # port 0 on a name with several addresses: the same port for all of them
                bind_port = first_port if port == 0 and first_port else port
                s = socket.create_server((sa[0], bind_port), family=family, backlog=backlog)
                first_port = s.getsockname()[1]
                socks.append(s)
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def _all_interfaces(port: int, backlog: int) -> socket.socket:
    if socket.has_dualstack_ipv6():
        try:
            return socket.create_server(
                ("::", port), family=socket.AF_INET6, dualstack_ipv6=True, backlog=backlog
            )
        except OSError as e:  # IPv6 present but disabled (sysctl): IPv4 only, as before
            if e.errno not in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                raise
    return socket.create_server(("0.0.0.0", port), backlog=backlog)


def raise_nofile_limit() -> None:
    """Raise the soft open-file limit to the hard one: a scrape flood must not take the
    descriptors the probes and database connections need (the cap bounds our share)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = NOFILE_CEILING if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        log.info("raised the open-file limit", extra={"soft": soft, "to": target})
    except (ValueError, OSError) as e:  # e.g. a seccomp filter: LimitNOFILE= in the unit
        log.warning("cannot raise the open-file limit", extra={"soft": soft, "error": str(e)})


class _Connection(asyncio.Protocol):
    """One client connection: h11 parses, handlers answer from memory."""

    def __init__(self, server: HTTPServer) -> None:
        self.srv = server
        self.transport: asyncio.Transport | None = None
        self.h11 = h11.Connection(
            h11.SERVER, max_incomplete_event_size=server.limits.max_header_bytes
        )
        self.phase = "idle"  # idle | reading | busy (a handler runs) | closed
        self.deadline = 0.0
        self.request: h11.Request | None = None
        self.body_bytes = 0
        self.web = WebConfig()
        self.handshaking = False
        self.write_paused = False  # the client is not reading what we wrote
        self.write_deadline = 0.0

    # --- transport events -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        srv = self.srv
        if not srv.admit(self):
            transport.abort()
            self.phase = "closed"
            return
        self.deadline = time.monotonic() + srv.limits.read_timeout
        self.web = srv.web.current()
        if self.web.tls is not None:
            self.phase, self.handshaking = "reading", True
            transport.pause_reading()  # no plaintext reaches us before the handshake
            srv.loop.create_task(self._start_tls(self.web.tls))

    async def _start_tls(self, ctx: ssl.SSLContext) -> None:
        try:
            tls = await self.srv.loop.start_tls(
                self.transport,  # type: ignore[arg-type]
                self,
                ctx,
                server_side=True,
                ssl_handshake_timeout=self.srv.limits.read_timeout,
            )
        except (Exception, asyncio.CancelledError):  # handshake failed, timed out, reset
            self._forget()  # start_tls closed the transport; no connection_lost follows
            return
        if self.phase == "closed" or tls is None:
            if tls is not None:
                tls.abort()
            return
        self.transport, self.handshaking = tls, False
        self.phase = "idle"
        if self.h11.trailing_data[0]:  # decrypted before start_tls returned (see below)
            self.phase = "reading"
            self._advance()

    def data_received(self, data: bytes) -> None:
        if self.handshaking:
            # asyncio hands over the first decrypted bytes as the handshake completes, before
            # start_tls returns the TLS transport: keep them until we can answer over it
            self.h11.receive_data(data)
            return
        if self.phase == "idle":
            self.phase = "reading"
            self.deadline = time.monotonic() + self.srv.limits.read_timeout
        self.h11.receive_data(data)
        if self.phase != "busy":
            self._advance()

    def eof_received(self) -> bool | None:
        self.h11.receive_data(b"")
        if self.phase != "busy":
            self._advance()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()

    # Flow control: a client that pipelines requests without reading the answers would
    # otherwise make us buffer one exposition per request. Past asyncio's high-water mark
    # we stop reading and answering until its buffer drains (or the write deadline cuts it).
    def pause_writing(self) -> None:
        self.write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.phase not in ("busy", "closed") and self.transport is not None:
            self.transport.resume_reading()
            self._advance()

    def unsent(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def _forget(self) -> None:
        self.phase = "closed"
        self.srv.forget(self)

    def drop(self) -> None:
        """Close now (deadline passed, evicted, server stopping)."""
        self.phase = "closed"
        if self.transport is not None:
            self.transport.abort()
        self.srv.forget(self)

    # --- requests --------------------------------------------------------------------

    def _advance(self) -> None:
        """Feed parsed events to the handlers until h11 needs more data or a handler waits."""
        while self.phase not in ("busy", "closed") and not self.write_paused:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as e:
                self._error(e.error_status_hint, "Bad request\n")
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            kind = type(event)
            if kind is h11.Request:
                self.request, self.body_bytes = event, 0
                # h11 caps headers still arriving; this catches a head that came whole
                size = len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers)
                if size > self.srv.limits.max_header_bytes:
                    self._error(431, "Request headers too large\n")
                    return
                length = _header(event, b"content-length")
                if length and (
                    not length.isdigit() or int(length) > self.srv.limits.max_body_bytes
                ):
                    self._error(413, "Request body too large\n")
                    return
            elif kind is h11.Data:
                self.body_bytes += len(event.data)
                if self.body_bytes > self.srv.limits.max_body_bytes:
                    self._error(413, "Request body too large\n")
                    return
            elif kind is h11.EndOfMessage:
                self.phase = "busy"
                self.srv.evictable.pop(self, None)
                self._dispatch()
            elif kind is h11.ConnectionClosed:
                self._close()
                return

    def _dispatch(self) -> None:
        req = self.request
        assert req is not None
        self.web = web = self.srv.web.current()
        if web.users:
            creds = BasicAuth.credentials(_header(req, b"authorization"))
            if creds is None:
                self._unauthorized()
                return
            verdict = self.srv.auth.cached(web, *creds)
            if verdict is None:
                if self.srv.auth_pending >= self.srv.limits.max_auth_pending:
                    self._respond(503, b"Too many authentication checks in progress\n")
                    return
                self.srv.auth_pending += 1
                future = self.srv.loop.run_in_executor(
                    self.srv.auth_pool, self.srv.auth.verify, web, *creds
                )
                future.add_done_callback(self._auth_done)
                self._wait(future, self._authenticated)
                return
            if not verdict:
                self._unauthorized()
                return
        self._route(req)

    def _auth_done(self, future: asyncio.Future) -> None:
        self.srv.auth_pending -= 1

    def _authenticated(self, future: asyncio.Future) -> None:
        if future.exception() is None and future.result():
            self._route(self.request)  # type: ignore[arg-type]
        else:
            self._unauthorized()

    def _route(self, req: h11.Request) -> None:
        path = req.target.split(b"?", 1)[0]
        method = req.method
        if path == b"/-/reload":
            if method != b"POST":
                self._respond(405, b"Method not allowed: use POST\n", ((b"allow", b"POST"),))
            elif self.srv.reload is None:
                self._respond(404, b"Reload is not available in this process\n")
            else:
                self._wait(self.srv.reloading(), self._reloaded)
            return
        if method not in (b"GET", b"HEAD"):
            self._respond(405, b"Method not allowed\n", ((b"allow", b"GET, HEAD"),))
        elif path == b"/metrics":
            rendered = self.srv.cache.fresh()
            if rendered is not None:
                self._send_metrics(rendered)
            else:
                future = self.srv.loop.run_in_executor(self.srv.render_pool, self.srv.cache.get)
                self._wait(future, self._rendered)
        elif path == b"/":
            body = landing_page(self.srv.exporter)
            self._respond(200, body, ctype=b"text/html; charset=utf-8")
        elif path == b"/-/healthy":
            self._respond(200, b"Healthy\n")
        elif path == b"/-/ready":
            if self.srv.exporter.ready():
                self._respond(200, b"Ready\n")
            else:
                self._respond(503, b"Not ready: first collection still running\n")
        else:
            self._respond(404, b"Not found\n")

    def _rendered(self, future: asyncio.Future) -> None:
        if future.exception() is not None:
            log.error("rendering /metrics failed", extra={"error": redact(str(future.exception()))})
            self._respond(500, b"Error rendering metrics\n")
        else:
            self._send_metrics(future.result())

    def _reloaded(self, future: asyncio.Future) -> None:
        exc = future.exception()
        if exc is not None:
            ok, message = False, redact(f"reload failed: {type(exc).__name__}: {exc}")
        else:
            ok, message = future.result()
        self._respond(200 if ok else 500, (message.rstrip("\n") + "\n").encode())

    def _send_metrics(self, rendered: Rendered) -> None:
        accept = _header(self.request, b"accept-encoding") or b""  # type: ignore[arg-type]
        if b"gzip" in accept and not _gzip_refused(accept):
            extra = ((b"content-encoding", b"gzip"), (b"vary", b"Accept-Encoding"))
            self._respond(200, rendered.gzipped, extra, CONTENT_TYPE)
        else:
            self._respond(200, rendered.body, ((b"vary", b"Accept-Encoding"),), CONTENT_TYPE)

    # --- responses -------------------------------------------------------------------

    def _unauthorized(self) -> None:
        self._respond(401, b"Unauthorized\n", ((b"www-authenticate", b"Basic"),))

    def _respond(
        self,
        status: int,
        body: bytes,
        extra: tuple[tuple[bytes, bytes], ...] = (),
        ctype: bytes = TEXT,
    ) -> None:
        if self.phase == "closed" or self.transport is None:
            return
        headers = [
            (b"content-type", ctype),
            (b"content-length", str(len(body)).encode()),
            *extra,
            *self.web.headers,
        ]
        try:
            out = self.h11.send(
                h11.Response(status_code=status, headers=headers, reason=REASONS.get(status, b""))
            )
            if self.request is None or self.request.method != b"HEAD":
                self.transport.write(out)  # type: ignore[arg-type]
                out = self.h11.send(h11.Data(data=body))
            self.transport.write(out + self.h11.send(h11.EndOfMessage()))  # type: ignore[operator]
        except h11.LocalProtocolError:
            self.drop()
            return
        # what is written must be read within the read timeout, or the connection goes
        self.write_deadline = time.monotonic() + self.srv.limits.read_timeout
        self._next_cycle()

    def _error(self, status: int, text: str) -> None:
        """A request we will not serve: answer if the protocol still allows it, then close."""
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE) and self.transport is not None:
            try:
                body = text.encode()
                headers = [
                    (b"content-type", TEXT),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ]
                out = self.h11.send(
                    h11.Response(
                        status_code=status, headers=headers, reason=REASONS.get(status, b"")
                    )
                )
                self.transport.write(out + self.h11.send(h11.Data(data=body)))  # type: ignore[operator]
            except h11.LocalProtocolError:
                pass
        self._close()

    def _close(self) -> None:
        self.phase = "closed"
        if self.transport is not None:
            self.transport.close()  # flushes what is written, then closes
        self.srv.forget(self)

    def _next_cycle(self) -> None:
        if self.h11.our_state is h11.MUST_CLOSE or self.h11.their_state is not h11.DONE:
            self._close()
            return
        self.h11.start_next_cycle()
        self.request = None
        self.phase = "idle"
        self.deadline = time.monotonic() + self.srv.limits.idle_timeout
        self.srv.evictable[self] = None
        if self.h11.trailing_data[0]:  # a pipelined request is already buffered
            self.phase = "reading"
            self.deadline = time.monotonic() + self.srv.limits.read_timeout

    def _wait(self, future: asyncio.Future, then: Callable[[asyncio.Future], None]) -> None:
        """Answer later (render, bcrypt, reload): read nothing more until then."""
        self.transport.pause_reading()  # type: ignore[union-attr]

        def done(f: asyncio.Future) -> None:
            if self.phase == "closed":
                return
            then(f)
            if self.phase not in ("busy", "closed") and not self.write_paused:
                self.transport.resume_reading()  # type: ignore[union-attr]
                self._advance()  # requests pipelined behind this one

        future.add_done_callback(done)


CONTENT_TYPE = CONTENT_TYPE_LATEST.encode()
REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


def _header(req: h11.Request, name: bytes) -> bytes | None:
    for key, value in req.headers:
        if key == name:
            return value
    return None


def _gzip_refused(accept: bytes) -> bool:
    for part in accept.split(b","):
        coding, _, params = part.strip().partition(b";")
        if coding.strip() == b"gzip":
            return params.replace(b" ", b"") in (b"q=0", b"q=0.0", b"q=0.00", b"q=0.000")
    return False


class HTTPServer:
    """The exporter's HTTP server on its own thread and event loop.

    `reload`, when given, is called (on a worker thread) by POST /-/reload and returns
    (ok, message). Bind and web-config errors are raised by the constructor (OSError,
    ValueError, webconfig.WebConfigError).
    """

    def __init__(
        self,
        exporter: Exporter,
        address: str | Sequence[str],
        web_config: str | None = None,
        reload: Reload | None = None,
        limits: Limits | None = None,
        web_recheck: float = 0.5,
        sweep_every: float | None = None,
        switch_interval: float | None = 0.001,
    ) -> None:
        self.exporter = exporter
        self.reload = reload
        self.limits = limits or Limits()
        self.web = WebConfigSource(web_config, web_recheck)
        self.auth = BasicAuth()
        self.auth_pending = 0
        self.cache = MetricsCache(exporter)
        addresses = [address] if isinstance(address, str) else list(address)
        self.sockets = listen_sockets(addresses, self.limits.backlog)
        self.addresses = [s.getsockname()[:2] for s in self.sockets]
        self.port = self.addresses[0][1]
        self.conns: set[_Connection] = set()
        # connections without a request in progress, oldest first: who makes room at the cap
        self.evictable: OrderedDict[_Connection, None] = OrderedDict()
        shortest = min(self.limits.read_timeout, self.limits.idle_timeout)
        self.sweep_every = sweep_every or min(1.0, max(0.02, shortest / 4))
        self.switch_interval = switch_interval
        self.render_pool = ThreadPoolExecutor(1, thread_name_prefix="metrics-render")
        self.auth_pool = ThreadPoolExecutor(1, thread_name_prefix="http-auth")
        self.reload_pool = ThreadPoolExecutor(1, thread_name_prefix="http-reload")
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._cap_logged_at = 0.0
        self._reload_future: asyncio.Future | None = None
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return self.addresses[0]

    def reloading(self) -> asyncio.Future:
        """The reload in progress, or a new one: a burst of POSTs runs one reload, not a queue
        of them, and every request of the burst gets its result."""
        if self._reload_future is None or self._reload_future.done():
            self._reload_future = self.loop.run_in_executor(self.reload_pool, self.reload)
        return self._reload_future

    def set_exporter(self, exporter: Exporter) -> None:
        """Serve another exporter from now on (a reload that builds a new one)."""
        self.cache = MetricsCache(exporter)
        self.exporter = exporter

    # --- connection bookkeeping (loop thread only) ------------------------------------

    def admit(self, conn: _Connection) -> bool:
        if len(self.conns) >= self.limits.max_connections:
            self._log_cap()
            if not self.evictable:
                return False  # everyone is mid-request: refuse rather than queue
            victim = next(iter(self.evictable))
            victim.drop()
        self.conns.add(conn)
        self.evictable[conn] = None
        return True

    def forget(self, conn: _Connection) -> None:
        self.conns.discard(conn)
        self.evictable.pop(conn, None)

    def _log_cap(self) -> None:
        now = time.monotonic()
        if now - self._cap_logged_at > 60:
            self._cap_logged_at = now
            log.warning(
                "connection cap reached: closing the longest-waiting connections",
                extra={"max_connections": self.limits.max_connections},
            )

    def _sweep(self) -> None:
        now = time.monotonic()
        for conn in [c for c in self.conns if c.phase != "busy" and c.deadline < now]:
            conn.drop()
        for conn in [c for c in self.conns if c.write_deadline < now and c.unsent()]:
            conn.drop()

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        raise_nofile_limit()
        if self.switch_interval:
            # a busy thread is made to hand over the interpreter after this long (default
            # 5 ms): the collection loop then waits at most ~1 ms per wake-up under a flood
            sys.setswitchinterval(self.switch_interval)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the HTTP server did not start")

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop.set_exception_handler(_quiet_exceptions)
        self._stop = asyncio.Event()
        servers = [
            await self.loop.create_server(
                lambda: _Connection(self), sock=s, backlog=self.limits.backlog
            )
            for s in self.sockets
        ]
        self._started.set()
        try:
            while not self._stop.is_set():
                try:
                    await asyncio.wait_for(self._stop.wait(), self.sweep_every)
                except TimeoutError:
                    self._sweep()
        finally:
            for s in servers:
                s.close()
            for conn in list(self.conns):
                conn.drop()
            for s in servers:
                await s.wait_closed()

    def stop(self) -> None:
        if self._thread.is_alive() and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(5)
        for s in self.sockets:
            s.close()
        for pool in (self.render_pool, self.auth_pool, self.reload_pool):
            pool.shutdown(wait=False, cancel_futures=True)


def _quiet_exceptions(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """Client misbehaviour (resets, failed handshakes) is routine: debug, no traceback."""
    exc = context.get("exception")
    log.debug(
        "http connection error",
        extra={"error": redact(f"{type(exc).__name__}: {exc}" if exc else context["message"])},
    )
