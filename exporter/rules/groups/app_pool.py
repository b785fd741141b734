"""Alert rules: app-pool."""

from __future__ import annotations

from exporter.rules.model import Alert, Group, critical, warning

GROUP = Group(
    area="app-pool",
    name="runbook-exporter.app-pool",
    about="""
        The app's own database connection pool, read from its health JSON by the prober
        (probes/pool.py). The `for:` of each alert is justified in docs/runbooks/<AlertName>.md.
    """,
    rules=(
        Alert(
            "AppPoolExhausted",
            why="""
                runbook 001: checked_out >= pool_size + max_overflow. A pool without overflow
                (node-postgres) exports no max_overflow: it counts as 0.
            """,
            expr="""
                runbook_app_pool_in_use
                  >= on(app, endpoint) group_left()
                (
                    runbook_app_pool_size + on(app, endpoint) group_left runbook_app_pool_max_overflow
                  or
                    runbook_app_pool_size
                )
            """,
            summary="{{ $labels.app }}: connection pool exhausted, {{ $value | humanize }} connections in use",
            description="""
                The database pool of {{ $labels.app }} (reported by {{ $labels.endpoint }}) has had
                every connection checked out for ${for}: {{ $value | humanize }} in use of
                {{ with printf `runbook_app_pool_size{app=%q,endpoint=%q}` $labels.app $labels.endpoint | query }}{{ . | first | value | humanize }}{{ end }}
                plus
                {{ with printf `runbook_app_pool_max_overflow{app=%q,endpoint=%q}` $labels.app $labels.endpoint | query }}{{ . | first | value | humanize }}{{ else }}0{{ end }}
                overflow. Requests wait for a connection or fail.
            """,
            variants=(critical("3m"),),
        ),
        Alert(
            "AppPoolClientsWaiting",
            expr="runbook_app_pool_waiting > 0",
            summary="{{ $labels.app }}: requests waiting for a pool connection: {{ $value | humanize }}",
            description="""
                Requests of {{ $labels.app }} (reported by {{ $labels.endpoint }}) waiting for a
                database connection from the app's pool: {{ $value | humanize }}; some have waited
                at every probe for ${for}. In use:
                {{ with printf `runbook_app_pool_in_use{app=%q,endpoint=%q}` $labels.app $labels.endpoint | query }}{{ . | first | value | humanize }}{{ end }},
                pool size:
                {{ with printf `runbook_app_pool_size{app=%q,endpoint=%q}` $labels.app $labels.endpoint | query }}{{ . | first | value | humanize }}{{ end }}.
            """,
            variants=(warning("5m"),),
        ),
    ),
)
