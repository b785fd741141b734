"""The HTTP prober against real servers on 127.0.0.1: failures and their reasons, latency,
body cap, TLS, redirects, consecutive failures, isolation. Every value from a real scrape."""

from __future__ import annotations

import datetime
import itertools
import ssl
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from exporter.demo.pgserver import free_port
from tests.helpers import encrypted_key_pem
from tests.test_probe_support import (
    LocalServer,
    apps_config,
    endpoint,
    json_route,
    redirect_route,
)

OK = {"status": "ok"}


def reason_of(s, ep: str, app: str = "web") -> str | None:
    """The one failure reason set to 1, None when none is."""
    on = [
        lab["reason"]
        for lab in s.labelsets("runbook_probe_failure_reason")
        if lab["app"] == app and lab["endpoint"] == ep
        if s.value("runbook_probe_failure_reason", app=app, endpoint=ep, reason=lab["reason"]) == 1
    ]
    assert len(on) <= 1, on
    return on[0] if on else None


def probed(ep: str, n: int = 1, app: str = "web"):
    """Predicate: the endpoint has been probed at least n times."""
    return lambda s: (s.value("runbook_probe_requests_total", app=app, endpoint=ep) or 0) >= n


def test_connection_refused_is_reason_connect(run_exporter):
    url = f"http://127.0.0.1:{free_port()}/api/health"
    ex = run_exporter(apps_config(endpoint("refused", url)))
    s = ex.wait_for(probed("refused", 2), timeout=10)
    assert s.value("runbook_probe_success", app="web", endpoint="refused") == 0
    assert reason_of(s, "refused") == "connect"
    assert s.value("runbook_probe_status_code", app="web", endpoint="refused") == 0
    assert s.value("runbook_probe_failures_total", app="web", endpoint="refused") >= 2
    assert s.value("runbook_probe_last_success_timestamp_seconds", endpoint="refused") is None
    # a refused connection says nothing about latency: not observed in the histogram
    assert s.value("runbook_probe_request_duration_seconds_count", endpoint="refused") == 0


def test_timeout_is_bounded_and_reason_timeout(server, run_exporter):
    server.routes["/hang"] = json_route(OK, delay=2.0)
    ep = endpoint("hang", server.url("/hang"), interval="1s", timeout="300ms")
    ex = run_exporter(apps_config(ep))
    s = ex.wait_for(probed("hang"), timeout=10)
    assert s.value("runbook_probe_success", app="web", endpoint="hang") == 0
    assert reason_of(s, "hang") == "timeout"
    d = s.value("runbook_probe_duration_seconds", app="web", endpoint="hang")
    assert 0.3 <= d < 0.45, d  # gave up at the timeout, not when the server answered
    # timeouts count in the histogram, at the time the probe gave up
    assert s.value("runbook_probe_request_duration_seconds_count", endpoint="hang") >= 1
    assert s.value("runbook_probe_request_duration_seconds_bucket", endpoint="hang", le="0.25") == 0


