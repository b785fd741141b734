"""Alert rules: pgnet."""

from __future__ import annotations

from exporter.rules.model import Alert, Group, critical, warning

GROUP = Group(
    area="pgnet",
    name="runbook-exporter.pgnet",
    about="""
        pg_net alerts (collectors/pgnet.py): HTTP calls the database made with pg_net (webhooks,
        Edge Functions called from pg_cron jobs or triggers) that failed. pg_cron reports such a job
        as succeeded as soon as the request is queued; the outcome is only in net._http_response,
        which the exporter counts over its window (runbook_pgnet_recent_responses{outcome}). Failed
        = 4xx, 5xx, timed out, or an error below HTTP (DNS, connection, TLS). Every threshold is the
        exporter's own threshold series for the same target (collectors.pgnet.thresholds). The
        `for:` of each alert is justified in docs/runbooks/<AlertName>.md.
    """,
    rules=(
        Alert(
            "PgNetCallsFailing",
            why="""
                any failed call by default: pg_net calls are mostly few (an hourly cron webhook),
                and one 401 there is a broken integration that nothing else reports
            """,
            expr="""
                sum by(target) (runbook_pgnet_recent_responses{outcome=~"4xx|5xx|timed_out|error"})
                  > on(target) group_left
                runbook_pgnet_failures_threshold{severity="warning"}
            """,
            summary="pg_net calls failing on {{ $labels.target }}: {{ $value | humanize }} in the window",
            description="""
                {{ $value | humanize }} HTTP calls made with pg_net on target {{ $labels.target }}
                failed within the last
                {{ with printf `runbook_pgnet_window_seconds{target=%q}` $labels.target | query }}{{ . | first | value | humanizeDuration }}{{ end }}
                (4xx:
                {{ with printf `runbook_pgnet_recent_responses{target=%q,outcome="4xx"}` $labels.target | query }}{{ . | first | value | humanize }}{{ end }},
                5xx:
                {{ with printf `runbook_pgnet_recent_responses{target=%q,outcome="5xx"}` $labels.target | query }}{{ . | first | value | humanize }}{{ end }},
                timed out:
                {{ with printf `runbook_pgnet_recent_responses{target=%q,outcome="timed_out"}` $labels.target | query }}{{ . | first | value | humanize }}{{ end }},
                no response:
                {{ with printf `runbook_pgnet_recent_responses{target=%q,outcome="error"}` $labels.target | query }}{{ . | first | value | humanize }}{{ end }}),
                above the threshold of
                {{ with printf `runbook_pgnet_failures_threshold{target=%q,severity="warning"}` $labels.target | query }}{{ . | first | value | humanize }}{{ end }}.
                A pg_cron job that made such a call still shows as succeeded.
            """,
            variants=(warning("0m"),),
        ),
        Alert(
            "PgNetFailureRatioHigh",
            why="""
                failed / all responses in the window, once the window holds min_responses of them
                (fewer: PgNetCallsFailing speaks for them); 0/0 is NaN and never alerts
            """,
            expr="""
                (
                    sum by(target) (runbook_pgnet_recent_responses{outcome=~"4xx|5xx|timed_out|error"})
                  /
                    sum by(target) (runbook_pgnet_recent_responses)
                )
                  > on(target) group_left
                runbook_pgnet_failure_ratio_threshold{severity="${severity}"}
                and on(target)
                sum by(target) (runbook_pgnet_recent_responses)
                  >= on(target)
                runbook_pgnet_min_responses
            """,
            summary="pg_net on {{ $labels.target }}: {{ $value | humanizePercentage }} of calls failing",
            description="""
                {{ $value | humanizePercentage }} of the
                {{ with printf `sum(runbook_pgnet_recent_responses{target=%q})` $labels.target | query }}{{ . | first | value | humanize }}{{ end }}
                HTTP calls pg_net made on target {{ $labels.target }} in its window failed (4xx,
                5xx, timed out or no response), above the ${severity} ratio of
                {{ with printf `runbook_pgnet_failure_ratio_threshold{target=%q,severity="${severity}"}` $labels.target | query }}{{ . | first | value | humanizePercentage }}{{ end }}
                for ${for}${impact}
            """,
            variants=(
                warning("10m", impact="."),
                critical(
                    "5m", impact=": the endpoint the database calls is broken or unreachable."
                ),
            ),
        ),
        Alert(
            "PgNetWorkerStalled",
            why="""
                requests wait in the queue and not one response was written within the window: the
                pg_net background worker is not sending (not running, crashed, or stuck on the
                network)
            """,
            expr="""
                runbook_pgnet_request_queue_depth > 0
                and on(target)
                sum by(target) (runbook_pgnet_recent_responses) == 0
            """,
            summary="pg_net on {{ $labels.target }}: {{ $value | humanize }} requests waiting, none sent",
            description="""
                {{ $value | humanize }} requests wait in net.http_request_queue on target
                {{ $labels.target }} and pg_net wrote no response within the last
                {{ with printf `runbook_pgnet_window_seconds{target=%q}` $labels.target | query }}{{ . | first | value | humanizeDuration }}{{ end }}
                for ${for}: its background worker is not sending. Webhooks and Edge Function calls
                made from SQL (and pg_cron jobs that make them) are not happening.
            """,
            variants=(warning("10m"),),
        ),
    ),
)
