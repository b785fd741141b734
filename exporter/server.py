"""HTTP endpoints: /metrics, a landing page, /-/healthy and /-/ready.

A threaded WSGI server: scrapes run in their own threads and only read the result store, so
they never wait on a database or a probe.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from exporter import __version__
from exporter.runtime import Exporter

DEFAULT_PORT = 9883  # not taken in the Prometheus default port allocations list


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # access logs are noise here
        pass


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


def make_app(exporter: Exporter) -> Callable:
    metrics_app = make_wsgi_app(exporter.registry)

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path == "/":
            body, ctype, status = landing_page(exporter), "text/html; charset=utf-8", "200 OK"
        elif path == "/-/healthy":
            body, ctype, status = b"Healthy\n", "text/plain", "200 OK"
        elif path == "/-/ready":
            ok = exporter.ready()
            body = b"Ready\n" if ok else b"Not ready: first collection still running\n"
            ctype, status = "text/plain", "200 OK" if ok else "503 Service Unavailable"
        else:
            body, ctype, status = b"Not found\n", "text/plain", "404 Not Found"
        start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
        return [body]

    return app


def parse_listen_address(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid listen address {addr!r}: use host:port, e.g. :{DEFAULT_PORT}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class HTTPServer:
    def __init__(self, exporter: Exporter, address: str) -> None:
        host, port = parse_listen_address(address)
        self.httpd = make_server(
            host, port, make_app(exporter), _ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self.port = self.httpd.server_port
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
