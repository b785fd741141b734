"""Cron & pg_net: pg_cron jobs and the HTTP calls the database makes with pg_net."""

from __future__ import annotations

from exporter.dashboards.board import Board, Row
from exporter.dashboards.options import Options
from exporter.dashboards.panels import stat_levels, ts
from exporter.dashboards.promql import (
    CRON_STATUS,
    PGNET_FAILED,
    PGNET_RATIO,
    PGNET_STATUS,
    TJ,
    T,
)

J = "{{target}} / {{jobname}}"
E = "{{target}}"


def board(o: Options) -> Board:
    return Board(
        "runbook-scheduled",
        "runbook-exporter / Cron & pg_net",
        "pg_cron jobs (failures, overdue schedules, long runs, run history) and the HTTP calls "
        "the database makes with pg_net (Supabase).",
        ["target", "jobname"],
        [
            Row(
                "Status",
                [
                    stat_levels("Cron jobs", CRON_STATUS, J, w=16),
                    stat_levels("pg_net calls", PGNET_STATUS, E, w=8),
                ],
            ),
            Row(
                "pg_cron jobs",
                [
                    ts(
                        "Consecutive failed runs",
                        f"runbook_cron_job_consecutive_failures{{{TJ}}}",
                        J,
                    )
                    .description(
                        "Failed runs since the job's newest success (CronJobFailing: warning and "
                        "critical counts per job)."
                    )
                    .levels("runbook_cron_job_consecutive_failures_threshold", TJ, J),
                    ts(
                        "Failed runs in the window",
                        f"runbook_cron_job_recent_failures{{{TJ}}}",
                        J,
                    ).description(
                        "Failed runs that started within the collector's failure_window."
                    ),
                    ts("Overdue", f"runbook_cron_job_overdue_seconds{{{TJ}}}", J, "s")
                    .description(
                        "How long ago the schedule fired with no run started since "
                        "(CronJobOverdue past the grace)."
                    )
                    .threshold(
                        f'runbook_cron_job_overdue_threshold_seconds{{{TJ}, severity="warning"}}',
                        f"{J} warning threshold",
                    ),
                    ts("Run in progress", f"runbook_cron_job_running_seconds{{{TJ}}}", J, "s")
                    .description("How long the job's current run has lasted (CronJobRunTooLong).")
                    .threshold(
                        "runbook_cron_job_run_duration_threshold_seconds"
                        f'{{{TJ}, severity="warning"}}',
                        f"{J} warning threshold",
                    ),
                    ts(
                        "Since the last success",
                        f"time() - runbook_cron_job_last_success_timestamp_seconds{{{TJ}}}",
                        J,
                        "s",
                    ),
                    ts(
                        "Last run's duration",
                        f"runbook_cron_job_last_run_duration_seconds{{{TJ}}}",
                        J,
                        "s",
                    ),
                    ts(
                        "Run history (cron.job_run_details)",
                        f"runbook_cron_history_rows_estimated{{{T}}}",
                        f"{E} rows",
                    )
                    .description(
                        "pg_cron never purges its run history (runbook 001 retention): "
                        "CronHistoryTooLarge above the threshold."
                    )
                    .span(24)
                    .threshold(
                        f'runbook_cron_history_rows_threshold{{{T}, severity="warning"}}',
                        f"{E} warning threshold",
                    ),
                ],
            ),
            Row(
                "pg_net calls",
                [
                    ts(
                        "Responses in the window by outcome",
                        f"sum by (target, outcome) (runbook_pgnet_recent_responses{{{T}}})",
                        "{{target}} {{outcome}}",
                        stack=True,
                    ),
                    ts("Failed calls", PGNET_FAILED, f"{E} failed")
                    .description(
                        "4xx, 5xx, timed out or no response: a pg_cron job that made the call "
                        "still shows succeeded (PgNetCallsFailing)."
                    )
                    .threshold(
                        f'runbook_pgnet_failures_threshold{{{T}, severity="warning"}}',
                        f"{E} warning threshold",
                    ),
                    ts("Failure ratio", PGNET_RATIO, E, "percentunit")
                    .max(1)
                    .description("Failed share of the window's responses (PgNetFailureRatioHigh).")
                    .levels("runbook_pgnet_failure_ratio_threshold", T, E),
                    ts(
                        "Requests waiting in net.http_request_queue",
                        f"runbook_pgnet_request_queue_depth{{{T}}}",
                        E,
                    ),
                ],
            ),
        ],
    )