@pytest.mark.slow
def test_slow_endpoint_latency_is_the_servers_delay(server, run_exporter):
    delay = 0.4
    server.routes["/slow"] = json_route(OK, delay=delay)
    server.routes["/fast"] = json_route(OK)
    ex = run_exporter(
        apps_config(
            endpoint("slow", server.url("/slow"), interval="1s", timeout="900ms"),
            endpoint("fast", server.url("/fast")),
        )
    )
    # one duration per probe, keyed by the probe count it was served with
    durations: dict[float, float] = {}
    first_bytes: list[float] = []

    def collect(s) -> bool:
        n = s.value("runbook_probe_requests_total", app="web", endpoint="slow")
        if n:
            durations[n] = s.value("runbook_probe_duration_seconds", endpoint="slow")
            first_bytes.append(
                s.value("runbook_probe_phase_duration_seconds", endpoint="slow", phase="first_byte")
            )
        return len(durations) >= 4 and probed("fast")(s)

    s = ex.wait_for(collect, timeout=15)
    assert s.value("runbook_probe_success", app="web", endpoint="slow") == 1
    got = sorted(durations.values())
    # never below the server's delay, and the delay is what the probe measures (not the
    # 900 ms timeout, not the 1 s interval); how close it comes is a benchmark figure, not a
    # test (bench/probe_bench.py, docs/probes.md: +5 ms median on this machine), so the upper
    # bounds leave room for a loaded machine
    assert all(delay <= d < 0.9 for d in got), f"measured {got} for a {delay}s delay"
    # the histogram puts every probe in the (0.25, 1] buckets
    n = s.value("runbook_probe_request_duration_seconds_count", endpoint="slow")
    assert s.value("runbook_probe_request_duration_seconds_bucket", endpoint="slow", le="1.0") == n
    assert s.value("runbook_probe_request_duration_seconds_bucket", endpoint="slow", le="0.25") == 0
    total = s.value("runbook_probe_request_duration_seconds_sum", endpoint="slow")
    assert delay * n <= total < 0.9 * n
    # phases: a fresh connection every probe, and the server's wait is in first_byte
    phase = {
        p: s.value("runbook_probe_phase_duration_seconds", endpoint="slow", phase=p)
        for p in ("connect", "first_byte", "body", "tls")
    }
    # the server's delay is not in connect (bounded loosely: a loaded machine adds tens of ms)
    assert phase["connect"] is not None and phase["connect"] < delay / 2
    assert all(delay <= fb < 0.48 for fb in first_bytes), first_bytes
    assert phase["body"] is not None and phase["tls"] is None  # plain HTTP: no TLS phase
    fast = s.value("runbook_probe_duration_seconds", app="web", endpoint="fast")
    assert fast < delay / 2


@pytest.mark.parametrize("code", [500, 503])
def test_server_errors_are_reason_status(server, run_exporter, code):
    server.routes["/err"] = json_route({"status": "error"}, code=code)
    ex = run_exporter(apps_config(endpoint("err", server.url("/err"))))
    s = ex.wait_for(probed("err"), timeout=10)
    assert s.value("runbook_probe_success", app="web", endpoint="err") == 0
    assert s.value("runbook_probe_status_code", app="web", endpoint="err") == code
    assert reason_of(s, "err") == "status"
    # an answered probe is a latency sample even when it failed
    assert s.value("runbook_probe_request_duration_seconds_count", endpoint="err") >= 1


def test_expected_status_codes_are_configurable(server, run_exporter):
    server.routes["/teapot"] = json_route(OK, code=418)
    ep = endpoint("teapot", server.url("/teapot"), expected_status=[200, 418])
    ex = run_exporter(apps_config(ep))
    s = ex.wait_for(probed("teapot"), timeout=10)
    assert s.value("runbook_probe_success", app="web", endpoint="teapot") == 1
    assert reason_of(s, "teapot") is None


def test_redirects_not_followed_by_default_and_loops_fail(server, run_exporter):
    server.routes["/loop"] = redirect_route("/loop")
    server.routes["/moved"] = redirect_route("/ok", code=301)
    server.routes["/ok"] = json_route(OK)
    ex = run_exporter(
        apps_config(
            endpoint("loop", server.url("/loop"), follow_redirects=True, max_redirects=3),
            endpoint("moved", server.url("/moved")),  # default: not followed
            endpoint("followed", server.url("/moved"), follow_redirects=True),
        )
    )
    s = ex.wait_for(lambda s: all(probed(e)(s) for e in ("loop", "moved", "followed")), 10)
    assert s.value("runbook_probe_success", app="web", endpoint="loop") == 0
    assert reason_of(s, "loop") == "status"
    assert s.value("runbook_probe_success", app="web", endpoint="moved") == 0
    assert s.value("runbook_probe_status_code", app="web", endpoint="moved") == 301
    assert reason_of(s, "moved") == "status"
    assert s.value("runbook_probe_success", app="web", endpoint="followed") == 1
    assert s.value("runbook_probe_status_code", app="web", endpoint="followed") == 200
    # the loop was cut after max_redirects: 1 request + 3 redirects per probe
    probes = s.value("runbook_probe_requests_total", app="web", endpoint="loop")
    assert server.count("/loop") <= 4 * (probes + 1)


def _rss() -> int:
    fields = Path("/proc/self/statm").read_text().split()
    return int(fields[1]) * 4096


