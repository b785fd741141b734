"""Endpoint thresholds and intervals as series, from the configuration alone (like
collectors/thresholds.py for the databases): served always, even before the first probe, so
alert rules compare with `runbook_probe_*_threshold*` of the same app and endpoint.
"""

from __future__ import annotations

from prometheus_client.core import Metric

from exporter.metrics import Fields, ThresholdSeries, spec
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


ENDPOINT_THRESHOLDS: Fields = {  # of an endpoint's `thresholds`
    "latency_warning": (LATENCY, "warning"),
    "latency_critical": (LATENCY, "critical"),
    "latency_p95_warning": (LATENCY_P95, "warning"),
    "latency_p95_critical": (LATENCY_P95, "critical"),
    "error_ratio_warning": (ERROR_RATIO, "warning"),
    "error_ratio_critical": (ERROR_RATIO, "critical"),
    "consecutive_failures": (CONSECUTIVE, None),
    "downtime_warning": (DOWNTIME, "warning"),
    "downtime_critical": (DOWNTIME, "critical"),
    "tls_expiry_warning": (TLS_EXPIRY, "warning"),
    "tls_expiry_critical": (TLS_EXPIRY, "critical"),
}
ENDPOINT_SETTINGS: Fields = {  # of the endpoint itself
    "slo_objective": (SLO, None),
    "interval": (INTERVAL, None),
}


def families(apps: list[App]) -> list[Metric]:
    series = ThresholdSeries(ENDPOINT_THRESHOLDS, ENDPOINT_SETTINGS)
    for app in apps:
        for ep in app.endpoints:
            series.add(ep.thresholds, ENDPOINT_THRESHOLDS, app.name, ep.name)
            series.add(ep, ENDPOINT_SETTINGS, app.name, ep.name)
    return series.families()
