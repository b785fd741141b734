"""Alert rules: app-reported."""

from __future__ import annotations

from exporter.rules.model import Alert, Group, critical, warning

GROUP = Group(
    area="app-reported",
    name="runbook-exporter.app-reported",
    about="""
        What the app reports about itself: values of its metrics JSON configured with a `meaning`
        (error_ratio, latency_p95, latency_average, memory_ratio; probes/appmetrics.py), served in
        base units and compared with the endpoint's threshold series (probes/thresholds.py), so a
        per-app or per-endpoint override needs no rule edit. Defaults: runbooks 001 and 004 (see
        docs/alerts.md). The `for:` of each alert is justified in docs/runbooks/<AlertName>.md.
    """,
    rules=(
        Alert(
            "AppErrorRatioHigh",
            expr="""
                runbook_app_error_ratio
                  > on(app, endpoint) group_left
                runbook_app_error_ratio_threshold{severity="${severity}"}
            """,
            summary="{{ $labels.app }}: the app reports {{ $value | humanizePercentage }} of requests failing",
            description="""
                {{ $labels.app }} (reported by {{ $labels.endpoint }}) says
                {{ $value | humanizePercentage }} of its requests fail, above the ${severity} error
                ratio of
                {{ with printf `runbook_app_error_ratio_threshold{app=%q,endpoint=%q,severity="${severity}"}` $labels.app $labels.endpoint | query }}{{ . | first | value | humanizePercentage }}{{ end }}
                for ${for}.
            """,
            variants=(
                warning("10m"),
                critical("5m"),
            ),
        ),
        Alert(
            "AppLatencyP95High",
            expr="""
                runbook_app_latency_p95_seconds
                  > on(app, endpoint) group_left
                runbook_app_latency_p95_threshold_seconds{severity="${severity}"}
            """,
            summary="{{ $labels.app }}: the app reports a P95 response time of {{ $value | humanizeDuration }}",
            description="""
                The 95th percentile response time {{ $labels.app }} measures itself (reported by
                {{ $labels.endpoint }}) is {{ $value | humanizeDuration }}, above the ${severity}
                P95 of
                {{ with printf `runbook_app_latency_p95_threshold_seconds{app=%q,endpoint=%q,severity="${severity}"}` $labels.app $labels.endpoint | query }}{{ . | first | value | humanizeDuration }}{{ end }}
                for ${for}.
            """,
            variants=(
                warning("10m"),
                critical("5m"),
            ),
        ),
        Alert(
            "AppResponseTimeHigh",
            expr="""
                runbook_app_latency_average_seconds
                  > on(app, endpoint) group_left
                runbook_app_latency_average_threshold_seconds{severity="${severity}"}
            """,
            summary="{{ $labels.app }}: the app reports an average response time of {{ $value | humanizeDuration }}",
            description="""
                The average response time {{ $labels.app }} measures itself (reported by
                {{ $labels.endpoint }}) is {{ $value | humanizeDuration }}, above the ${severity}
                average of
                {{ with printf `runbook_app_latency_average_threshold_seconds{app=%q,endpoint=%q,severity="${severity}"}` $labels.app $labels.endpoint | query }}{{ . | first | value | humanizeDuration }}{{ end }}
                for ${for}.
            """,
            variants=(
                warning("10m"),
                critical("5m"),
            ),
        ),
        Alert(
            "AppMemoryHigh",
            expr="""
                runbook_app_memory_ratio
                  > on(app, endpoint) group_left
                runbook_app_memory_ratio_threshold{severity="${severity}"}
            """,
            summary="{{ $labels.app }}: the app reports {{ $value | humanizePercentage }} of its memory in use",
            description="""
                {{ $labels.app }} (reported by {{ $labels.endpoint }}) uses
                {{ $value | humanizePercentage }} of its memory, above the ${severity} share of
                {{ with printf `runbook_app_memory_ratio_threshold{app=%q,endpoint=%q,severity="${severity}"}` $labels.app $labels.endpoint | query }}{{ . | first | value | humanizePercentage }}{{ end }}
                for ${for}.
            """,
            variants=(
                warning("15m"),
                critical("5m"),
            ),
        ),
    ),
)
