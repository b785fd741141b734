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
        Alert(
            "RunbookExporterShardMissing",
            why="""
                the replicas scraped serve fewer distinct --shard indexes than the N they were
                given: a replica never scraped (StatefulSet below N, pod Pending) has no up series
                for RunbookExporterDown. An unsharded process serves index 0 of 1, so it never
                fires; with no replica at all there is no series and RunbookExporterDown fires
            """,
            expr="""
                count by (job) (
                  count_values by (job) ("shard", runbook_exporter_shard{${job}})
                )
                  < max by (job) (runbook_exporter_shards{${job}})
            """,
            summary='runbook-exporter job {{ $labels.job }} serves {{ $value | printf "%.0f" }} of its {{ with printf `max(runbook_exporter_shards{job=%q})` $labels.job | query }}{{ . | first | value | printf "%.0f" }}{{ end }} shards',
            description="""
                The replicas of job {{ $labels.job }} scraped for ${for} serve only
                {{ $value | printf "%.0f" }} distinct shard indexes
                ({{ range $i, $s := printf `sort(runbook_exporter_shard{job=%q})` $labels.job | query }}{{ if $i }}, {{ end }}{{ $s.Value | printf "%.0f" }}{{ end }})
                of the
                {{ with printf `max(runbook_exporter_shards{job=%q})` $labels.job | query }}{{ . | first | value | printf "%.0f" }}{{ end }}
                their configuration is split into: the targets, endpoints, backups and poolers
                of the missing shards are not collected, and no alert on them can fire.
            """,
            variants=(warning("10m"),),
        ),
        Alert(
            "RunbookExporterShardDuplicated",
            why="""
                two sharded replicas (N > 1) claim the same index, or the replicas of a job
                disagree on N (a replica left without --shard serves 0 of 1 and collects
                everything): items are collected twice, and with different N some by no one.
                Unsharded processes sharing a job (0 of 1 each) never fire it
            """,
            expr="""
                count_values by (job) ("shard",
                  runbook_exporter_shard{${job}}
                  and on(job, instance)
                  (runbook_exporter_shards{${job}} > 1)
                ) > 1
                or
                count by (job) (
                  count_values by (job) ("shards", runbook_exporter_shards{${job}})
                ) > 1
            """,
            summary='{{ if $labels.shard }}{{ $value | printf "%.0f" }} runbook-exporter replicas of job {{ $labels.job }} claim shard {{ $labels.shard }}{{ else }}The runbook-exporter replicas of job {{ $labels.job }} disagree on the number of shards{{ end }}',
            description="""
                {{ if $labels.shard }}{{ $value | printf "%.0f" }} replicas of job {{ $labels.job }} have served
                shard index {{ $labels.shard }} for ${for}: each collects the same targets,
                endpoints, backups and poolers, so their series come twice (differing by
                instance) and the rules' threshold joins fail on them.{{ else }}The replicas of
                job {{ $labels.job }} have been split into different numbers of shards for
                ${for} (the N of each replica:
                {{ range $i, $s := printf `sort(runbook_exporter_shards{job=%q})` $labels.job | query }}{{ if $i }}, {{ end }}{{ $s.Value | printf "%.0f" }}{{ end }}):
                they slice the configuration differently, so some items are collected twice and
                others by no replica.{{ end }} Give every replica of the job the same N and its
                own index.
            """,
            variants=(warning("10m"),),
        ),
    ),
)
