"""App pools and app metrics: the apps' connection pools and what they report."""

from __future__ import annotations

from exporter.dashboards.board import Board, Row
from exporter.dashboards.options import Options
from exporter.dashboards.panels import Graph, stat_levels, ts
from exporter.dashboards.promql import (
    AE,
    APP_REPORTED,
    APP_REPORTED_STATUS,
    POOL_LIMIT,
    POOL_STATUS,
)

E = "{{app}} / {{endpoint}}"


def reported(title: str, value: str, unit: str, description: str) -> Graph:
    """A figure the app reports with its warning and critical threshold lines."""
    return (
        ts(title, f"{value}{{{AE}}}", E, unit)
        .description(description)
        .levels(APP_REPORTED[value], AE, E)
    )


def board(o: Options) -> Board:
    return Board(
        "runbook-app-pools",
        "runbook-exporter / App pools and app metrics",
        "The apps' own database connection pools (runbook 001) and the error rate, response "
        "times and memory they report in their metrics JSON (runbooks 001, 004).",
        ["app", "endpoint"],
        [
            Row(
                "Status",
                [
                    stat_levels("Pool status", POOL_STATUS, E),
                    stat_levels("What the app reports", APP_REPORTED_STATUS, E),
                ],
            ),
            Row(
                "What the app reports (its metrics JSON)",
                [
                    reported(
                        "Error ratio",
                        "runbook_app_error_ratio",
                        "percentunit",
                        "The error rate the app reports (meaning: error_ratio), runbooks 001/004.",
                    ),
                    reported(
                        "Response time P95",
                        "runbook_app_latency_p95_seconds",
                        "s",
                        "The P95 response time the app reports (meaning: latency_p95).",
                    ),
                    reported(
                        "Response time average",
                        "runbook_app_latency_average_seconds",
                        "s",
                        "The average response time the app reports (meaning: latency_average).",
                    ),
                    reported(
                        "Memory",
                        "runbook_app_memory_ratio",
                        "percentunit",
                        "The share of its memory the app reports in use (meaning: memory_ratio).",
                    ),
                ],
            ),
            Row(
                "Pool",
                [
                    ts("Connections in use", f"runbook_app_pool_in_use{{{AE}}}", f"{E} in use")
                    .description(
                        "Connections checked out of the app's pool, the pool size and the "
                        "exhaustion limit (size + max overflow, runbook 001)."
                    )
                    .threshold(f"runbook_app_pool_size{{{AE}}}", f"{E} pool size warning limit")
                    .threshold(POOL_LIMIT, f"{E} size + max overflow critical limit"),
                    ts(
                        "Requests waiting for a connection",
                        f"runbook_app_pool_waiting{{{AE}}}",
                        E,
                    ),
                    ts("Idle connections", f"runbook_app_pool_idle{{{AE}}}", E),
                    ts("Overflow in use", f"runbook_app_pool_overflow{{{AE}}}", E).threshold(
                        f"runbook_app_pool_max_overflow{{{AE}}}", f"{E} max overflow critical limit"
                    ),
                    ts(
                        "Pool utilisation",
                        f"runbook_app_pool_in_use{{{AE}}} / on(app, endpoint) {POOL_LIMIT}",
                        E,
                        "percentunit",
                    )
                    .max(1)
                    .span(24),
                ],
            ),
        ],
    )
