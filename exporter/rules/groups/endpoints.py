"""Alert rules: endpoints."""

from __future__ import annotations

from exporter.rules.model import Alert, Group, critical, warning

GROUP = Group(
    area="endpoints",
    name="runbook-exporter.endpoints",
    about="""
        HTTP endpoint alerts (exporter/probes/). Thresholds are the exporter's per-endpoint
        threshold series (probes/thresholds.py), so a per-endpoint override needs no rule edit.
        Defaults: runbooks 000, 001 and 004 (see docs/alerts.md). The `for:` of each alert is
        justified in docs/runbooks/<AlertName>.md.
    """,
    rules=(
        Alert(
            "EndpointDown",
            why="""
                downtime counted from the first failed probe: (failures in a row - 1) x interval. It
                comes from the probes themselves, so the per-endpoint threshold series works (a for:
                cannot vary per endpoint), survives a Prometheus restart, and covers an endpoint
                that never succeeded since the exporter started.
            """,
            expr="""
                (runbook_probe_consecutive_failures - 1)
                  * on(app, endpoint) group_left
                runbook_probe_interval_seconds
                  >= on(app, endpoint) group_left
                runbook_probe_downtime_threshold_seconds{severity="${severity}"}
                and on(app, endpoint)
                runbook_probe_success == 0
            """,
            summary="Endpoint {{ $labels.endpoint }} of {{ $labels.app }} down for {{ $value | humanizeDuration }}",
            description="""
                Every probe of {{ $labels.app }}/{{ $labels.endpoint }} has failed for
                {{ $value | humanizeDuration }}, reaching the ${severity} downtime of
                {{ with printf `runbook_probe_downtime_threshold_seconds{app=%q,endpoint=%q,severity="${severity}"}` $labels.app $labels.endpoint | query }}{{ . | first | value | humanizeDuration }}{{ end }}.
                Last failure:
                {{ with printf `runbook_probe_failure_reason{app=%q,endpoint=%q} == 1` $labels.app $labels.endpoint | query }}{{ . | first | label "reason" }}{{ else }}unknown{{ end }}
                ({{ with printf `runbook_probe_status_code{app=%q,endpoint=%q} > 0` $labels.app $labels.endpoint | query }}HTTP
                {{ . | first | value }}{{ else }}no HTTP response{{ end }}).
            """,
            variants=(
                warning("0m"),
                critical("0m"),
            ),
        ),
        Alert(
            "EndpointConsecutiveFailures",
            expr="""
                runbook_probe_consecutive_failures
                  >= on(app, endpoint) group_left
                runbook_probe_consecutive_failures_threshold
            """,
            summary="Endpoint {{ $labels.endpoint }} of {{ $labels.app }}: {{ $value | humanize }} failed probes in a row",
            description="""
                The last {{ $value | humanize }} probes of {{ $labels.app }}/{{ $labels.endpoint }}
                failed (alert at
                {{ with printf `runbook_probe_consecutive_failures_threshold{app=%q,endpoint=%q}` $labels.app $labels.endpoint | query }}{{ . | first | value | humanize }}{{ end }}).
                Last failure:
                {{ with printf `runbook_probe_failure_reason{app=%q,endpoint=%q} == 1` $labels.app $labels.endpoint | query }}{{ . | first | label "reason" }}{{ else }}unknown{{ end }}
                ({{ with printf `runbook_probe_status_code{app=%q,endpoint=%q} > 0` $labels.app $labels.endpoint | query }}HTTP
                {{ . | first | value }}{{ else }}no HTTP response{{ end }}).
            """,
            variants=(warning("0m"),),
        ),
        Alert(
            "EndpointLatencyHigh",
            expr="""
                runbook_probe_duration_seconds
                  > on(app, endpoint) group_left
                runbook_probe_latency_threshold_seconds{severity="${severity}"}
            """,
            summary="Endpoint {{ $labels.endpoint }} of {{ $labels.app }} answers in {{ $value | humanizeDuration }}",
            description="""
                Every probe of {{ $labels.app }}/{{ $labels.endpoint }} for ${for} took longer than
                the ${severity} latency of
                {{ with printf `runbook_probe_latency_threshold_seconds{app=%q,endpoint=%q,severity="${severity}"}` $labels.app $labels.endpoint | query }}{{ . | first | value | humanizeDuration }}{{ end }};
                the last took {{ $value | humanizeDuration }}.
            """,
            variants=(
                warning("5m"),
                critical("5m"),
            ),
        ),
        Alert(
            "EndpointLatencyP95High",
            why="""
                30 probes at the default 60 s interval: with fewer, the 95th percentile is the
                maximum
            """,
            expr="""
                histogram_quantile(0.95,
                  sum by (app, endpoint, le) (rate(runbook_probe_request_duration_seconds_bucket[30m]))
                )
                  > on(app, endpoint) group_left
                runbook_probe_latency_p95_threshold_seconds{severity="${severity}"}
            """,
            summary="Endpoint {{ $labels.endpoint }} of {{ $labels.app }}: P95 latency {{ $value | humanizeDuration }}",
            description="""
                The 95th percentile of the probe durations of
                {{ $labels.app }}/{{ $labels.endpoint }} over 30 minutes is
                {{ $value | humanizeDuration }}, above the ${severity} P95 of
                {{ with printf `runbook_probe_latency_p95_threshold_seconds{app=%q,endpoint=%q,severity="${severity}"}` $labels.app $labels.endpoint | query }}{{ . | first | value | humanizeDuration }}{{ end }}.
            """,
            variants=(
                warning("5m"),
                critical("5m"),
            ),
        ),
        Alert(
            "EndpointErrorRatioHigh",
            why="""
                share of failed probes over an hour, and at least two of them: at the default 60 s
                interval a single failed probe is already 1.7 % of the hour
            """,
            expr="""
                sum by (app, endpoint) (rate(runbook_probe_failures_total[1h]))
                  / on(app, endpoint)
                sum by (app, endpoint) (rate(runbook_probe_requests_total[1h]))
                  > on(app, endpoint) group_left
                runbook_probe_error_ratio_threshold{severity="${severity}"}
                and on(app, endpoint)
                sum by (app, endpoint) (increase(runbook_probe_failures_total[1h])) >= 2
            """,
            summary="Endpoint {{ $labels.endpoint }} of {{ $labels.app }}: {{ $value | humanizePercentage }} of probes failed",
            description="""
                {{ $value | humanizePercentage }} of the probes of
                {{ $labels.app }}/{{ $labels.endpoint }} failed over the last hour, above the
                ${severity} ratio of
                {{ with printf `runbook_probe_error_ratio_threshold{app=%q,endpoint=%q,severity="${severity}"}` $labels.app $labels.endpoint | query }}{{ . | first | value | humanizePercentage }}{{ end }}
                for ${for}.
            """,
            variants=(
                warning("10m"),
                critical("5m"),
            ),
        ),
        Alert(
            "EndpointHealthComponentDown",
            expr="runbook_health_component_up == 0",
            summary="{{ $labels.app }}: health check reports {{ $labels.component }} down",
            description="""
                The health JSON of {{ $labels.app }}/{{ $labels.endpoint }} has reported component
                {{ $labels.component }} as not up for ${for}.
            """,
            variants=(warning("3m"),),
        ),
        Alert(
            "EndpointTlsCertificateExpiring",
            expr="""
                runbook_probe_tls_cert_expiry_timestamp_seconds - time()
                  < on(app, endpoint) group_left
                runbook_probe_tls_expiry_threshold_seconds{severity="${severity}"}
            """,
            summary="TLS certificate of {{ $labels.app }}/{{ $labels.endpoint }} expires in {{ $value | humanizeDuration }}",
            description="""
                The certificate served by {{ $labels.app }}/{{ $labels.endpoint }} expires in
                {{ $value | humanizeDuration }}, less than the ${severity} notice of
                {{ with printf `runbook_probe_tls_expiry_threshold_seconds{app=%q,endpoint=%q,severity="${severity}"}` $labels.app $labels.endpoint | query }}{{ . | first | value | humanizeDuration }}{{ end }}.
                Renewal has not ${impact}
            """,
            variants=(
                warning("1h", impact="happened."),
                critical(
                    "15m", impact="happened; clients will refuse the endpoint when it expires."
                ),
            ),
        ),
    ),
)
