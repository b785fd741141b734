"""Overview: firing alerts, a status tile per database, queue, endpoint and pool, the exporter."""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as m

from exporter.dashboards.board import Board, Row, link
from exporter.dashboards.options import Options
from exporter.dashboards.panels import (
    FAILED_OK,
    UP_DOWN,
    colored,
    graph,
    grid,
    organize,
    query,
    single,
    stat_levels,
    timeline,
    ts,
)
from exporter.dashboards.promql import DB_STATUS, ENDPOINT_STATUS, POOL_STATUS, QUEUE_STATUS, T


def firing_table(runbook_url_base: str):
    """Every firing alert, its name a link to its runbook."""
    runbook = link("Runbook").url(runbook_url_base + "${__value.raw}.md").target_blank(True)
    return (
        grid("Firing alerts", 'ALERTS{alertstate="firing"}')
        .description(
            "Every firing alert of the shipped rules; the alert name links to its runbook."
        )
        .span(24)
        .with_transformation(
            organize(["Time", "Value", "__name__"], indexByName={"alertname": 0, "severity": 1})
        )
        .override_by_name(
            "alertname", [m.DynamicConfigValue(id_val="links", value=[runbook.build()])]
        )
    )


def count(title: str, expr: str, legend: str, color: str = "red"):
    p = single(title, query(expr, legend, instant=True)).span(6).height(4)
    return colored(p, (None, "green"), (1, color))


def board(o: Options) -> Board:
    firing = [
        count(
            f"{sev.capitalize()} alerts firing",
            f'count(ALERTS{{alertstate="firing", severity="{sev}"}}) or vector(0)',
            sev,
            color,
        )
        for sev, color in (("critical", "red"), ("warning", "orange"))
    ]
    job = o.job_selector
    return Board(
        "runbook-overview",
        "runbook-exporter / Overview",
        "Every database, queue, endpoint and app pool at a glance, and the firing alerts.",
        ["target", "app", "endpoint", "queue"],
        [
            Row(
                "Alerts",
                [
                    *firing,
                    count(
                        "Collectors failing",
                        "count(runbook_collector_success == 0) or vector(0)",
                        "failing collectors",
                    ).description(
                        "Collectors and probes whose last run failed; their series are dropped."
                    ),
                    count(
                        "Databases unreachable",
                        "count(runbook_target_up == 0) or vector(0)",
                        "targets down",
                    ),
                    firing_table(o.runbook_url_base),
                ],
            ),
            Row(
                "Status (green OK, amber warning, red critical)",
                [
                    stat_levels("Databases", DB_STATUS, "{{target}}"),
                    stat_levels("Queues", QUEUE_STATUS, "{{target}} / {{queue}}"),
                    stat_levels("Endpoints", ENDPOINT_STATUS, "{{app}} / {{endpoint}}"),
                    stat_levels("App pools", POOL_STATUS, "{{app}} / {{endpoint}}"),
                ],
            ),
            Row(
                "Exporter",
                [
                    timeline(
                        "Collector success",
                        f"runbook_collector_success{{{T}}}",
                        "{{target}} {{collector}}",
                        FAILED_OK,
                    ).span(24),
                    ts(
                        "Collector duration",
                        f"runbook_collector_duration_seconds{{{T}}}",
                        "{{target}} {{collector}}",
                        "s",
                    )
                    .description(
                        "The last run's own work, without its wait for a session (next panel)."
                    )
                    .span(12),
                    ts(
                        "Collector wait for a session",
                        f"runbook_collector_wait_seconds{{{T}}}",
                        "{{target}} {{collector}}",
                        "s",
                    )
                    .description(
                        "How long the last run waited for a session of its target (one of "
                        "max_sessions free, or a new connection) before it started. A wait "
                        "that keeps growing: the target's collectors need more sessions than "
                        "max_sessions, or one collector holds a session too long "
                        "(docs/postgres.md, Sessions per target)."
                    )
                    .span(12),
                    timeline("Exporter scrapes", f"up{{{job}}}", "{{job}} {{instance}}", UP_DOWN)
                    .description(
                        "Prometheus' own up series for the exporter's scrape job (the job the "
                        "exporter alerts select: render both with the same job)."
                    )
                    .span(16)
                    .height(5),
                    ts("Scrape duration", f"scrape_duration_seconds{{{job}}}", "{{instance}}", "s")
                    .span(8)
                    .height(5),
                    timeline(
                        "Configuration reloads",
                        f"runbook_config_last_reload_successful{{{job}}}",
                        "{{instance}}",
                        FAILED_OK,
                    )
                    .description(
                        "failed: the last reload (SIGHUP, POST /-/reload) could not load the "
                        "file; the exporter still runs its previous configuration."
                    )
                    .span(24)
                    .height(4),
                    graph(
                        "Shards",
                        query(
                            'count by (job) (count_values by (job) ("shard", '
                            f"runbook_exporter_shard{{{job}}}))",
                            "{{job}} shards scraped",
                        ),
                        query(
                            f"max by (job) (runbook_exporter_shards{{{job}}})",
                            "{{job}} shards configured (N)",
                        ),
                        query(
                            f"count by (job) (runbook_exporter_shard{{{job}}})",
                            "{{job}} replicas scraped",
                        ),
                    )
                    .description(
                        "With --shard=i/N: the distinct shard indexes the scraped replicas serve "
                        "should equal N, and the replicas number N too. Fewer indexes: a slice is "
                        "not collected (RunbookExporterShardMissing); more replicas than indexes "
                        "or differing N: items collected twice (RunbookExporterShardDuplicated). "
                        "An unsharded exporter is 1 of 1."
                    )
                    .span(24)
                    .height(6),
                ],
            ),
        ],
    )
