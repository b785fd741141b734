"""Retention, backups, custom queries."""

from __future__ import annotations

from exporter.dashboards.board import About, Board, Row
from exporter.dashboards.options import Options
from exporter.dashboards.panels import stat_levels, ts
from exporter.dashboards.promql import BACKUP_STATUS, RETENTION_LIMIT, RETENTION_STATUS, B, T

TABLE = "{{target}} {{schema}}.{{table}}"
BACKUP = "{{backup}}"
QUERY = "{{target}} / {{query}}"


def board(o: Options) -> Board:
    return Board(
        "runbook-data",
        "runbook-exporter / Retention, backups, custom queries",
        "Rows kept past their retention period, the age of the last good backup of each "
        "source, and the health of the custom SQL queries.",
        ["target", "backup"],
        [
            Row(
                "Status",
                [
                    stat_levels("Retention", RETENTION_STATUS, TABLE),
                    stat_levels("Backups", BACKUP_STATUS, BACKUP),
                ],
            ),
            Row(
                "Retention (runbook 001)",
                [
                    About(
                        ts(
                            "Oldest row's age",
                            f"runbook_retention_oldest_row_age_seconds{{{T}}}",
                            TABLE,
                            "s",
                        )
                        .description(
                            "Age of the oldest row of each table with a retention period; "
                            "RetentionCleanupBehind when it passes period + grace (the clean-up "
                            "job is not deleting)."
                        )
                        .threshold(RETENTION_LIMIT, f"{TABLE} period + grace warning limit")
                        .threshold(
                            f"runbook_retention_period_seconds{{{T}}}", f"{TABLE} period limit"
                        ),
                        {"runbook_retention_period_seconds"},
                    ),
                    ts(
                        "Rows past retention",
                        f"runbook_retention_expired_rows{{{T}}}",
                        TABLE,
                    ).description(
                        "Counted through the index up to the table's max_count: "
                        "`runbook_retention_expired_rows_capped` 1 means at least this many."
                    ),
                ],
            ),
            Row(
                "Backups (runbooks 002, 003)",
                [
                    ts(
                        "Age of the last good backup",
                        f"runbook_backup_age_seconds{{{B}}}",
                        BACKUP,
                        "s",
                    )
                    .description(
                        "Time since the newest good backup the source lists (BackupTooOld at "
                        "the warning / critical ages)."
                    )
                    .levels("runbook_backup_age_threshold_seconds", B, BACKUP),
                    ts("Backup size", f"runbook_backup_size_bytes{{{B}}}", BACKUP, "bytes"),
                    ts("Backups found", f"runbook_backup_found{{{B}}}", BACKUP)
                    .description(
                        "1 when the source lists a good backup, 0 when it was read and lists "
                        "none (BackupMissing)."
                    )
                    .max(1),
                    ts("Source readable", f"runbook_backup_source_up{{{B}}}", BACKUP)
                    .description(
                        "0 when the source cannot be read (BackupSourceFailing); the reason is "
                        "runbook_backup_source_failure_reason."
                    )
                    .max(1),
                ],
            ),
            Row(
                "Custom queries",
                [
                    ts("Query success", f"runbook_custom_query_success{{{T}}}", QUERY)
                    .max(1)
                    .description("1 when the custom query's last run worked (targets[].queries)."),
                    ts(
                        "Query duration",
                        f"runbook_custom_query_duration_seconds{{{T}}}",
                        QUERY,
                        "s",
                    ),
                    ts(
                        "Since the last success",
                        f"time() - runbook_custom_query_last_success_timestamp_seconds{{{T}}}",
                        QUERY,
                        "s",
                    ),
                    ts(
                        "Series dropped by max_series",
                        f"runbook_custom_query_series_dropped{{{T}}}",
                        QUERY,
                    ),
                ],
            ),
        ],
    )
