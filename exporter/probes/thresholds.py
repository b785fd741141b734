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
APP_ERROR_RATIO = spec(
    "runbook_app_error_ratio_threshold",
    "gauge",
    "Error ratio the app reports above which to alert.",
    AES,
    SRC,
)
APP_LATENCY_P95 = spec(
    "runbook_app_latency_p95_threshold_seconds",
    "gauge",
    "95th percentile response time the app reports above which to alert.",
    AES,
    SRC,
)
APP_LATENCY_AVERAGE = spec(
    "runbook_app_latency_average_threshold_seconds",
    "gauge",
    "Average response time the app reports above which to alert.",
    AES,
    SRC,
)
APP_MEMORY_RATIO = spec(
    "runbook_app_memory_ratio_threshold",
    "gauge",
    "Share of its memory the app reports in use above which to alert.",
    AES,
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
# thresholds of what the app reports, by the meaning they apply to: served only for an
# endpoint that has a metric of that meaning (no threshold series without a value to compare)
APP_THRESHOLDS: dict[str, Fields] = {
    "error_ratio": {
        "app_error_ratio_warning": (APP_ERROR_RATIO, "warning"),
        "app_error_ratio_critical": (APP_ERROR_RATIO, "critical"),
    },
    "latency_p95": {
        "app_latency_p95_warning": (APP_LATENCY_P95, "warning"),
        "app_latency_p95_critical": (APP_LATENCY_P95, "critical"),
    },
    "latency_average": {
        "app_latency_average_warning": (APP_LATENCY_AVERAGE, "warning"),
        "app_latency_average_critical": (APP_LATENCY_AVERAGE, "critical"),
    },
    "memory_ratio": {
        "app_memory_ratio_warning": (APP_MEMORY_RATIO, "warning"),
        "app_memory_ratio_critical": (APP_MEMORY_RATIO, "critical"),
    },
}
ENDPOINT_SETTINGS: Fields = {  # of the endpoint itself
    "slo_objective": (SLO, None),
    "interval": (INTERVAL, None),
}


def families(apps: list[App]) -> list[Metric]:
    series = ThresholdSeries(ENDPOINT_THRESHOLDS, ENDPOINT_SETTINGS, *APP_THRESHOLDS.values())
    for app in apps:
        for ep in app.endpoints:
            series.add(ep.thresholds, ENDPOINT_THRESHOLDS, app.name, ep.name)
            series.add(ep, ENDPOINT_SETTINGS, app.name, ep.name)
            for meaning in sorted({m.meaning for m in ep.metrics if m.meaning}):
                if meaning in APP_THRESHOLDS:
                    series.add(ep.thresholds, APP_THRESHOLDS[meaning], app.name, ep.name)
    return series.families()
