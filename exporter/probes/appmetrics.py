"""Numbers from an endpoint's JSON as gauges named by the config (runbook 004's
`/api/health/metrics`: responseTime percentiles, errorRate). Names are validated in
config.AppMetric and always carry the runbook_app_ prefix and the {app,endpoint} labels.
"""

from __future__ import annotations

from typing import Any

import jmespath
from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.probes.config import AppMetric
from exporter.probes.healthjson import number


class AppMetricsReader:
    def __init__(self, metrics: list[AppMetric]) -> None:
        self.items = [(m, jmespath.compile(m.path)) for m in metrics]

    def families(self, doc: Any, app: str, endpoint: str) -> list[Metric]:
        out: list[Metric] = []
        for m, expr in self.items:
            v = number(expr.search(doc))
            if v is None:
                continue  # absent or not a number: no sample rather than a made-up one
            fam = GaugeMetricFamily(m.full_name, m.help_text, labels=("app", "endpoint"))
            fam.add_metric([app, endpoint], v * m.scale)
            out.append(fam)
        return out
