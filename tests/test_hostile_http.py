"""Hostile endpoints against the prober: compression bombs, unknown and stacked codings, deep
JSON, expressions that throw, slow and broken bodies, lying headers, redirects to another
origin. Real servers on 127.0.0.1; each probe must end as a failed probe with the right reason,
its series still there, and memory far below what the server tried to make us hold.

Most drive Prober.probe() directly (one probe, fast, memory measured with tracemalloc); one
test runs them through the exporter to show the series are served.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import socket
import struct
import time
import tracemalloc
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.demo.pgserver import free_port
from exporter.probes.config import App
from exporter.probes.healthjson import MAX_DEPTH
from exporter.probes.http import Clients, Decoder
from exporter.probes.runner import Prober
from tests.helpers import Scrape
from tests.test_probe_http import probed, reason_of
from tests.test_probe_support import (
    LocalServer,
    apps_config,
    endpoint,
    json_route,
    raw_route,
    redirect_route,
)

MiB = 1024 * 1024
CAP = MiB  # the default max_body_size
BOMB = 256 * MiB  # decoded size of the compression bombs: 256 times the cap
MEMORY_BOUND = 16 * MiB  # peak Python allocations while probing any hostile body
DEEP = b"[" * 300_000 + b"]" * 300_000
STATUS_OK = [{"path": "status", "equals": "ok"}]


@functools.cache
def bomb(wbits: int) -> bytes:
    """BOMB zero bytes compressed (gzip: wbits 31, zlib: 15, raw deflate: -15), made in
    steps so the test never holds the decoded size itself."""
    c = zlib.compressobj(9, zlib.DEFLATED, wbits)
    block = bytes(MiB)
    return b"".join([c.compress(block) for _ in range(BOMB // MiB)] + [c.flush()])


def encoded_route(body: bytes, coding: str) -> Callable[[BaseHTTPRequestHandler], None]:
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Encoding", coding)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    return route


def probe_once(ep: dict[str, Any]) -> tuple[Scrape, int]:
    """One probe of the endpoint through Prober.probe(): its series as a scrape would show
    them, and the peak of Python allocations (tracemalloc) while it ran."""
    app = App.model_validate({"name": "web", "endpoints": [ep]})
    clients = Clients()
    prober = Prober(app, app.endpoints[0], clients)

    async def run() -> list:
        try:
            return await prober.probe()
        finally:
            await clients.aclose()

    tracemalloc.start()
    try:
        families = asyncio.run(run())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    class Fixed:
        def collect(self):
            return families

    registry = CollectorRegistry()
    registry.register(Fixed())
    return Scrape(generate_latest(registry).decode()), peak


def assert_failed(s: Scrape, ep: str, reason: str) -> None:
    assert s.value("runbook_probe_success", app="web", endpoint=ep) == 0
    assert reason_of(s, ep) == reason
    # the endpoint's series are all there: counters, every reason, the histogram
    assert s.value("runbook_probe_requests_total", app="web", endpoint=ep) == 1
    assert s.value("runbook_probe_failures_total", app="web", endpoint=ep) == 1
    assert s.value("runbook_probe_consecutive_failures", app="web", endpoint=ep) == 1
    assert len(s.values("runbook_probe_failure_reason", app="web", endpoint=ep)) == 9
    assert s.value("runbook_probe_request_duration_seconds_count", endpoint=ep) is not None


@pytest.mark.parametrize(
    ("coding", "wbits"),
    [("gzip", 31), ("x-gzip", 31), ("deflate", 15), ("deflate", -15)],
    ids=["gzip", "x-gzip", "deflate-zlib", "deflate-raw"],
)
def test_compression_bomb_stops_at_the_cap(server, coding, wbits):
    body = bomb(wbits)
    assert len(body) < CAP < BOMB  # small on the wire: only decoding can blow it up
    server.routes["/bomb"] = encoded_route(body, coding)
    s, peak = probe_once(endpoint("bomb", server.url("/bomb"), timeout="5s", interval="5s"))
    assert_failed(s, "bomb", "body_too_large")
    assert s.value("runbook_probe_status_code", app="web", endpoint="bomb") == 200
    assert peak < MEMORY_BOUND, f"peak {peak / MiB:.1f} MiB for a {BOMB / MiB:.0f} MiB bomb"


def test_stacked_encodings_are_refused_before_decoding(server):
    # the issue's `gzip, gzip` bomb: two layers, a few hundred bytes on the wire
    inner = bomb(31)
    body = gzip.compress(inner)
    server.routes["/stacked"] = encoded_route(body, "gzip, gzip")
    s, peak = probe_once(endpoint("stacked", server.url("/stacked"), assertions=STATUS_OK))
    assert_failed(s, "stacked", "encoding")
    assert peak < MEMORY_BOUND


def test_unknown_encoding_is_refused(server):
    server.routes["/br"] = encoded_route(b"\x1b\x00\x00\x00junk", "br")
    s, _ = probe_once(endpoint("br", server.url("/br"), assertions=STATUS_OK))
    assert_failed(s, "br", "encoding")


def test_corrupt_gzip_is_reason_encoding(server):
    server.routes["/corrupt"] = encoded_route(b"\x1f\x8b\x08\x00not gzip at all", "gzip")
    s, _ = probe_once(endpoint("corrupt", server.url("/corrupt"), assertions=STATUS_OK))
    assert_failed(s, "corrupt", "encoding")


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_one_honest_compressed_layer_still_works(server, coding):
    # some servers (Prometheus-style scrape endpoints among them) compress whatever was asked
    doc = b'{"status": "ok"}'
    body = gzip.compress(doc) if coding == "gzip" else zlib.compress(doc)
    server.routes["/c"] = encoded_route(body, coding)
    s, _ = probe_once(endpoint("c", server.url("/c"), assertions=STATUS_OK))
    assert s.value("runbook_probe_success", app="web", endpoint="c") == 1
    assert reason_of(s, "c") is None


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize(
    ("coding", "encode"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("deflate", raw_deflate)],
    ids=["gzip", "deflate-zlib", "deflate-raw"],
)
def test_decoder_byte_by_byte(coding, encode):
    # deflate's format is told by its first two bytes, which may arrive one at a time
    doc = b'{"status": "ok", "checks": {"db": "up"}}' * 20
    body = encode(doc)
    d = Decoder.for_header(coding)
    assert b"".join(d.decode(body[i : i + 1], CAP) for i in range(len(body))) == doc


def test_decoder_never_returns_more_than_room_plus_one():
    d = Decoder.for_header("gzip")
    wire = bomb(31)[: 64 * 1024]  # one network read of the bomb: ~64 MiB decoded
    assert len(d.decode(wire, 1000)) == 1001
    assert Decoder.for_header("identity").decode(b"abc", 0) == b"abc"


def test_deep_json_is_rejected_before_parsing(server):
    server.routes["/deep"] = raw_route(DEEP)
    s, peak = probe_once(endpoint("deep", server.url("/deep"), components={}))
    assert_failed(s, "deep", "json")
    assert s.value("runbook_health_component_up", endpoint="deep") is None
    assert peak < MEMORY_BOUND


def test_json_at_the_depth_limit_is_parsed(server):
    # MAX_DEPTH levels, brackets inside strings not counted
    doc = b'{"status": "ok", "x": ' + b"[" * (MAX_DEPTH - 1) + b'"]]]]"' + b"]" * (MAX_DEPTH - 1)
    server.routes["/limit"] = raw_route(doc + b"}")
    s, _ = probe_once(endpoint("limit", server.url("/limit"), assertions=STATUS_OK))
    assert s.value("runbook_probe_success", app="web", endpoint="limit") == 1


def test_assertion_that_throws_is_check_error(server, caplog):
    server.routes["/h"] = json_route({"status": "ok", "checks": {"db": "up"}})
    ep = endpoint(
        "abs", server.url("/h"), assertions=[{"path": "abs(status)", "min": 0}], components={}
    )
    with caplog.at_level("WARNING", logger="exporter.probes"):
        s, _ = probe_once(ep)
    assert_failed(s, "abs", "check_error")
    assert s.value("runbook_probe_status_code", app="web", endpoint="abs") == 200
    failed = [r for r in caplog.records if r.getMessage() == "probe failed"]
    assert len(failed) == 1
    assert failed[0].reason == "check_error"
    assert "checking the assertions" in failed[0].error and "abs" in failed[0].error


def test_metric_path_that_throws_is_check_error(server):
    server.routes["/m"] = json_route({"status": "ok", "p95": "fast"})
    metric = {"path": "abs(p95)", "meaning": "latency_p95", "unit": "seconds"}
    ep = endpoint("m", server.url("/m"), metrics=[metric])
    s, _ = probe_once(ep)
    assert_failed(s, "m", "check_error")
    assert s.value("runbook_app_latency_p95_seconds", endpoint="m") is None


def test_slow_drip_ends_at_the_timeout(server):
    def drip(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "1000")
        h.end_headers()
        for _ in range(100):  # bounded: 5 s at most, the prober hangs up long before
            if server.stopping.is_set():
                return
            h.wfile.write(b" ")
            time.sleep(0.05)

    server.routes["/drip"] = drip
    started = time.monotonic()
    s, _ = probe_once(endpoint("drip", server.url("/drip"), timeout="300ms"))
    assert_failed(s, "drip", "timeout")
    assert time.monotonic() - started < 2
    assert s.value("runbook_probe_duration_seconds", app="web", endpoint="drip") < 0.5


def test_reset_mid_body_is_reason_connect(server):
    def reset(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "100000")
        h.end_headers()
        h.wfile.write(b'{"status": "ok", "padding": "' + b"x" * 1000)
        time.sleep(0.05)
        # SO_LINGER 0: close() sends a RST instead of a FIN
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        h.connection.close()

    server.routes["/reset"] = reset
    s, _ = probe_once(endpoint("reset", server.url("/reset"), assertions=STATUS_OK))
    assert_failed(s, "reset", "connect")


def test_content_length_lies(server):
    def short(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "5000")
        h.end_headers()
        h.wfile.write(b'{"status": "ok"}')  # then the connection closes: 4984 bytes missing

    more = b"{}" + b" " * (4 * MiB)  # made here: the server's memory is not the prober's

    def long(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "2")
        h.end_headers()
        h.wfile.write(more)  # far more than declared: not read

    server.routes["/short"] = short
    server.routes["/long"] = long
    s, _ = probe_once(endpoint("short", server.url("/short"), assertions=STATUS_OK))
    assert_failed(s, "short", "connect")
    s, peak = probe_once(endpoint("long", server.url("/long"), assertions=STATUS_OK))
    assert_failed(s, "long", "assertion")  # judged on the 2 declared bytes: `{}`
    assert peak < MEMORY_BOUND


def test_cookies_set_by_an_endpoint_are_not_kept(server):
    def sets_cookie(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Set-Cookie", "tracking=abc123; Path=/")
        h.send_header("Content-Length", "2")
        h.end_headers()
        h.wfile.write(b"{}")

    server.routes["/c"] = sets_cookie
    app = App.model_validate({"name": "web", "endpoints": [endpoint("c", server.url("/c"))]})
    clients = Clients()  # shared by every probe, as in the exporter
    prober = Prober(app, app.endpoints[0], clients)

    async def twice() -> None:
        await prober.probe()
        await prober.probe()
        await clients.aclose()

    asyncio.run(twice())
    with server.lock:
        sent = [{k.lower() for k in h} for h in server.headers["/c"]]
    assert len(sent) == 2 and "cookie" not in sent[1]


@pytest.fixture
def other_origin():
    """A second server: same host, another port, so another origin."""
    s = LocalServer()
    yield s
    s.stop()


def test_secret_headers_stay_on_the_configured_origin(server, other_origin, monkeypatch):
    monkeypatch.setenv("HOSTILE_TEST_API_KEY", "key-from-env-9f2c")
    monkeypatch.setenv("HOSTILE_TEST_PASSWORD", "basic-pass-7d1e")
    other_origin.routes["/land"] = json_route({"status": "ok"})
    server.routes["/start"] = redirect_route(other_origin.url("/land"))
    server.routes["/here"] = redirect_route("/land")
    server.routes["/land"] = json_route({"status": "ok"})
    headers = {
        "X-Api-Key": {"env": "HOSTILE_TEST_API_KEY"},  # a secret reference, any name
        "X-Custom-Token": "inline-token-5b8a",  # an inline value under a sensitive name
        "Cookie": "sid=cookie-3e4f",
        "X-Tenant": "acme",  # not a secret: may follow
    }
    auth = {"username": "probe", "password": {"env": "HOSTILE_TEST_PASSWORD"}}
    common = {"follow_redirects": True, "headers": headers, "basic_auth": auth}
    s, _ = probe_once(endpoint("away", server.url("/start"), **common, assertions=STATUS_OK))
    assert s.value("runbook_probe_success", app="web", endpoint="away") == 1
    secrets = ("x-api-key", "x-custom-token", "cookie", "authorization")
    with server.lock:
        first = {k.lower(): v for k, v in server.headers["/start"][0].items()}
    assert {k: first.get(k) for k in secrets} == {
        "x-api-key": "key-from-env-9f2c",
        "x-custom-token": "inline-token-5b8a",
        "cookie": "sid=cookie-3e4f",
        "authorization": "Basic cHJvYmU6YmFzaWMtcGFzcy03ZDFl",  # probe:basic-pass-7d1e
    }
    with other_origin.lock:
        landed = {k.lower(): v for k, v in other_origin.headers["/land"][0].items()}
    assert not set(secrets) & set(landed), landed
    assert landed["x-tenant"] == "acme"
    assert landed["host"] == f"127.0.0.1:{other_origin.port}"
    # a redirect within the origin keeps them all
    s, _ = probe_once(endpoint("here", server.url("/here"), **common))
    assert s.value("runbook_probe_success", app="web", endpoint="here") == 1
    with server.lock:
        same = {k.lower(): v for k, v in server.headers["/land"][0].items()}
    assert {k: same.get(k) for k in secrets} == {k: first[k] for k in secrets}


def test_redirect_limit_and_phases_with_manual_redirects(server, other_origin):
    other_origin.routes["/b"] = redirect_route(server.url("/c"))
    server.routes["/a"] = redirect_route(other_origin.url("/b"))
    server.routes["/c"] = json_route({"status": "ok"})
    ep = endpoint("hops", server.url("/a"), follow_redirects=True, max_redirects=2)
    s, _ = probe_once(ep)
    assert s.value("runbook_probe_success", app="web", endpoint="hops") == 1
    # three requests, each on a fresh connection: the connect phase sums them
    phases = {
        p: s.value("runbook_probe_phase_duration_seconds", endpoint="hops", phase=p)
        for p in ("connect", "first_byte", "body")
    }
    assert all(v is not None and v > 0 for v in phases.values()), phases
    s, _ = probe_once({**ep, "name": "short", "max_redirects": 1})
    assert_failed(s, "short", "status")
    assert s.value("runbook_probe_status_code", app="web", endpoint="short") == 302
    assert server.count("/c") == 1  # the second probe stopped before it
    # a hop that fails: no final answer, so no status code (not the redirect's 302)
    server.routes["/gone"] = redirect_route(f"http://127.0.0.1:{free_port()}/x")
    s, _ = probe_once(endpoint("gone", server.url("/gone"), follow_redirects=True))
    assert_failed(s, "gone", "connect")
    assert s.value("runbook_probe_status_code", app="web", endpoint="gone") == 0


def test_hostile_endpoints_through_the_exporter(server, run_exporter):
    """The issue's cases through the running exporter: the endpoints' series are served, and
    a healthy endpoint next to them is unaffected."""
    server.routes["/deep"] = raw_route(DEEP)
    server.routes["/h"] = json_route({"status": "ok"})
    server.routes["/stacked"] = encoded_route(gzip.compress(bomb(31)), "gzip, gzip")
    ex = run_exporter(
        apps_config(
            endpoint("deep", server.url("/deep"), components={}),
            endpoint("abs", server.url("/h"), assertions=[{"path": "abs(status)", "min": 0}]),
            endpoint("stacked", server.url("/stacked")),
            endpoint("good", server.url("/h"), assertions=STATUS_OK),
        )
    )
    names = ("deep", "abs", "stacked", "good")
    s = ex.wait_for(lambda s: all(probed(n, 2)(s) for n in names), timeout=10)
    assert {n: reason_of(s, n) for n in names} == {
        "deep": "json",
        "abs": "check_error",
        "stacked": "encoding",
        "good": None,
    }
    for n in names:
        assert s.value("runbook_probe_success", app="web", endpoint=n) == (n == "good")
        assert s.value("runbook_probe_consecutive_failures", app="web", endpoint=n) == (
            0 if n == "good" else s.value("runbook_probe_requests_total", app="web", endpoint=n)
        )
