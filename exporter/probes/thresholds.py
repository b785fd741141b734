"""Endpoint thresholds and intervals as series, from the configuration alone (like
collectors/thresholds.py for the databases): served always, even before the first probe, so
alert rules compare with `runbook_probe_*_threshold*` of the same app and endpoint.
"""

from __future__ import annotations

from prometheus_client.core import Metric

from exporter.metrics import spec
from exporter.probes.config import App

SRC = "probes/thresholds.py"
AE = ("app", "endpoint")
AES = ("app", "endpoint", "severity")

LATENCY = spec(
    "runbook_probe_latency_threshold_seconds",
    "gauge",
    "Probe duration above which the endpoint counts as slow.",
    AES,
    SRC,
)
LATENCY_P95 = spec(
    "runbook_probe_latency_p95_threshold_seconds",
    "gauge",
    "95th percentile of probe durations above which to alert.",
    AES,
    SRC,
)
ERROR_RATIO = spec(
    "runbook_probe_error_ratio_threshold",
    "gauge",
    "Share of failed probes above which to alert.",
    AES,
    SRC,
)
CONSECUTIVE = spec(
    "runbook_probe_consecutive_failures_threshold",
    "gauge",
    "Consecutive failed probes at which to alert.",
    AE,
    SRC,
)
DOWNTIME = spec(
    "runbook_probe_downtime_threshold_seconds",
    "gauge",
    "Time without a successful probe above which the endpoint counts as down.",
    AES,
    SRC,
)
TLS_EXPIRY = spec(
    "runbook_probe_tls_expiry_threshold_seconds",
    "gauge",
    "Remaining certificate validity below which to alert.",
    AES,
    SRC,
)
SLO = spec(
    "runbook_slo_objective",
    "gauge",
    "Availability objective of the endpoint (share of successful probes).",
    AE,
    SRC,
)
INTERVAL = spec(
    "runbook_probe_interval_seconds",
    "gauge",
    "Configured probe interval of the endpoint, to tell a stale one.",
    AE,
    SRC,
)


def families(apps: list[App]) -> list[Metric]:
    specs = (LATENCY, LATENCY_P95, ERROR_RATIO, CONSECUTIVE, DOWNTIME, TLS_EXPIRY, SLO, INTERVAL)
    fams = {s: s.family() for s in specs}
    for app in apps:
        for ep in app.endpoints:
            th, labels = ep.thresholds, [app.name, ep.name]
            for sev in ("warning", "critical"):
                fams[LATENCY].add_metric([*labels, sev], getattr(th, f"latency_{sev}"))
                fams[LATENCY_P95].add_metric([*labels, sev], getattr(th, f"latency_p95_{sev}"))
                fams[ERROR_RATIO].add_metric([*labels, sev], getattr(th, f"error_ratio_{sev}"))
                fams[DOWNTIME].add_metric([*labels, sev], getattr(th, f"downtime_{sev}"))
                fams[TLS_EXPIRY].add_metric([*labels, sev], getattr(th, f"tls_expiry_{sev}"))
            fams[CONSECUTIVE].add_metric(labels, th.consecutive_failures)
            fams[SLO].add_metric(labels, ep.slo_objective)
            fams[INTERVAL].add_metric(labels, ep.interval)
    return [f for f in fams.values() if f.samples]
