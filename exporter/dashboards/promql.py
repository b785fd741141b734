"""PromQL of the dashboards: label filters, the 0/1/2 status levels and the expressions more
than one panel uses. The status levels compute each check the way its alert does, against the
same threshold series (docs/dashboards.md "Red / amber / green")."""

from __future__ import annotations

# label filters, one per kind of entity (Grafana substitutes the template variables)
T = 'target=~"$target"'
TQ = 'target=~"$target", queue=~"$queue"'
AE = 'app=~"$app", endpoint=~"$endpoint"'
TJ = 'target=~"$target", jobname=~"$jobname"'
B = 'backup=~"$backup"'
PL = 'pooler=~"$pooler"'


def check(name: str, expr: str) -> str:
    return f'label_replace({expr}, "check", "{name}", "", "")'


def worst(by: str, checks: list[str]) -> str:
    """The worst level over several checks of the same entity."""
    joined = "\n  or ".join(checks)
    return f"max by ({by}) (\n  {joined}\n)"


def levels(value: str, threshold: str, on: str, op: str = ">") -> str:
    """0/1/2 against a warning and a critical threshold of the same series."""
    w = f'({value} {op} bool on({on}) {threshold}{{severity="warning"}})'
    c = f'({value} {op} bool on({on}) {threshold}{{severity="critical"}})'
    return f"clamp_max({w} + 2 * {c}, 2)"


def warn_level(value: str, threshold: str, on: str) -> str:
    return f'({value} > bool on({on}) {threshold}{{severity="warning"}})'


# --- status expressions (also used by the overview) ----------------------------------------

PENDING = f'sum by (target, queue) (runbook_queue_jobs{{{TQ}, status="pending"}})'
RECENT = f"runbook_queue_recent_jobs{{{TQ}}}"
FAILURE_RATIO = (
    f'sum by (target, queue) ({RECENT[:-1]}, outcome="failed"}})\n'
    f"  / sum by (target, queue) ({RECENT})"
)
USABLE = f"(runbook_pg_max_connections{{{T}}} - on(target) runbook_pg_reserved_connections{{{T}}})"
CONN_RATIO = f"sum by (target) (runbook_pg_connections{{{T}}}) / on(target) {USABLE}"
ROLLBACK_RATIO = (
    f"sum by (target) (rate(runbook_pg_xact_rollback_total{{{T}}}[5m]))\n"
    f"  / (sum by (target) (rate(runbook_pg_xact_commit_total{{{T}}}[5m]))"
    f" + sum by (target) (rate(runbook_pg_xact_rollback_total{{{T}}}[5m])))"
)
DEAD_RATIO_BIG = (
    f"max by (target) (runbook_pg_table_dead_tuple_ratio{{{T}}}"
    f" and on(target, schema, table) ((runbook_pg_table_live_tuples{{{T}}}"
    f" + runbook_pg_table_dead_tuples{{{T}}})"
    f" >= on(target) group_left runbook_pg_dead_tuple_min_rows{{{T}}}))"
)
ERROR_RATIO = (
    f"sum by (app, endpoint) (rate(runbook_probe_failures_total{{{AE}}}[$__rate_interval]))\n"
    f"  / sum by (app, endpoint) (rate(runbook_probe_requests_total{{{AE}}}[$__rate_interval]))"
)


def error_ratio(window: str) -> str:
    return (
        f"sum by (app, endpoint) (rate(runbook_probe_failures_total{{{AE}}}[{window}]))\n"
        f"  / sum by (app, endpoint) (rate(runbook_probe_requests_total{{{AE}}}[{window}]))"
    )


def p95(window: str) -> str:
    return (
        "histogram_quantile(0.95, sum by (app, endpoint, le) "
        f"(rate(runbook_probe_request_duration_seconds_bucket{{{AE}}}[{window}])))"
    )


POOL_LIMIT = (
    f"(runbook_app_pool_size{{{AE}}} + on(app, endpoint)"
    f" (runbook_app_pool_max_overflow{{{AE}}} or 0 * runbook_app_pool_size{{{AE}}}))"
)

QUEUE_STATUS = worst(
    "target, queue",
    [
        check("depth", levels(PENDING, "runbook_queue_depth_threshold", "target, queue")),
        check(
            "oldest_pending",
            levels(
                f"max by (target, queue) (runbook_queue_oldest_pending_age_seconds{{{TQ}}})",
                "runbook_queue_oldest_pending_threshold_seconds",
                "target, queue",
            ),
        ),
        check(
            "stuck",
            warn_level(
                f"max by (target, queue) (runbook_queue_stuck_jobs{{{TQ}}})",
                "runbook_queue_stuck_threshold",
                "target, queue",
            ),
        ),
        check(
            "retries_exhausted",
            warn_level(
                f"max by (target, queue) (runbook_queue_retries_exhausted_jobs{{{TQ}}})",
                "runbook_queue_retries_exhausted_threshold",
                "target, queue",
            ),
        ),
        check(
            "dead_letter",
            warn_level(
                f"max by (target, queue) (runbook_queue_dead_letter_jobs{{{TQ}}})",
                "runbook_queue_dead_letter_threshold",
                "target, queue",
            ),
        ),
        check(
            "failure_ratio",
            levels(f"({FAILURE_RATIO})", "runbook_queue_failure_ratio_threshold", "target, queue"),
        ),
    ],
)

