"""Alert rules: pgbouncer."""

from __future__ import annotations

from exporter.rules.model import Alert, Group, critical, warning

GROUP = Group(
    area="pgbouncer",
    name="runbook-exporter.pgbouncer",
    about="""
        PgBouncer alerts (exporter/poolers/pgbouncer.py, the `poolers:` section): clients queued for
        a server connection, pools whose server connections are all busy, and an admin console the
        exporter cannot read. When a pooler's queue fills, users wait while the database looks idle:
        these are the alerts that see it. Every threshold is the exporter's own threshold series for
        the same pooler (poolers[].thresholds). The `for:` of each alert is justified in
        docs/runbooks/<AlertName>.md.
    """,
    rules=(
        Alert(
            "PgBouncerClientsWaiting",
            why="""
                the oldest waiting client of a pool has waited longer than the threshold: maxwait
                drops to 0 as soon as the queue empties, so a value held for 1m is a queue that
                stays
            """,
            expr="""
                runbook_pgbouncer_pool_max_wait_seconds
                  > on(pooler) group_left
                runbook_pgbouncer_max_wait_threshold_seconds{severity="${severity}"}
            """,
            summary="PgBouncer {{ $labels.pooler }}: clients of {{ $labels.database }}/{{ $labels.user }} waiting {{ $value | humanizeDuration }}",
            description="""
                The oldest client waiting for a server connection in pool
                {{ $labels.database }}/{{ $labels.user }} of PgBouncer {{ $labels.pooler }} has
                waited {{ $value | humanizeDuration }}
                ({{ with printf `runbook_pgbouncer_pool_clients{pooler=%q,database=%q,user=%q,state="waiting"}` $labels.pooler $labels.database $labels.user | query }}{{ . | first | value | humanize }}{{ end }}
                clients waiting), above the ${severity} threshold of
                {{ with printf `runbook_pgbouncer_max_wait_threshold_seconds{pooler=%q,severity="${severity}"}` $labels.pooler | query }}{{ . | first | value | humanizeDuration }}{{ end }}
                for ${for}${impact}
            """,
            variants=(
                warning(
                    "1m",
                    impact=". Requests are slow before their first query runs; the database itself may look idle.",
                ),
                critical(
                    "1m",
                    impact=": users wait longer for a connection than the whole response budget.",
                ),
            ),
        ),
        Alert(
            "PgBouncerPoolSaturated",
            why="server connections linked to clients / pool_size",
            expr="""
                runbook_pgbouncer_pool_saturation_ratio
                  > on(pooler) group_left
                runbook_pgbouncer_saturation_threshold_ratio{severity="${severity}"}
            """,
            summary="PgBouncer {{ $labels.pooler }}: pool {{ $labels.database }}/{{ $labels.user }} {{ $value | humanizePercentage }} busy",
            description="""
                {{ $value | humanizePercentage }} of the
                {{ with printf `runbook_pgbouncer_pool_size{pooler=%q,database=%q,user=%q}` $labels.pooler $labels.database $labels.user | query }}{{ . | first | value | humanize }}{{ end }}
                server connections of pool {{ $labels.database }}/{{ $labels.user }} on PgBouncer
                {{ $labels.pooler }} are in use, above the ${severity} ratio of
                {{ with printf `runbook_pgbouncer_saturation_threshold_ratio{pooler=%q,severity="${severity}"}` $labels.pooler | query }}{{ . | first | value | humanizePercentage }}{{ end }}
                for ${for}: ${impact}
            """,
            variants=(
                warning("10m", impact="the next burst of clients will queue."),
                critical("5m", impact="every new client queues for a server connection."),
            ),
        ),
        Alert(
            "PgBouncerDown",
            why="""
                the exporter cannot read the admin console: PgBouncer is down or unreachable, or the
                console refuses the exporter (the reason series says which)
            """,
            expr="runbook_pgbouncer_up == 0",
            summary="PgBouncer {{ $labels.pooler }} unreachable",
            description="""
                The exporter has not been able to read the admin console of PgBouncer
                {{ $labels.pooler }} for ${for} (reason:
                {{ with printf `runbook_pgbouncer_failure_reason{pooler=%q} == 1` $labels.pooler | query }}{{ . | first | label "reason" }}{{ end }}).
                If PgBouncer itself is down, every application connecting through it is down; if the
                reason is auth or password, only the exporter is locked out.
            """,
            variants=(critical("2m"),),
        ),
    ),
)
