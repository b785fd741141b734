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

Here: `HTTPServer` (its thread, loop, connection cap and sweep) and what each path answers.
The render cache is exporter/exposition.py, addresses and sockets exporter/listen.py, the
HTTP/1.1 connection (parsing, limits, deadlines, flow control) exporter/connection.py.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import h11
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from exporter.connection import Connection, header
from exporter.exposition import MetricsCache, Rendered
from exporter.landing import DEFAULT_TELEMETRY_PATH, check_telemetry_path, landing_page
from exporter.listen import (
    DEFAULT_PORT,
    NOFILE_CEILING,
    listen_sockets,
    parse_listen_address,
    raise_nofile_limit,
)
from exporter.secrets import redact
from exporter.webconfig import BasicAuth, WebConfigSource

if TYPE_CHECKING:
    from exporter.runtime import Exporter

__all__ = ["DEFAULT_PORT", "NOFILE_CEILING", "HTTPServer", "Limits", "parse_listen_address"]

log = logging.getLogger("exporter.http")

Reload = Callable[[], tuple[bool, str]]
CONTENT_TYPE = CONTENT_TYPE_LATEST.encode()


@dataclass(frozen=True)
class Limits:
    max_connections: int = 512
    read_timeout: float = 10.0  # accept/first byte -> complete request; also the TLS handshake
    idle_timeout: float = 60.0  # keep-alive wait for the next request
    max_header_bytes: int = 8192
    max_body_bytes: int = 4096
    max_auth_pending: int = 16  # bcrypt checks queued before answering 503
    backlog: int = 1024


def _gzip_refused(accept: bytes) -> bool:
    for part in accept.split(b","):
        coding, _, params = part.strip().partition(b";")
        if coding.strip() == b"gzip":
            return params.replace(b" ", b"") in (b"q=0", b"q=0.0", b"q=0.00", b"q=0.000")
    return False


class _Endpoints(Connection):
    """The exporter's endpoints on one connection: basic auth, then the route."""

    def _dispatch(self) -> None:
        req = self.request
        assert req is not None
        self.web = web = self.srv.web.current()
        if web.users:
            creds = BasicAuth.credentials(header(req, b"authorization"))
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
        elif path == self.srv.telemetry_path:
            rendered = self.srv.cache.fresh()
            if rendered is not None:
                self._send_metrics(rendered)
            else:
                future = self.srv.loop.run_in_executor(self.srv.render_pool, self.srv.cache.get)
                self._wait(future, self._rendered)
        elif path == b"/":  # only when the metrics are elsewhere (--web.telemetry-path)
            body = landing_page(self.srv.exporter, self.srv.telemetry_path.decode())
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
        accept = header(self.request, b"accept-encoding") or b""  # type: ignore[arg-type]
        if b"gzip" in accept and not _gzip_refused(accept):
            extra = ((b"content-encoding", b"gzip"), (b"vary", b"Accept-Encoding"))
            self._respond(200, rendered.gzipped, extra, CONTENT_TYPE)
        else:
            self._respond(200, rendered.body, ((b"vary", b"Accept-Encoding"),), CONTENT_TYPE)

    def _unauthorized(self) -> None:
        self._respond(401, b"Unauthorized\n", ((b"www-authenticate", b"Basic"),))


class HTTPServer:
    """The exporter's HTTP server on its own thread and event loop.

    `reload`, when given, is called (on a worker thread) by POST /-/reload and returns
    (ok, message). The metrics are served at `telemetry_path` (exporter/landing.py). Bind,
    path and web-config errors are raised by the constructor (OSError, ValueError,
    webconfig.WebConfigError).
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
        telemetry_path: str = DEFAULT_TELEMETRY_PATH,
    ) -> None:
        self.exporter = exporter
        self.telemetry_path = check_telemetry_path(telemetry_path).encode()
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
        self.conns: set[Connection] = set()
        # connections without a request in progress, oldest first: who makes room at the cap
        self.evictable: OrderedDict[Connection, None] = OrderedDict()
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

    def admit(self, conn: Connection) -> bool:
        if len(self.conns) >= self.limits.max_connections:
            self._log_cap()
            if not self.evictable:
                return False  # everyone is mid-request: refuse rather than queue
            victim = next(iter(self.evictable))
            victim.drop()
        self.conns.add(conn)
        self.evictable[conn] = None
        return True

    def forget(self, conn: Connection) -> None:
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
                lambda: _Endpoints(self), sock=s, backlog=self.limits.backlog
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