LONG_QUERIES = f"max by (target) (runbook_pg_long_running_queries{{{T}"
DB_STATUS = worst(
    "target",
    [
        check("up", f"2 * (1 - runbook_target_up{{{T}}})"),
        check(
            "connections",
            levels(f"({CONN_RATIO})", "runbook_pg_connections_threshold_ratio", "target"),
        ),
        # the collector counts queries past the target's long_query_warning / _critical
        check(
            "long_query",
            f'clamp_max(({LONG_QUERIES}, severity="warning"}}) > bool 0)'
            f' + 2 * ({LONG_QUERIES}, severity="critical"}}) > bool 0), 2)',
        ),
        check(
            "idle_in_transaction",
            levels(
                f"max by (target) (runbook_pg_idle_in_transaction_oldest_age_seconds{{{T}}})",
                "runbook_pg_idle_in_transaction_threshold_seconds",
                "target",
            ),
        ),
        check(
            "rollback_ratio",
            levels(f"({ROLLBACK_RATIO})", "runbook_pg_rollback_ratio_threshold", "target"),
        ),
        check(
            "dead_tuples",
            warn_level(DEAD_RATIO_BIG, "runbook_pg_dead_tuple_ratio_threshold", "target"),
        ),
        check("slow_statements", f"(max by (target) (runbook_pg_slow_statements{{{T}}}) > bool 0)"),
    ],
)

# downtime as EndpointDown counts it: from the first failed probe, (failures in a row - 1) x
# the probe interval, so it needs no Prometheus history and covers a never-successful endpoint
DOWNTIME = (
    f"clamp_min((runbook_probe_consecutive_failures{{{AE}}} - 1)"
    f" * on(app, endpoint) group_left runbook_probe_interval_seconds{{{AE}}}, 0)"
)

ENDPOINT_STATUS = worst(
    "app, endpoint",
    [
        check("failing", f"(1 - runbook_probe_success{{{AE}}})"),
        check(
            "down",
            levels(
                f"({DOWNTIME})",
                "runbook_probe_downtime_threshold_seconds",
                "app, endpoint",
                op=">=",
            ),
        ),
        check(
            "consecutive_failures",
            f"(runbook_probe_consecutive_failures{{{AE}}} >= bool on(app, endpoint) "
            f"runbook_probe_consecutive_failures_threshold{{{AE}}})",
        ),
        check(
            "latency",
            levels(
                f"runbook_probe_duration_seconds{{{AE}}}",
                "runbook_probe_latency_threshold_seconds",
                "app, endpoint",
            ),
        ),
        check(
            "latency_p95",
            levels(
                f"({p95('30m')})", "runbook_probe_latency_p95_threshold_seconds", "app, endpoint"
            ),
        ),
        check(
            "error_ratio",
            levels(
                f"({error_ratio('1h')})", "runbook_probe_error_ratio_threshold", "app, endpoint"
            ),
        ),
        check(
            "health_component",
            f"(1 - min by (app, endpoint) (runbook_health_component_up{{{AE}}}))",
        ),
        check(
            "tls_expiry",
            levels(
                f"(runbook_probe_tls_cert_expiry_timestamp_seconds{{{AE}}} - time())",
                "runbook_probe_tls_expiry_threshold_seconds",
                "app, endpoint",
                op="<",
            ),
        ),
    ],
)

POOL_STATUS = worst(
    "app, endpoint",
    [
        check(
            "exhausted",
            f"2 * (runbook_app_pool_in_use{{{AE}}} >= bool on(app, endpoint) {POOL_LIMIT})",
        ),
        check("waiting", f"(runbook_app_pool_waiting{{{AE}}} > bool 0)"),
        check(
            "overflow",
            f"(runbook_app_pool_in_use{{{AE}}} > bool on(app, endpoint) "
            f"runbook_app_pool_size{{{AE}}})",
        ),
    ],
)


APP_REPORTED = {  # what the app reports (a metric's meaning) -> its threshold series
    "runbook_app_error_ratio": "runbook_app_error_ratio_threshold",
    "runbook_app_latency_p95_seconds": "runbook_app_latency_p95_threshold_seconds",
    "runbook_app_latency_average_seconds": "runbook_app_latency_average_threshold_seconds",
    "runbook_app_memory_ratio": "runbook_app_memory_ratio_threshold",
}
APP_REPORTED_STATUS = worst(
    "app, endpoint",
    [
        check(
            value.removeprefix("runbook_app_"), levels(f"{value}{{{AE}}}", limit, "app, endpoint")
        )
        for value, limit in APP_REPORTED.items()
    ],
)


