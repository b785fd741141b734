"""Endpoints: HTTP health endpoints' success, latency, failures and SLO burn."""

from __future__ import annotations

from grafana_foundation_sdk.builders import common
from grafana_foundation_sdk.models import common as c
from grafana_foundation_sdk.models import dashboard as m

from exporter.dashboards.board import Board, Row
from exporter.dashboards.options import Options
from exporter.dashboards.panels import (
    UP_DOWN,
    colors,
    histogram,
    stat_levels,
    steps,
    timeline,
    ts,
)
from exporter.dashboards.promql import AE, DOWNTIME, ENDPOINT_STATUS, ERROR_RATIO, error_ratio, p95

E = "{{app}} / {{endpoint}}"
LINE = f"{E} {{{{severity}}}} threshold"


def board(o: Options) -> Board:
    return Board(
        "runbook-endpoints",
        "runbook-exporter / Endpoints",
        "HTTP health endpoints: success, latency, failures and SLO burn (runbooks 000, 001, 004).",
        ["app", "endpoint"],
        [
            Row(
                "Status",
                [
                    stat_levels("Endpoint status", ENDPOINT_STATUS, E),
                    timeline("Probe success", f"runbook_probe_success{{{AE}}}", E, UP_DOWN).height(
                        6
                    ),
                ],
            ),
            Row(
                "Latency",
                [
                    histogram(
                        "Probe latency histogram",
                        "sum by (le) (rate(runbook_probe_request_duration_seconds_bucket"
                        f"{{{AE}}}[$__rate_interval]))",
                        "{{le}}",
                        "s",
                    ),
                    ts("Latency P95", p95("$__rate_interval"), E, "s").threshold(
                        f"runbook_probe_latency_p95_threshold_seconds{{{AE}}}", LINE
                    ),
                    ts("Last probe duration", f"runbook_probe_duration_seconds{{{AE}}}", E, "s")
                    .description(
                        "Runbook 000: API response time above 1.5 s warning, 3 s critical."
                    )
                    .threshold(f"runbook_probe_latency_threshold_seconds{{{AE}}}", LINE),
                    ts(
                        "Probe phases",
                        f"runbook_probe_phase_duration_seconds{{{AE}}}",
                        f"{E} {{{{phase}}}}",
                        "s",
                        stack=True,
                    ),
                ],
            ),
            Row(
                "Failures",
                [
                    ts(
                        "Consecutive failures",
                        f"runbook_probe_consecutive_failures{{{AE}}}",
                        E,
                    )
                    .span(8)
                    .threshold(
                        f"runbook_probe_consecutive_failures_threshold{{{AE}}}",
                        f"{E} warning threshold",
                    ),
                    ts("Error ratio", ERROR_RATIO, E, "percentunit")
                    .span(8)
                    .threshold(f"runbook_probe_error_ratio_threshold{{{AE}}}", LINE),
                    ts(
                        "Failure reason",
                        f"runbook_probe_failure_reason{{{AE}}} > 0",
                        f"{E} {{{{reason}}}}",
                    )
                    .description(
                        "Why the last probe failed (connect, timeout, tls, status, "
                        "body_too_large, encoding, json, assertion, check_error); empty while "
                        "every probe succeeds."
                    )
                    .span(8),
                    ts("Downtime", DOWNTIME, E, "s")
                    .description(
                        "Time since the first of the failed probes in a row, as EndpointDown "
                        "counts it: (consecutive failures - 1) x probe interval."
                    )
                    .span(8)
                    .threshold(f"runbook_probe_downtime_threshold_seconds{{{AE}}}", LINE),
                    ts("HTTP status", f"runbook_probe_status_code{{{AE}}}", E).span(8),
                    timeline(
                        "Health components",
                        f"runbook_health_component_up{{{AE}}}",
                        f"{E} {{{{component}}}}",
                        UP_DOWN,
                    ).span(8),
                ],
            ),
            Row(
                "SLO",
                [
                    ts(
                        "SLO burn rate",
                        f"({error_ratio('1h')})\n  / on(app, endpoint) "
                        f"(1 - runbook_slo_objective{{{AE}}})",
                        f"{E} 1h",
                    )
                    .description(
                        "Error ratio divided by the error budget (1 - objective): 1 spends the "
                        "budget exactly over the SLO period; 14.4 over 1 h spends 2 % of a "
                        "30-day budget."
                    )
                    # 6x and 14.4x marked on the graph itself: no series carries these
                    .thresholds(steps((None, "green"), (6, "orange"), (14.4, "red")))
                    .color_scheme(colors(m.FieldColorModeId.THRESHOLDS))
                    .thresholds_style(
                        common.GraphThresholdsStyleConfig().mode(
                            c.GraphThresholdsStyleMode.LINE_AND_AREA
                        )
                    ),
                    ts(
                        "Availability vs objective",
                        f"avg_over_time(runbook_probe_success{{{AE}}}[1h])",
                        f"{E} 1h",
                        "percentunit",
                    ).threshold(f"runbook_slo_objective{{{AE}}}", f"{E} critical threshold"),
                    ts(
                        "TLS certificate expires in",
                        f"runbook_probe_tls_cert_expiry_timestamp_seconds{{{AE}}} - time()",
                        E,
                        "s",
                    ).threshold(f"runbook_probe_tls_expiry_threshold_seconds{{{AE}}}", LINE),
                ],
            ),
        ],
    )
