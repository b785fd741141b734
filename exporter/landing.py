"""The landing page at `/` and the telemetry path (`--web.telemetry-path`).

The page says what this process serves: its version, the configuration file, whether the last
reload worked, and the names of its targets, apps, backups and poolers, with a link to the
metrics at the telemetry path and to the health endpoints. Names only: no DSN, URL, host or
file a target reads ever appears (they may carry credentials); the config file's path is shown
because the operator gave it on the command line. It is built per request from the config in
effect, so a reload shows at once.

As in the Prometheus exporters, `--web.telemetry-path` moves the metrics (only there, then) and
a telemetry path of `/` leaves no landing page.
"""

from __future__ import annotations

import html
import platform
import re
from typing import TYPE_CHECKING

from exporter import __version__

if TYPE_CHECKING:
    from exporter.runtime import Exporter

DEFAULT_TELEMETRY_PATH = "/metrics"
# the paths the server answers itself (exporter/server.py)
RESERVED = ("/-/healthy", "/-/ready", "/-/reload")
_PATH_CHARS = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")


def check_telemetry_path(path: str) -> str:
    """The path, or ValueError saying why it cannot serve the metrics."""
    if not _PATH_CHARS.fullmatch(path):
        raise ValueError(
            f"--web.telemetry-path {path!r}: must start with / and be a plain URL path "
            "(no query, fragment or spaces)"
        )
    if path in RESERVED:
        raise ValueError(f"--web.telemetry-path {path!r}: that path is the exporter's own")
    return path


def _rows(items: list[tuple[str, str]]) -> str:
    return "".join(f"<tr><td>{html.escape(n)}</td><td>{html.escape(d)}</td></tr>" for n, d in items)


def _section(title: str, items: list[tuple[str, str]]) -> str:
    if not items:
        return ""
    return f"<h2>{title}</h2><table>{_rows(items)}</table>"


def landing_page(exporter: Exporter, telemetry_path: str = DEFAULT_TELEMETRY_PATH) -> bytes:
    config = exporter.config
    source = exporter.config_file or "(none: built in, e.g. the demo)"
    reload = "ok" if exporter.last_reload_ok else "failed (serving the previous configuration)"
    ready = "ready" if exporter.ready() else "first collection still running"
    targets = [
        (t.name, f"{len(t.queues)} queue(s), {len(t.enabled_collectors())} collector(s)")
        for t in config.targets
    ]
    apps = [(a.name, f"{len(a.endpoints)} endpoint(s)") for a in config.apps]
    backups = [(b.name, "backup") for b in config.backups]
    poolers = [(p.name, "PgBouncer") for p in config.poolers]
    # relative links: they keep working behind a reverse proxy that serves us under a prefix
    metrics = html.escape(telemetry_path.lstrip("/"), quote=True)
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>runbook-exporter</title></head>"
        f"<body><h1>runbook-exporter {html.escape(__version__)}</h1>"
        f'<p><a href="{metrics}">Metrics</a> at <code>{html.escape(telemetry_path)}</code>'
        ' · <a href="-/healthy">healthy</a> · <a href="-/ready">ready</a></p>'
        f"<p>Version {html.escape(__version__)} on Python {html.escape(platform.python_version())}"
        f"; {html.escape(ready)}.</p>"
        f"<p>Configuration file: <code>{html.escape(source)}</code>; last reload: "
        f"{html.escape(reload)}.</p>"
        + _section("Targets", targets)
        + _section("Apps", apps)
        + _section("Backups", backups)
        + _section("Poolers", poolers)
        + "</body></html>"
    ).encode()
