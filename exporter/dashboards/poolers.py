"""Connection poolers: PgBouncer from the exporter, Supavisor from its own metrics."""

from __future__ import annotations

from exporter.dashboards.board import About, Board, Row
from exporter.dashboards.options import Options
from exporter.dashboards.panels import UP_DOWN, query, single, stat_levels, ts
from exporter.dashboards.promql import (
    PL,
    POOL,
    POOL_SATURATION,
    POOL_WAIT,
    POOLER_STATUS,
    SUPAVISOR_CHECKOUT_P95,
    SUPAVISOR_CLIENTS,
)

P = "{{pooler}} {{database}}/{{user}}"
DB = "{{pooler}} {{database}}"


def board(o: Options) -> Board:
    return Board(
        "runbook-poolers",
        "runbook-exporter / Connection poolers",
        "PgBouncer pools (clients waiting, the longest wait, saturation, server connections, "
        "traffic) from the exporter, and Supavisor's checkout queue from its own metrics.",
        ["pooler"],
        [
            Row(
                "Status",
                [
                    stat_levels("PgBouncer pools", POOLER_STATUS, P, w=16),
                    About(
                        single(
                            "Admin console",
                            query(f"runbook_pgbouncer_up{{{PL}}}", "{{pooler}}", instant=True),
                        )
                        .description(
                            "1 when the exporter read the pooler's admin console on its last run "
                            "(PgBouncerDown; the reason is runbook_pgbouncer_failure_reason)."
                        )
                        .mappings(UP_DOWN)
                        .span(8)
                        .height(6),
                        {"runbook_pgbouncer_failure_reason"},
                    ),
                ],
            ),
            Row(
                "PgBouncer pools",
                [
                    ts(
                        "Clients waiting for a server connection",
                        f'runbook_pgbouncer_pool_clients{{{PL}, state="waiting"}}',
                        P,
                    ).description(
                        "Clients queued in PgBouncer (SHOW POOLS cl_waiting): users wait here "
                        "while the database may look idle."
                    ),
                    ts("Longest wait", POOL_WAIT, P, "s")
                    .description(
                        "How long the oldest waiting client has waited (maxwait + maxwait_us; "
                        "PgBouncerClientsWaiting)."
                    )
                    .levels("runbook_pgbouncer_max_wait_threshold_seconds", PL, "{{pooler}}"),
                    ts("Pool saturation", POOL_SATURATION, P, "percentunit")
                    .description(
                        "Server connections in use by clients / pool_size (PgBouncerPoolSaturated)."
                    )
                    .levels("runbook_pgbouncer_saturation_threshold_ratio", PL, "{{pooler}}"),
                    ts(
                        "Server connections by state",
                        f"sum by ({POOL}, state) (runbook_pgbouncer_pool_servers{{{PL}}})",
                        f"{P} {{{{state}}}}",
                        stack=True,
                    )
                    .description(
                        "active: linked to a client; idle/used: free; login/tested: being opened "
                        "or checked."
                    )
                    .threshold(f"runbook_pgbouncer_pool_size{{{PL}}}", f"{P} pool_size limit"),
                    ts(
                        "Active clients",
                        f'runbook_pgbouncer_pool_clients{{{PL}, state="active"}}',
                        P,
                    ),
                    ts(
                        "Client connections of the pooler",
                        f'runbook_pgbouncer_list_items{{{PL}, list="used_clients"}}',
                        "{{pooler}} used_clients",
                    )
                    .description(
                        "All client connections PgBouncer holds (SHOW LISTS), against its "
                        "max_client_conn."
                    )
                    .threshold(
                        f"runbook_pgbouncer_max_client_connections{{{PL}}}",
                        "{{pooler}} max_client_conn limit",
                    ),
                ],
            ),
            Row(
                "PgBouncer traffic",
                [
                    ts(
                        "Transactions per second",
                        f"rate(runbook_pgbouncer_transactions_total{{{PL}}}[$__rate_interval])",
                        DB,
                        "ops",
                    ),
                    ts(
                        "Queries per second",
                        f"rate(runbook_pgbouncer_queries_total{{{PL}}}[$__rate_interval])",
                        DB,
                        "ops",
                    ),
                    ts(
                        "Average wait for a server connection",
                        f"runbook_pgbouncer_avg_wait_seconds{{{PL}}}",
                        DB,
                        "s",
                    ).description(
                        "PgBouncer's own average over its stats period (SHOW STATS avg_wait_time)."
                    ),
                    ts(
                        "Time clients spent waiting, per second",
                        f"rate(runbook_pgbouncer_client_wait_seconds_total{{{PL}}}"
                        "[$__rate_interval])",
                        DB,
                        "s",
                    ).description(
                        "Seconds of client waiting per second of wall time: 2 means two clients "
                        "waiting all the time on average."
                    ),
                ],
            ),
            Row(
                "Supavisor (when Prometheus scrapes it, docs/supabase.md)",
                [
                    ts(
                        "Supavisor pool checkout p95",
                        SUPAVISOR_CHECKOUT_P95,
                        "{{tenant}} {{mode}}",
                        "s",
                    ).description(
                        "Supavisor's own histogram of the time a client waits to check a "
                        "connection out of the tenant's pool: its counterpart of PgBouncer's "
                        "wait. Empty without Supavisor."
                    ),
                    ts(
                        "Supavisor client connections",
                        SUPAVISOR_CLIENTS,
                        "{{tenant}} {{mode}}",
                    ).description(
                        "Clients connected to Supavisor per tenant. Empty without Supavisor."
                    ),
                ],
            ),
        ],
    )
