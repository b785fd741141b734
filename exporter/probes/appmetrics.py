"""Numbers from an endpoint's JSON as gauges (runbook 004's `/api/health/metrics`:
responseTime percentiles, errorRate, memory). A value with a configured `name` is served as
runbook_app_<name>{app,endpoint} (names are validated in config.AppMetric); a value with a
`meaning` and its `unit` is also served, in base units, under the fixed series below, which
the shipped rules (alerts/app-reported.rules.yml) compare with the endpoint's thresholds.
"""

from __future__ import annotations

from typing import Any

import jmespath
from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.metrics import MetricSpec, spec
from exporter.probes.config import AppMetric
from exporter.probes.healthjson import number

SRC = "probes/appmetrics.py"
AE = ("app", "endpoint")

ERROR_RATIO = spec(
    "runbook_app_error_ratio",
    "gauge",
    "Share of requests that failed, as the app reports it (meaning error_ratio), 0 to 1.",
    AE,
    SRC,
)
# one series per percentile rather than a `quantile` label: promtool refuses that label on
# anything but a summary
LATENCY = {
    q: spec(
        f"runbook_app_latency_{q}_seconds",
        "gauge",
        f"{q.upper()} response time the app reports itself (meaning latency_{q}).",
        AE,
        SRC,
    )
    for q in ("p50", "p95", "p99")
}
LATENCY_AVERAGE = spec(
    "runbook_app_latency_average_seconds",
    "gauge",
    "Average response time the app reports itself (meaning latency_average).",
    AE,
    SRC,
)
MEMORY_RATIO = spec(
    "runbook_app_memory_ratio",
    "gauge",
    "Share of its memory limit the app reports in use (meaning memory_ratio), 0 to 1.",
    AE,
    SRC,
)
SERIES: dict[str, MetricSpec] = {  # meaning -> its series
    "error_ratio": ERROR_RATIO,
    **{f"latency_{q}": s for q, s in LATENCY.items()},
    "latency_average": LATENCY_AVERAGE,
    "memory_ratio": MEMORY_RATIO,
}


class AppMetricsReader:
    def __init__(self, metrics: list[AppMetric]) -> None:
        self.items = [(m, jmespath.compile(m.path)) for m in metrics]

    def families(self, doc: Any, app: str, endpoint: str) -> list[Metric]:
        out: list[Metric] = []
        for m, expr in self.items:
            v = number(expr.search(doc))
            if v is None:
                continue  # absent or not a number: no sample rather than a made-up one
            value = v * m.factor
            if m.full_name is not None:
                fam = GaugeMetricFamily(m.full_name, m.help_text, labels=AE)
                fam.add_metric([app, endpoint], value)
                out.append(fam)
            if m.meaning is not None:
                out.append(SERIES[m.meaning].one(value, app, endpoint))
        return out
