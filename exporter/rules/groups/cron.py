"""Alert rules: cron."""

from __future__ import annotations

from exporter.rules.model import Alert, Group, critical, warning

GROUP = Group(
    area="cron",
    name="runbook-exporter.cron",
    about="""
        pg_cron alerts (collectors/cron.py). Every threshold is the exporter's own series for the
        same target and job (runbook_cron_job_*_threshold*{target,jobname}): an override under
        `collectors.cron.jobs.<jobname>` in the exporter config changes one job's alert without a
        rule edit. Inactive jobs (cron.job.active false) never alert: each job rule keeps only jobs
        with runbook_cron_job_active == 1. Defaults: runbooks 001 (retention cleanup fails) and 004
        (3 consecutive failures). The `for:` of each alert is justified in its runbook doc.
    """,
    rules=(
        Alert(
            "CronJobFailing",
            expr="""
                (
                  runbook_cron_job_consecutive_failures
                    >= on(target, jobname) group_left
                  runbook_cron_job_consecutive_failures_threshold{severity="${severity}"}
                )
                and on(target, jobname) runbook_cron_job_active == 1
            """,
            summary="Cron job {{ $labels.jobname }} on {{ $labels.target }}: {{ $value | humanize }} failed run(s) in a row",
            description="""
                The newest {{ $value | humanize }} finished ${runs} of pg_cron job
                {{ $labels.jobname }} (target {{ $labels.target }}) ${failed}
                {{ with printf `runbook_cron_job_consecutive_failures_threshold{target=%q,jobname=%q,severity="${severity}"}` $labels.target $labels.jobname | query }}{{ . | first | value | humanize }}{{ end }}${impact}
                The error is in cron.job_run_details.return_message.
            """,
            variants=(
                warning(
                    "0m",
                    runs="run(s)",
                    failed="failed; it warns from",
                    impact=' and pages from {{ with printf `runbook_cron_job_consecutive_failures_threshold{target=%q,jobname=%q,severity="critical"}` $labels.target $labels.jobname | query }}{{ . | first | value | humanize }}{{ end }}.',
                ),
                critical(
                    "0m",
                    runs="runs",
                    failed="failed, at or above its ${severity} count of",
                    impact=": the job is broken, not flaky.",
                ),
            ),
        ),
        Alert(
            "CronJobOverdue",
            expr="""
                (
                  runbook_cron_job_overdue_seconds
                    > on(target, jobname) group_left
                  runbook_cron_job_overdue_threshold_seconds{severity="warning"}
                )
                and on(target, jobname) runbook_cron_job_active == 1
            """,
            summary="Cron job {{ $labels.jobname }} on {{ $labels.target }} is overdue by {{ $value | humanizeDuration }}",
            description="""
                pg_cron job {{ $labels.jobname }} (target {{ $labels.target }}) was due
                {{ $value | humanizeDuration }} ago by its schedule
                {{ with printf `runbook_cron_job_info{target=%q,jobname=%q}` $labels.target $labels.jobname | query }}"{{ . | first | label "schedule" }}"{{ end }}
                and no run has started since (grace
                {{ with printf `runbook_cron_job_overdue_threshold_seconds{target=%q,jobname=%q,severity="warning"}` $labels.target $labels.jobname | query }}{{ . | first | value | humanizeDuration }}{{ end }}):
                the pg_cron scheduler is not running jobs.
            """,
            variants=(warning("0m"),),
        ),
        Alert(
            "CronJobRunTooLong",
            expr="""
                (
                  runbook_cron_job_running_seconds
                    > on(target, jobname) group_left
                  runbook_cron_job_run_duration_threshold_seconds{severity="warning"}
                )
                and on(target, jobname) runbook_cron_job_active == 1
            """,
            summary="Cron job {{ $labels.jobname }} on {{ $labels.target }} has been running for {{ $value | humanizeDuration }}",
            description="""
                The current run of pg_cron job {{ $labels.jobname }} (target {{ $labels.target }})
                has lasted {{ $value | humanizeDuration }}, longer than
                {{ with printf `runbook_cron_job_run_duration_threshold_seconds{target=%q,jobname=%q,severity="warning"}` $labels.target $labels.jobname | query }}{{ . | first | value | humanizeDuration }}{{ end }}.
                pg_cron skips the job's next runs while this one lasts.
            """,
            variants=(warning("0m"),),
        ),
        Alert(
            "CronHistoryTooLarge",
            expr="""
                runbook_cron_history_rows_estimated
                  > on(target) group_left
                runbook_cron_history_rows_threshold{severity="warning"}
            """,
            summary="cron.job_run_details on {{ $labels.target }} holds about {{ $value | humanize }} rows",
            description="""
                pg_cron's run history on target {{ $labels.target }} holds about
                {{ $value | humanize }} rows (planner estimate), above
                {{ with printf `runbook_cron_history_rows_threshold{target=%q,severity="warning"}` $labels.target | query }}{{ . | first | value | humanize }}{{ end }}.
                pg_cron never deletes it: the purge job (runbook 001 retention) is missing or
                failing.
            """,
            variants=(warning("30m"),),
        ),
    ),
)
