"""The landing page at / (version, configuration file, the names of what is served, a link to
the metrics, never a DSN or URL) and --web.telemetry-path, on the real server over 127.0.0.1
and through the command line."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.exposition import generate_latest

from exporter import __version__
from exporter.config import parse_config
from exporter.demo.pgserver import free_port
from exporter.runtime import Exporter
from exporter.server import HTTPServer
from tests.helpers import Scrape

SECRET = "s3cr3t-pw"
CONFIG = f"""
targets:
  - name: orders-db
    dsn: postgresql://monitor:{SECRET}@db.internal.example:5432/orders?sslmode=require
    queues:
      - table: public.processing_jobs
apps:
  - name: web
    endpoints:
      - name: health
        url: http://127.0.0.1:9/health?token={SECRET}
backups:
  - name: nightly
    file: {{directory: /var/backups/orders, pattern: "*.sql*"}}
poolers:
  - name: main-bouncer
    dsn: host=pgbouncer.internal port=6432 user=runbook_stats password={SECRET}
"""
# what the page must never show: credentials, hosts, URLs, paths the config reads
NEVER = (SECRET, "db.internal.example", "monitor:", "pgbouncer.internal", "127.0.0.1:9")
NEVER += ("/var/backups", "sslmode", "token=")


@pytest.fixture(scope="module")
def exporter() -> Exporter:
    # not started: the page is built from the config, the store stays empty
    return Exporter(parse_config(CONFIG, "/etc/runbook-exporter/config.yml"), "/etc/rbe/c.yml")


@pytest.fixture
def start(exporter: Exporter) -> Iterator[Callable[..., HTTPServer]]:
    servers: list[HTTPServer] = []

    def run(**kw) -> HTTPServer:
        srv = HTTPServer(exporter, "127.0.0.1:0", **kw)
        srv.start()
        servers.append(srv)
        return srv

    yield run
    for s in servers:
        s.stop()


def get(srv: HTTPServer, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{srv.port}{path}", timeout=10)


def links(page: str) -> list[str]:
    return re.findall(r'<a href="([^"]*)"', page)


def test_landing_page_says_version_config_file_and_names_only(start):
    srv = start()
    r = get(srv, "/")
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    page = r.text
    assert f"runbook-exporter {__version__}</h1>" in page
    assert "<code>/etc/rbe/c.yml</code>" in page and "last reload: ok" in page
    for name in ("orders-db", "web", "nightly", "main-bouncer"):
        assert f"<td>{name}</td>" in page, name
    assert "1 queue(s)" in page and "1 endpoint(s)" in page
    assert "first collection still running" in page  # the exporter's own readiness
    for leak in NEVER:
        assert leak not in page, leak
    # relative links: the metrics, then the health endpoints, each answered by this server
    assert links(page) == ["metrics", "-/healthy", "-/ready"]
    assert get(srv, "/metrics").status_code == 200
    assert get(srv, "/-/healthy").status_code == 200


def test_landing_page_escapes_the_config_path(tmp_path: Path):
    """Names are plain by the config's own rules; a file path may hold anything."""
    from exporter.landing import landing_page

    exp = Exporter(parse_config(CONFIG, "t.yml"), str(tmp_path / "<i>a&b</i>.yml"))
    page = landing_page(exp).decode()
    assert "&lt;i&gt;a&amp;b&lt;/i&gt;.yml</code>" in page and "<i>" not in page


def test_telemetry_path_moves_the_metrics_and_the_landing_page_links_it(start, exporter):
    srv = start(telemetry_path="/internal/prom")
    r = get(srv, "/internal/prom")
    assert r.status_code == 200 and r.content == generate_latest(exporter.registry)
    gz = httpx.get(
        f"http://127.0.0.1:{srv.port}/internal/prom?x=1",
        headers={"Accept-Encoding": "gzip"},
        timeout=10,
    )
    assert gz.headers["content-encoding"] == "gzip" and gz.content == r.content
    assert get(srv, "/metrics").status_code == 404  # only at the configured path
    page = get(srv, "/").text
    assert links(page)[0] == "internal/prom" and "<code>/internal/prom</code>" in page
    assert get(srv, "/-/ready").status_code == 503  # the server's own paths stay


def test_telemetry_path_root_serves_metrics_instead_of_the_page(start, exporter):
    srv = start(telemetry_path="/")
    r = get(srv, "/")
    assert r.content == generate_latest(exporter.registry)
    assert r.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize("path", ["metrics", "/-/ready", "/-/reload", "/a b", "/m?x", ""])
def test_bad_telemetry_paths_are_refused(start, path: str):
    with pytest.raises(ValueError, match=r"--web\.telemetry-path"):
        start(telemetry_path=path)


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args], capture_output=True, text=True, timeout=timeout
    )


def test_cli_refuses_a_bad_telemetry_path_with_exit_2(tmp_path: Path):
    config = tmp_path / "c.yml"
    config.write_text(CONFIG)
    r = run_cli(f"--config.file={config}", "--web.telemetry-path=/-/healthy", "--check-config")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr == "error: --web.telemetry-path '/-/healthy': that path is the exporter's own\n"


def test_cli_serves_at_the_telemetry_path(tmp_path: Path):
    port = free_port()
    config = tmp_path / "c.yml"
    config.write_text(
        f"targets:\n  - name: app\n    dsn: postgresql://u:{SECRET}@127.0.0.1:{free_port()}/app\n"
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter",
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.telemetry-path=/x/metrics",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        page = None
        for _ in range(100):  # bounded: 100 x 0.1 s
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=2).text
                break
            except httpx.TransportError:
                subprocess.run(["sleep", "0.1"], check=True)
        assert page is not None, "the exporter did not answer"
        assert links(page)[0] == "x/metrics" and f"<code>{config}</code>" in page
        assert "<td>app</td>" in page and SECRET not in page and "127.0.0.1" not in page
        metrics = Scrape(httpx.get(f"http://127.0.0.1:{port}/x/metrics", timeout=5).text)
        assert metrics.labelsets("runbook_exporter_build_info")[0]["version"] == __version__
        assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 404
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