@pytest.mark.slow
def test_100mb_body_is_capped_and_memory_stays_flat(server, run_exporter):
    total = 100 * 1024 * 1024
    server.routes["/big"] = server.stream_route(total)
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.wait(0.005):  # bounded by the stop event set below
            peak[0] = max(peak[0], _rss())

    base = _rss()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        ep = endpoint("big", server.url("/big"), interval="5s", timeout="4s", max_body_size="1MiB")
        ex = run_exporter(apps_config(ep))
        s = ex.wait_for(probed("big"), timeout=15)
        deadline = time.monotonic() + 10
        while "/big" not in server.bytes_sent and time.monotonic() < deadline:
            time.sleep(0.05)  # the server notices the hang-up on its next write
    finally:
        stop.set()
        sampler.join(2)
    assert s.value("runbook_probe_success", app="web", endpoint="big") == 0
    assert reason_of(s, "big") == "body_too_large"
    assert s.value("runbook_probe_status_code", app="web", endpoint="big") == 200
    sent = server.bytes_sent["/big"]
    assert sent < 32 * 1024 * 1024, f"the prober kept reading: server sent {sent} bytes"
    growth = peak[0] - base
    assert growth < 40 * 1024 * 1024, f"RSS grew by {growth / 2**20:.1f} MiB"


def test_declared_content_length_above_cap_fails_without_reading(server, run_exporter):
    def route(h) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(50 * 1024 * 1024))
        h.end_headers()
        h.wfile.write(b"{}")  # and then nothing: the prober must not wait for the rest

    server.routes["/declared"] = route
    ep = endpoint("declared", server.url("/declared"), interval="2s", timeout="1s")
    ex = run_exporter(apps_config(ep))
    s = ex.wait_for(probed("declared"), timeout=10)
    assert reason_of(s, "declared") == "body_too_large"
    assert s.value("runbook_probe_duration_seconds", app="web", endpoint="declared") < 0.2


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


NOT_AFTER = datetime.datetime(2031, 6, 1, 12, 0, 0, tzinfo=datetime.UTC)


@pytest.fixture
def tls_server(ca) -> Iterator[LocalServer]:
    cert = ca.issue_cert("127.0.0.1", "localhost", not_after=NOT_AFTER)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    s = LocalServer(tls_context=ctx)
    s.routes["/api/health"] = json_route(OK)
    yield s
    s.stop()


def test_self_signed_tls_with_and_without_the_ca(tls_server, ca, tmp_path, run_exporter):
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    url = tls_server.url("/api/health")
    ex = run_exporter(
        apps_config(
            endpoint("trusted", url, tls={"ca_file": str(ca_file)}),
            endpoint("untrusted", url),  # the bundled CAs do not know this one
            endpoint("skip", url, tls={"insecure_skip_verify": True}),
        )
    )
    s = ex.wait_for(lambda s: all(probed(e)(s) for e in ("trusted", "untrusted", "skip")), 10)
    assert s.value("runbook_probe_success", app="web", endpoint="trusted") == 1
    assert s.value("runbook_probe_success", app="web", endpoint="untrusted") == 0
    assert reason_of(s, "untrusted") == "tls"
    assert s.value("runbook_probe_success", app="web", endpoint="skip") == 1
    expiry = NOT_AFTER.timestamp()
    for ep in ("trusted", "skip"):
        got = s.value("runbook_probe_tls_cert_expiry_timestamp_seconds", app="web", endpoint=ep)
        assert got == expiry, (ep, got)
        tls = s.value("runbook_probe_phase_duration_seconds", endpoint=ep, phase="tls")
        assert tls is not None and tls > 0
    # no handshake completed: no expiry to report
    assert s.value("runbook_probe_tls_cert_expiry_timestamp_seconds", endpoint="untrusted") is None
    thresholds = s.values("runbook_probe_tls_expiry_threshold_seconds", endpoint="trusted")
    assert sorted(thresholds) == [3 * 86400, 14 * 86400]


