"""Alert rules: postgres."""

from __future__ import annotations

from exporter.rules.model import Alert, Group, critical, info, warning

GROUP = Group(
    area="postgres",
    name="runbook-exporter.postgres",
    about="""
        PostgreSQL alerts (collectors/connections.py, database.py, tables.py, statements.py).
        Thresholds are the exporter's per-target threshold series (collectors/thresholds.py), so a
        per-target override needs no rule edit. Defaults: runbooks 002 and 004 (see docs/alerts.md).
        The `for:` of each alert is justified in docs/runbooks/<AlertName>.md.
    """,
    rules=(
        Alert(
            "PostgresConnectionsNearLimit",
            why="client sessions of the whole server over the slots a normal role may use",
            expr="""
                sum by (target) (runbook_pg_connections)
                  / on(target) group_left()
                (runbook_pg_max_connections - runbook_pg_reserved_connections)
                  > on(target) group_left
                runbook_pg_connections_threshold_ratio{severity="${severity}"}
            """,
            summary="PostgreSQL {{ $labels.target }}: {{ $value | humanizePercentage }} of usable connections in use",
            description="""
                Client sessions on target {{ $labels.target }}:
                {{ with printf `sum(runbook_pg_connections{target=%q})` $labels.target | query }}{{ . | first | value | humanize }}{{ end }}
                of
                {{ with printf `runbook_pg_max_connections{target=%q} - runbook_pg_reserved_connections{target=%q}` $labels.target $labels.target | query }}{{ . | first | value | humanize }}{{ end }}
                usable (max_connections minus reserved), {{ $value | humanizePercentage }}, above
                the ${severity} ratio of
                {{ with printf `runbook_pg_connections_threshold_ratio{target=%q,severity="${severity}"}` $labels.target | query }}{{ . | first | value | humanizePercentage }}{{ end }}
                for ${for}${impact}
            """,
            variants=(
                warning("10m", impact="."),
                critical("5m", impact=": new connections will soon be refused."),
            ),
        ),
        Alert(
            "PostgresLongRunningQuery",
            why="""
                the exporter counts active queries older than the target's long_query_warning /
                long_query_critical, so the series carries the per-target threshold already
            """,
            expr='runbook_pg_long_running_queries{severity="${severity}"} > 0',
            summary="PostgreSQL {{ $labels.target }}: queries running longer than the ${severity} limit: {{ $value | humanize }}",
            description="""
                Active queries on target {{ $labels.target }} running for more than
                {{ with printf `runbook_pg_long_query_threshold_seconds{target=%q,severity="${severity}"}` $labels.target | query }}{{ . | first | value | humanizeDuration }}{{ end }}:
                {{ $value | humanize }}; the oldest has run for
                {{ with printf `runbook_pg_oldest_query_age_seconds{target=%q}` $labels.target | query }}{{ . | first | value | humanizeDuration }}{{ end }}.${impact}
            """,
            variants=(
                warning("1m", impact=""),
                critical("1m", impact=" The runbook terminates queries past this limit."),
            ),
        ),
        Alert(
            "PostgresIdleInTransaction",
            expr="""
                runbook_pg_idle_in_transaction_oldest_age_seconds
                  > on(target) group_left
                runbook_pg_idle_in_transaction_threshold_seconds{severity="${severity}"}
            """,
            summary="PostgreSQL {{ $labels.target }}: a session is idle in transaction for {{ $value | humanizeDuration }}",
            description="""
                The oldest idle-in-transaction session on target {{ $labels.target }} has held its
                transaction open for {{ $value | humanizeDuration }}, longer than the ${severity}
                limit of
                {{ with printf `runbook_pg_idle_in_transaction_threshold_seconds{target=%q,severity="${severity}"}` $labels.target | query }}{{ . | first | value | humanizeDuration }}{{ end }}.
                It holds its locks and stops vacuum from cleaning up.
            """,
            variants=(
                warning("1m"),
                critical("1m"),
            ),
        ),
        Alert(
            "PostgresSessionsBlockedOnLocks",
            why="""
                lock waits longer than the long-query limits also show up in
                PostgresLongRunningQuery (a waiting query is active)
            """,
            expr="""
                runbook_pg_lock_wait_oldest_seconds
                  > on(target) group_left
                runbook_pg_lock_wait_threshold_seconds{severity="warning"}
            """,
            summary="PostgreSQL {{ $labels.target }}: sessions blocked on locks, the oldest for {{ $value | humanizeDuration }}",
            description="""
                Sessions waiting for a lock on target {{ $labels.target }}:
                {{ with printf `runbook_pg_lock_waiting_sessions{target=%q}` $labels.target | query }}{{ . | first | value | humanize }}{{ end }};
                the longest has waited {{ $value | humanizeDuration }} (alert above
                {{ with printf `runbook_pg_lock_wait_threshold_seconds{target=%q,severity="warning"}` $labels.target | query }}{{ . | first | value | humanizeDuration }}{{ end }}).
            """,
            variants=(warning("1m"),),
        ),
        Alert(
            "PostgresDeadTuplesHigh",
            why="""
                only tables with at least runbook_pg_dead_tuple_min_rows rows (live + dead): a 90 %
                dead ratio on a 50-row table is noise
            """,
            expr="""
                runbook_pg_table_dead_tuple_ratio
                  > on(target) group_left
                runbook_pg_dead_tuple_ratio_threshold{severity="warning"}
                and on(target, schema, table)
                (runbook_pg_table_live_tuples + runbook_pg_table_dead_tuples)
                  >= on(target) group_left
                runbook_pg_dead_tuple_min_rows
            """,
            summary="PostgreSQL {{ $labels.target }}: {{ $labels.schema }}.{{ $labels.table }} is {{ $value | humanizePercentage }} dead tuples",
            description="""
                Table {{ $labels.schema }}.{{ $labels.table }} on target {{ $labels.target }} has
                {{ $value | humanizePercentage }} dead tuples
                ({{ with printf `runbook_pg_table_dead_tuples{target=%q,schema=%q,table=%q}` $labels.target $labels.schema $labels.table | query }}{{ . | first | value | humanize }}{{ end }}
                dead,
                {{ with printf `runbook_pg_table_live_tuples{target=%q,schema=%q,table=%q}` $labels.target $labels.schema $labels.table | query }}{{ . | first | value | humanize }}{{ end }}
                live), above the warning ratio of
                {{ with printf `runbook_pg_dead_tuple_ratio_threshold{target=%q,severity="warning"}` $labels.target | query }}{{ . | first | value | humanizePercentage }}{{ end }}
                for ${for}: autovacuum is not keeping up.
            """,
            variants=(warning("30m"),),
        ),
        Alert(
            "PostgresSlowStatements",
            expr="runbook_pg_slow_statements > 0",
            summary="PostgreSQL {{ $labels.target }}: statements slower than the limit on average: {{ $value | humanize }}",
            description="""
                Statements in pg_stat_statements on target {{ $labels.target }} with a mean
                execution time above
                {{ with printf `runbook_pg_slow_statement_threshold_seconds{target=%q}` $labels.target | query }}{{ . | first | value | humanizeDuration }}{{ end }}:
                {{ $value | humanize }}.
            """,
            variants=(warning("30m"),),
        ),
        Alert(
            "PostgresRollbackRatioHigh",
            expr="""
                (
                    rate(runbook_pg_xact_rollback_total[5m])
                  /
                    (rate(runbook_pg_xact_commit_total[5m]) + rate(runbook_pg_xact_rollback_total[5m]))
                )
                  > on(target) group_left
                runbook_pg_rollback_ratio_threshold{severity="${severity}"}
            """,
            summary="PostgreSQL {{ $labels.target }}: {{ $value | humanizePercentage }} of transactions roll back",
            description="""
                {{ $value | humanizePercentage }} of the transactions on target {{ $labels.target }}
                rolled back over the last 5 minutes, above the ${severity} ratio of
                {{ with printf `runbook_pg_rollback_ratio_threshold{target=%q,severity="${severity}"}` $labels.target | query }}{{ . | first | value | humanizePercentage }}{{ end }}
                for ${for}.
            """,
            variants=(
                warning("10m"),
                critical("10m"),
            ),
        ),
        Alert(
            "PostgresDeadlocks",
            why="""
                no for: a deadlock is an event; the 15m window keeps the alert up long enough to
                notice
            """,
            expr="increase(runbook_pg_deadlocks_total[15m]) > 0",
            summary="PostgreSQL {{ $labels.target }}: deadlocks in the last 15 minutes",
            description="""
                Deadlocks detected on target {{ $labels.target }} in the last 15 minutes: about
                {{ printf "%.0f" $value }}. PostgreSQL aborted one transaction of each; the
                application saw an error.
            """,
            variants=(warning("0m"),),
        ),
        Alert(
            "PostgresStatStatementsUnavailable",
            why="without pg_stat_statements PostgresSlowStatements can never fire: say so once",
            expr="runbook_pg_stat_statements_available == 0",
            summary="PostgreSQL {{ $labels.target }}: pg_stat_statements is not available",
            description="""
                The exporter cannot read pg_stat_statements on target {{ $labels.target }}, so slow
                statements are not watched. Load the extension (shared_preload_libraries and CREATE
                EXTENSION pg_stat_statements) or grant pg_read_all_stats.
            """,
            variants=(info("1h"),),
        ),
        Alert(
            "PostgresUnusedIndexes",
            expr="runbook_pg_unused_indexes > 0",
            summary="PostgreSQL {{ $labels.target }}: indexes never scanned: {{ $value | humanize }}",
            description="""
                Indexes on target {{ $labels.target }} with no scan since the statistics were last
                reset: {{ $value | humanize }}, taking
                {{ with printf `runbook_pg_unused_index_size_bytes{target=%q}` $labels.target | query }}{{ . | first | value | humanize1024 }}B{{ end }}.
                They slow every write to their table.
            """,
            variants=(info("24h"),),
        ),
    ),
)
