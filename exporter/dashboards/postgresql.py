"""PostgreSQL: connections, long queries, idle transactions, locks, vacuum, statements."""

from __future__ import annotations

from exporter.dashboards.board import About, Board, Row
from exporter.dashboards.options import Options
from exporter.dashboards.panels import (
    bars,
    graph,
    grid,
    organize,
    query,
    single,
    stat_levels,
    ts,
    value_mapping,
)
from exporter.dashboards.promql import CONN_RATIO, DB_STATUS, ROLLBACK_RATIO, USABLE, T

E = "{{target}}"
LINE = f"{E} {{{{severity}}}} threshold"
TABLE = "{{target}} {{schema}}.{{table}}"


def per_second(title: str, counters: dict[str, str], increase: bool = False):
    """Rates (or increases) of a target's counters: counter -> what its legend says."""
    fn = "increase" if increase else "rate"
    return graph(
        title,
        *(
            query(f"sum by (target) ({fn}({c}{{{T}}}[$__rate_interval]))", f"{E} {what}")
            for c, what in counters.items()
        ),
        unit="short" if increase else "ops",
    )


def board(o: Options) -> Board:
    return Board(
        "runbook-postgresql",
        "runbook-exporter / PostgreSQL",
        "Connections, long queries, idle transactions, locks, vacuum, statements (runbooks "
        "001, 002, 004).",
        ["target"],
        [
            Row("Status", [stat_levels("Database status", DB_STATUS, E, w=24)]),
            Row(
                "Connections",
                [
                    ts(
                        "Connections vs limit",
                        f"sum by (target, state) (runbook_pg_connections{{{T}}})",
                        f"{E} {{{{state}}}}",
                        stack=True,
                    )
                    .description(
                        "Client backends of the whole server by state (the exporter's own "
                        "excluded), the usable limit (max_connections minus reserved) and the "
                        "alert thresholds."
                    )
                    .threshold(USABLE, f"{E} usable limit")
                    .threshold(
                        f"{USABLE} * on(target) group_right "
                        f"runbook_pg_connections_threshold_ratio{{{T}}}",
                        LINE,
                    ),
                    ts("Connection usage", CONN_RATIO, E, "percentunit")
                    .max(1)
                    .threshold(f"runbook_pg_connections_threshold_ratio{{{T}}}", LINE),
                    ts(
                        "Connections by application",
                        f"runbook_pg_connections_by_application{{{T}}}",
                        f"{E} {{{{application}}}}",
                        stack=True,
                    ),
                    ts(
                        "Connections by user",
                        f"runbook_pg_connections_by_user{{{T}}}",
                        f"{E} {{{{user}}}}",
                        stack=True,
                    ),
                ],
            ),
            Row(
                "Long queries and transactions",
                [
                    About(
                        ts(
                            "Oldest active query",
                            f"runbook_pg_oldest_query_age_seconds{{{T}}}",
                            E,
                            "s",
                        )
                        .description(
                            "Run time of the longest active query (runbook 002: warning above "
                            "5 min, terminate above 10 min)."
                        )
                        .threshold(f"runbook_pg_long_query_threshold_seconds{{{T}}}", LINE),
                        {"runbook_pg_long_running_queries"},
                    ),
                    ts(
                        "Long-running queries",
                        f"runbook_pg_long_running_queries{{{T}}}",
                        f"{E} {{{{severity}}}}",
                    ).description("Active queries longer than the warning / critical threshold."),
                    ts(
                        "Idle in transaction",
                        f"runbook_pg_idle_in_transaction_oldest_age_seconds{{{T}}}",
                        f"{E} oldest",
                        "s",
                    )
                    .description(
                        "Age of the oldest idle-in-transaction session: it holds locks and a "
                        "snapshot that keeps vacuum from cleaning up."
                    )
                    .threshold(f"runbook_pg_idle_in_transaction_threshold_seconds{{{T}}}", LINE),
                    ts(
                        "Sessions idle in transaction",
                        f'runbook_pg_connections{{{T}, state=~"idle_in_transaction.*"}}',
                        f"{E} {{{{state}}}}",
                    ),
                    ts(
                        "Oldest transaction",
                        f"runbook_pg_oldest_transaction_age_seconds{{{T}}}",
                        E,
                        "s",
                    ),
                ],
            ),
            Row(
                "Locks",
                [
                    ts(
                        "Sessions waiting for a lock",
                        f"runbook_pg_lock_waiting_sessions{{{T}}}",
                        E,
                    ).span(8),
                    ts("Longest lock wait", f"runbook_pg_lock_wait_oldest_seconds{{{T}}}", E, "s")
                    .span(8)
                    .threshold(f"runbook_pg_lock_wait_threshold_seconds{{{T}}}", LINE),
                    per_second(
                        "Deadlocks and conflicts",
                        {
                            "runbook_pg_deadlocks_total": "deadlocks",
                            "runbook_pg_conflicts_total": "recovery conflicts",
                        },
                        increase=True,
                    ).span(8),
                ],
            ),
            Row(
                "Vacuum",
                [
                    bars(
                        "Dead tuples, top tables",
                        f"topk(10, runbook_pg_table_dead_tuples{{{T}}})",
                        TABLE,
                    ).span(8),
                    ts(
                        "Dead-tuple ratio, top tables",
                        f"topk(10, runbook_pg_table_dead_tuple_ratio{{{T}}})",
                        TABLE,
                        "percentunit",
                    )
                    .description(
                        "Dead tuples / (live + dead); tables with fewer rows than "
                        "dead_tuple_min_rows do not alert (runbook 002: weekly dead-tuple check)."
                    )
                    .span(8)
                    .threshold(f"runbook_pg_dead_tuple_ratio_threshold{{{T}}}", LINE),
                    ts(
                        "Time since last vacuum, top tables",
                        f"topk(10, runbook_pg_table_last_vacuum_age_seconds{{{T}}})",
                        TABLE,
                        "s",
                    ).span(8),
                ],
            ),
            Row(
                "Statements and transactions",
                [
                    ts(
                        "Slow statements",
                        f"runbook_pg_slow_statements{{{T}}}",
                        f"{E} slow statements",
                    )
                    .description(
                        "Statements in pg_stat_statements whose mean execution time is above "
                        "slow_statement_mean (runbooks 001/002: 1 s)."
                    )
                    .span(8),
                    ts(
                        "Mean time of the top statements",
                        f"topk(10, runbook_pg_statement_mean_seconds{{{T}}})",
                        "{{target}} {{queryid}}",
                        "s",
                    )
                    .span(16)
                    .threshold(
                        f"runbook_pg_slow_statement_threshold_seconds{{{T}}}",
                        f"{E} warning threshold",
                    ),
                    grid(
                        "Top statements by mean time",
                        f"topk(10, runbook_pg_statement_mean_seconds{{{T}}})"
                        " * on(target, queryid) group_left(query) "
                        f"runbook_pg_statement_info{{{T}}}",
                        unit="s",
                    )
                    .span(24)
                    .with_transformation(
                        organize(["Time", "__name__"], renameByName={"Value": "mean"})
                    ),
                    ts("Rollback ratio", ROLLBACK_RATIO, E, "percentunit")
                    .description(
                        "Share of transactions rolled back (runbook 004: database errors above "
                        "0.1 %)."
                    )
                    .threshold(f"runbook_pg_rollback_ratio_threshold{{{T}}}", LINE),
                    per_second(
                        "Transactions per second",
                        {
                            "runbook_pg_xact_commit_total": "commits",
                            "runbook_pg_xact_rollback_total": "rollbacks",
                        },
                    ),
                ],
            ),
            Row(
                "Size and indexes",
                [
                    ts(
                        "Database size",
                        f"runbook_pg_database_size_bytes{{{T}}}",
                        E,
                        "bytes",
                    ).span(8),
                    single(
                        "Indexes",
                        query(f"runbook_pg_unused_indexes{{{T}}}", f"{E} unused", instant=True),
                        query(f"runbook_pg_invalid_indexes{{{T}}}", f"{E} invalid", instant=True),
                    ).span(8),
                    single(
                        "pg_stat_statements",
                        query(f"runbook_pg_stat_statements_available{{{T}}}", E, instant=True),
                    )
                    .mappings(value_mapping(("missing", "orange"), ("available", "green")))
                    .span(8),
                ],
            ),
        ],
    )