ACTIVE_JOB = f"on(target, jobname) runbook_cron_job_active{{{TJ}}} == 1"

CRON_STATUS = worst(
    "target, jobname",
    [
        check(
            "consecutive_failures",
            levels(
                f"runbook_cron_job_consecutive_failures{{{TJ}}}",
                "runbook_cron_job_consecutive_failures_threshold",
                "target, jobname",
                op=">=",
            )
            + f" and {ACTIVE_JOB}",
        ),
        check(
            "overdue",
            warn_level(
                f"runbook_cron_job_overdue_seconds{{{TJ}}}",
                "runbook_cron_job_overdue_threshold_seconds",
                "target, jobname",
            )
            + f" and {ACTIVE_JOB}",
        ),
        check(
            "run_too_long",
            warn_level(
                f"runbook_cron_job_running_seconds{{{TJ}}}",
                "runbook_cron_job_run_duration_threshold_seconds",
                "target, jobname",
            )
            + f" and {ACTIVE_JOB}",
        ),
    ],
)

PGNET_FAILED = (
    f'sum by (target) (runbook_pgnet_recent_responses{{{T}, outcome=~"4xx|5xx|timed_out|error"}})'
)
PGNET_ALL = f"sum by (target) (runbook_pgnet_recent_responses{{{T}}})"
PGNET_RATIO = f"{PGNET_FAILED}\n  / {PGNET_ALL}"
PGNET_STATUS = worst(
    "target",
    [
        check(
            "failures",
            f"({PGNET_FAILED} > bool on(target)"
            ' runbook_pgnet_failures_threshold{severity="warning"})',
        ),
        check(
            "failure_ratio",
            levels(f"({PGNET_RATIO})", "runbook_pgnet_failure_ratio_threshold", "target")
            + f" and on(target) ({PGNET_ALL} >= on(target) runbook_pgnet_min_responses)",
        ),
    ],
)


RETENTION_LIMIT = (
    f"runbook_retention_period_seconds{{{T}}}"
    f" + on(target, schema, table) runbook_retention_grace_seconds{{{T}}}"
)
RETENTION_STATUS = worst(
    "target, schema, table",
    [
        check(
            "cleanup_behind",
            f"(runbook_retention_oldest_row_age_seconds{{{T}}} > bool on(target, schema, table)"
            f" ({RETENTION_LIMIT}))",
        ),
        check("unreadable", f"(1 - runbook_retention_up{{{T}}})"),
    ],
)
BACKUP_STATUS = worst(
    "backup",
    [
        check(
            "age",
            levels(
                f"runbook_backup_age_seconds{{{B}}}",
                "runbook_backup_age_threshold_seconds",
                "backup",
            ),
        ),
        check("missing", f"2 * (1 - runbook_backup_found{{{B}}})"),
        check("source", f"(1 - runbook_backup_source_up{{{B}}})"),
    ],
)


POOL = "pooler, database, user"
POOL_WAIT = f"runbook_pgbouncer_pool_max_wait_seconds{{{PL}}}"
POOL_SATURATION = f"runbook_pgbouncer_pool_saturation_ratio{{{PL}}}"


def pool_levels(value: str, threshold: str) -> str:
    """levels() for a pool against its pooler's thresholds: many pools, one threshold each
    (group_left keeps the pool's labels)."""
    w = f'({value} > bool on(pooler) group_left {threshold}{{severity="warning"}})'
    c = f'({value} > bool on(pooler) group_left {threshold}{{severity="critical"}})'
    return f"clamp_max({w} + 2 * {c}, 2)"


POOLER_STATUS = worst(
    POOL,
    [
        check("max_wait", pool_levels(POOL_WAIT, "runbook_pgbouncer_max_wait_threshold_seconds")),
        check(
            "saturation",
            pool_levels(POOL_SATURATION, "runbook_pgbouncer_saturation_threshold_ratio"),
        ),
    ],
)
# Supavisor's own /metrics, scraped by Prometheus directly (docs/supabase.md "Supavisor"): its
# queries return data only where Supavisor runs and is scraped, so the dashboards test leaves
# exactly these out (tests/test_pgbouncer.py SUPAVISOR_QUERIES)
SUPAVISOR_CHECKOUT_P95 = (
    "histogram_quantile(0.95, sum by (le, tenant, mode) "
    "(rate(supavisor_pool_checkout_duration_bucket[$__rate_interval]))) / 1000"
)
SUPAVISOR_CLIENTS = "sum by (tenant, mode) (supavisor_connections_active)"
