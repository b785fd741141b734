"""Alert rules: exporter."""

from __future__ import annotations

from exporter.rules.model import Alert, Group, critical, warning

GROUP = Group(
    area="exporter",
    name="runbook-exporter.exporter",
    about="""
        The exporter itself. Its scrape job is selected by ${job}; render with `runbook-exporter
        rules --job NAME` when yours is called otherwise (docs/alerts.md). The `for:` of each alert
        is justified in docs/runbooks/<AlertName>.md.
    """,
    rules=(
        Alert(
            "RunbookExporterDown",
            why="""
                up == 0: scrapes fail; absent: no target at all (service discovery lost the
                exporter, or the job was renamed)
            """,
            expr="""
                up{${job}} == 0
                or
                absent(up{${job}})
            """,
            summary="{{ if $labels.instance }}runbook-exporter {{ $labels.instance }} cannot be scraped{{ else }}No runbook-exporter is scraped{{ end }}",
            description="""
                {{ if $labels.instance }}Prometheus has failed to scrape {{ $labels.instance }} (job
                {{ $labels.job }}) for ${for}.{{ else }}Prometheus has had no scrape target
                ${job_match} for ${for}: the exporter left service discovery or its job was
                renamed.{{ end }} Every queue, database and endpoint alert that relies on it is
                blind until it is back.
            """,
            variants=(critical("5m"),),
        ),
        Alert(
            "RunbookTargetDown",
            expr="runbook_target_up == 0",
            summary="Database {{ $labels.target }} is unreachable from the exporter",
            description="""
                runbook-exporter has had no working connection to database target
                {{ $labels.target }} for ${for}: PostgreSQL is down or unreachable, or it refuses
                the exporter's login. The other alerts of this target are inhibited meanwhile.
            """,
            variants=(critical("2m"),),
        ),
        Alert(
            "RunbookCollectorFailing",
            expr="runbook_collector_success == 0",
            summary="Collector {{ $labels.collector }} of {{ $labels.target }} is failing",
            description="""
                Every run of the {{ $labels.collector }} collector on target {{ $labels.target }}
                has failed for ${for}; its series are dropped, so the alerts built on them cannot
                fire. Failed runs in the last 15 minutes:
                {{ with printf `increase(runbook_collector_errors_total{target=%q,collector=%q}[15m])` $labels.target $labels.collector | query }}{{ . | first | value | printf "%.0f" }}{{ end }}.
            """,
            variants=(warning("5m"),),
        ),
        Alert(
            "RunbookCollectorStale",
            why="""
                the last run succeeded, but long ago: the collection loop is stuck (a failing
                collector is RunbookCollectorFailing)
            """,
            expr="""
                time() - runbook_collector_last_success_timestamp_seconds
                  > 3 * runbook_collector_interval_seconds
                and
                runbook_collector_success == 1
            """,
            summary="Collector {{ $labels.collector }} of {{ $labels.target }} last ran {{ $value | humanizeDuration }} ago",
            description="""
                The {{ $labels.collector }} collector on target {{ $labels.target }} last completed
                a run {{ $value | humanizeDuration }} ago, more than 3 times its interval of
                {{ with printf `runbook_collector_interval_seconds{target=%q,collector=%q}` $labels.target $labels.collector | query }}{{ . | first | value | humanizeDuration }}{{ end }}:
                the exporter serves old values.
            """,
            variants=(warning("5m"),),
        ),
        Alert(
            "RunbookExporterScrapeSlow",
            why="""
                scrape_timeout_seconds exists with Prometheus'
                --enable-feature=extra-scrape-metrics; without it, compare with the default scrape
                timeout of 10 s
            """,
            expr="""
                scrape_duration_seconds{${job}}
                  > 0.8 * scrape_timeout_seconds{${job}}
                or
                (
                  scrape_duration_seconds{${job}} > 8
                  unless on(job, instance)
                  scrape_timeout_seconds{${job}}
                )
            """,
            summary="Scrapes of runbook-exporter {{ $labels.instance }} take {{ $value | humanizeDuration }}",
            description="""
                Scrapes of {{ $labels.instance }} (job {{ $labels.job }}) have taken more than 80%
                of the scrape timeout of
                {{ with printf `scrape_timeout_seconds{job=%q,instance=%q}` $labels.job $labels.instance | query }}{{ . | first | value | humanizeDuration }}{{ else }}10s
                (assumed: Prometheus' default; run it with --enable-feature=extra-scrape-metrics to
                use the configured one){{ end }} for ${for}, the last
                {{ $value | humanizeDuration }}; past the timeout the scrape fails.
            """,
            variants=(warning("10m"),),
        ),
        Alert(
            "RunbookExporterConfigReloadFailed",
            why="the value is the age of the configuration that still runs (its last good load)",
            expr="""
                time() - runbook_config_last_reload_success_timestamp_seconds
                and on(job, instance)
                runbook_config_last_reload_successful == 0
            """,
            summary="runbook-exporter {{ $labels.instance }} cannot reload its configuration",
            description="""
                The last configuration reload of {{ $labels.instance }} (job {{ $labels.job }})
                failed ${for} ago or more: it still runs the configuration it loaded
                {{ $value | humanizeDuration }} ago, so the changes in the file (targets, endpoints,
                thresholds) are not in effect, and a restart would stop on the same error. The
                exporter's log line "configuration reload failed" names the file, line and key.
            """,
            variants=(warning("10m"),),
        ),
    ),
)
