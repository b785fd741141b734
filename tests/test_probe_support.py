"""Local HTTP(S) servers on 127.0.0.1 for the probe tests, and config helpers. No tests here.

A route is a function of the request handler; routes can be swapped while the exporter runs,
so a test can turn an endpoint from failing to healthy. The server records when each request
arrived and the headers it carried.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Route = Callable[[BaseHTTPRequestHandler], None]


def send(h: BaseHTTPRequestHandler, code: int, body: bytes, ctype: str = "application/json"):
    h.send_response(code)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def json_route(doc: Any, code: int = 200, delay: float = 0.0) -> Route:
    body = json.dumps(doc).encode()

    def route(h: BaseHTTPRequestHandler) -> None:
        if delay:
            time.sleep(delay)
        send(h, code, body)

    return route


def raw_route(body: bytes, code: int = 200, ctype: str = "application/json") -> Route:
    return lambda h: send(h, code, body, ctype)


def redirect_route(location: str, code: int = 302) -> Route:
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(code)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return route


class ThreadedServer(ThreadingHTTPServer):
    """The handshake happens in the connection's own thread, bounded by a timeout: with a
    TLS-wrapped listening socket, accept() itself would handshake, and one client that
    connects and never completes it (a probe cut at its timeout) would block serve_forever,
    and with it stop(), for ever."""

    daemon_threads = True
    HANDSHAKE_TIMEOUT = 5.0

    def __init__(self, address, handler, tls_context: ssl.SSLContext | None) -> None:
        super().__init__(address, handler)
        self.tls_context = tls_context

    def finish_request(self, request, client_address) -> None:
        request.settimeout(self.HANDSHAKE_TIMEOUT)
        if self.tls_context is not None:
            try:
                request = self.tls_context.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError):
                return  # a failed or abandoned handshake: that client's problem only
        request.settimeout(None)
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address) -> None:
        pass  # a client hanging up mid-request is what these tests provoke


class LocalServer:
    def __init__(self, tls_context: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.arrivals: dict[str, list[float]] = {}
        self.headers: dict[str, list[dict[str, str]]] = {}
        self.methods: dict[str, list[str]] = {}
        self.bytes_sent: dict[str, int] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                with owner.lock:
                    owner.arrivals.setdefault(path, []).append(time.monotonic())
                    owner.headers.setdefault(path, []).append(dict(self.headers))
                    owner.methods.setdefault(path, []).append(self.command)
                    route = owner.routes.get(path)
                if route is None:
                    send(self, 404, b'{"error": "no route"}')
                    return
                # the prober hanging up (cap reached, timeout) is expected
                with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    route(self)

            do_POST = do_GET

        self.httpd = ThreadedServer(("127.0.0.1", 0), Handler, tls_context)
        self.port = self.httpd.server_address[1]
        self.scheme = "https" if tls_context is not None else "http"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def count(self, path: str) -> int:
        with self.lock:
            return len(self.arrivals.get(path, []))

    def stream_route(self, total: int, chunk: int = 64 * 1024) -> Route:
        """`total` bytes of generated data with no Content-Length (ends at close)."""
        block = b"x" * chunk

        def route(h: BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            h.send_header("Content-Type", "application/octet-stream")
            h.end_headers()
            sent = 0
            try:
                while sent < total and not self.stopping.is_set():  # bounded by total
                    h.wfile.write(block)
                    sent += len(block)
            finally:
                with self.lock:
                    self.bytes_sent[h.path] = sent

        return route

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def endpoint(name: str, url: str, **kw: Any) -> dict[str, Any]:
    """An endpoint probed often with a short timeout, so tests stay fast."""
    return {"name": name, "url": url, "interval": "300ms", "timeout": "250ms", **kw}


def apps_config(*endpoints: dict[str, Any], app: str = "web") -> dict[str, Any]:
    return {"apps": [{"name": app, "endpoints": list(endpoints)}]}