def test_consecutive_failures_count_up_and_reset_on_success(server, run_exporter):
    server.routes["/flaky"] = json_route({"status": "error"}, code=503)
    ex = run_exporter(
        apps_config(endpoint("flaky", server.url("/flaky"), interval="200ms", timeout="150ms"))
    )
    s = ex.wait_for(
        lambda s: s.value("runbook_probe_consecutive_failures", endpoint="flaky") >= 3, 10
    )
    failures = s.value("runbook_probe_failures_total", app="web", endpoint="flaky")
    assert failures >= 3
    assert s.value("runbook_probe_requests_total", app="web", endpoint="flaky") == failures
    assert s.value("runbook_probe_last_success_timestamp_seconds", endpoint="flaky") is None
    assert s.value("runbook_probe_consecutive_failures_threshold", endpoint="flaky") == 3
    server.routes["/flaky"] = json_route(OK)
    before = time.time()
    s = ex.wait_for(lambda s: s.value("runbook_probe_success", endpoint="flaky") == 1, 10)
    assert s.value("runbook_probe_consecutive_failures", app="web", endpoint="flaky") == 0
    assert reason_of(s, "flaky") is None
    last = s.value("runbook_probe_last_success_timestamp_seconds", app="web", endpoint="flaky")
    assert before - 0.5 <= last <= time.time()
    # the counters kept counting across runs
    at_success = s.value("runbook_probe_failures_total", app="web", endpoint="flaky")
    assert at_success >= failures
    server.routes["/flaky"] = json_route({}, code=500)
    s = ex.wait_for(lambda s: s.value("runbook_probe_consecutive_failures", endpoint="flaky"), 10)
    # counted from the success on: only the failures since then (however many a loaded
    # machine let pass before this scrape), not the ones before it
    since = s.value("runbook_probe_failures_total", app="web", endpoint="flaky") - at_success
    assert 1 <= s.value("runbook_probe_consecutive_failures", app="web", endpoint="flaky") <= since


@pytest.mark.slow
def test_one_broken_endpoint_does_not_delay_the_others(server, run_exporter):
    server.routes["/hang"] = json_route(OK, delay=3.0)
    server.routes["/good"] = json_route(OK)
    refused = f"http://127.0.0.1:{free_port()}/x"
    ex = run_exporter(
        apps_config(
            endpoint("hang", server.url("/hang"), interval="1s", timeout="1s"),
            endpoint("refused", refused, interval="200ms", timeout="200ms"),
            endpoint("good", server.url("/good"), interval="200ms", timeout="200ms"),
        )
    )
    s = ex.wait_for(lambda s: probed("hang", 2)(s) and probed("good", 10)(s), timeout=15)
    assert s.value("runbook_probe_success", app="web", endpoint="good") == 1
    assert s.value("runbook_probe_failures_total", app="web", endpoint="good") == 0
    assert reason_of(s, "hang") == "timeout"
    assert reason_of(s, "refused") == "connect"
    with server.lock:
        arrivals = list(server.arrivals["/good"])
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert len(gaps) >= 9
    # every 200 ms while the other endpoint hangs for a whole second each time (the bound
    # leaves room for a loaded machine, far below the 1 s a blocked schedule would show)
    assert max(gaps) < 0.5, f"largest gap between probes of the good endpoint: {max(gaps):.3f}s"
    assert statistics.median(gaps) == pytest.approx(0.2, abs=0.03)


def test_method_and_404(server, run_exporter):
    server.routes["/submit"] = json_route(OK)
    ex = run_exporter(
        apps_config(
            endpoint("missing", server.url("/nowhere")),
            endpoint("post", server.url("/submit"), method="POST"),
        )
    )
    s = ex.wait_for(lambda s: probed("missing")(s) and probed("post")(s), timeout=10)
    assert s.value("runbook_probe_status_code", app="web", endpoint="missing") == 404
    assert reason_of(s, "missing") == "status"
    assert s.value("runbook_probe_success", app="web", endpoint="post") == 1
    with server.lock:
        assert set(server.methods["/submit"]) == {"POST"}


def test_an_encrypted_client_key_fails_the_probe_instead_of_prompting(tmp_path):
    """A key replaced by an encrypted one after load: ssl must not ask for a passphrase on a
    terminal (which would block the collection loop); the probe fails with reason tls."""
    import asyncio

    from exporter.probes.config import TLS
    from exporter.probes.http import Clients

    cert = trustme.CA().issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    key_file.write_bytes(encrypted_key_pem(cert.private_key_pem.bytes()))
    tls = TLS.model_construct(
        ca_file=None, cert_file=cert_file, key_file=key_file, insecure_skip_verify=False
    )
    clients = Clients()
    with pytest.raises(ssl.SSLError):
        clients.get(tls)
    asyncio.run(clients.aclose())
