"""Alert rules: retention."""

from __future__ import annotations

from exporter.rules.model import Alert, Group, warning

GROUP = Group(
    area="retention",
    name="runbook-exporter.retention",
    about="""
        Retention compliance (collectors/retention.py; runbook 001 "Retention Policy Compliance":
        data older than the retention period exists = the cleanup job failed). The thresholds are
        the exporter's own series for the same target, schema and table
        (runbook_retention_period_seconds and runbook_retention_grace_seconds, from
        `targets[].retention` in the exporter config), so a per-table period needs no rule edit. The
        `for:` is justified in the runbook doc.
    """,
    rules=(
        Alert(
            "RetentionCleanupBehind",
            expr="""
                runbook_retention_oldest_row_age_seconds
                  > on(target, schema, table) group_left()
                (
                  runbook_retention_period_seconds
                    + on(target, schema, table)
                  runbook_retention_grace_seconds
                )
            """,
            summary="{{ $labels.schema }}.{{ $labels.table }} on {{ $labels.target }} keeps rows past retention: the oldest is {{ $value | humanizeDuration }} old",
            description="""
                The oldest row of {{ $labels.schema }}.{{ $labels.table }} (target
                {{ $labels.target }}) is {{ $value | humanizeDuration }} old, past its retention
                period of
                {{ with printf `runbook_retention_period_seconds{target=%q,schema=%q,table=%q}` $labels.target $labels.schema $labels.table | query }}{{ . | first | value | humanizeDuration }}{{ end }}
                plus a grace of
                {{ with printf `runbook_retention_grace_seconds{target=%q,schema=%q,table=%q}` $labels.target $labels.schema $labels.table | query }}{{ . | first | value | humanizeDuration }}{{ end }};
                {{ with printf `runbook_retention_expired_rows{target=%q,schema=%q,table=%q}` $labels.target $labels.schema $labels.table | query }}{{ . | first | value | humanize }}{{ end }}
                row(s) are past retention (counted up to the table's max_count). The cleanup job has
                not run or has failed.
            """,
            variants=(warning("30m"),),
        ),
    ),
)
