"""Alert rules: queues."""

from __future__ import annotations

from exporter.rules.model import Alert, Group, critical, warning

GROUP = Group(
    area="queues",
    name="runbook-exporter.queues",
    about="""
        Job-queue alerts (collectors/queues.py). Every threshold is the exporter's own threshold
        series for the same target and queue (collectors/thresholds.py), so a per-queue override in
        the exporter config changes the alert without a rule edit. Defaults: runbooks 000 and 003.
        The `for:` of each alert is justified in docs/runbooks/<AlertName>.md.
    """,
    rules=(
        Alert(
            "QueueBacklogHigh",
            expr="""
                runbook_queue_jobs{status="pending"}
                  > on(target, queue) group_left
                runbook_queue_depth_threshold{severity="${severity}"}
            """,
            summary="Queue {{ $labels.queue }} on {{ $labels.target }}: {{ $value | humanize }} jobs pending",
            description="""
                {{ $value | humanize }} jobs wait in queue {{ $labels.queue }} of target
                {{ $labels.target }}, above its ${severity} depth of
                {{ with printf `runbook_queue_depth_threshold{target=%q,queue=%q,severity="${severity}"}` $labels.target $labels.queue | query }}{{ . | first | value | humanize }}{{ end }}
                for ${for}: ${impact}
            """,
            variants=(
                warning("10m", impact="the workers are not keeping up."),
                critical("5m", impact="users are waiting for their jobs."),
            ),
        ),
        Alert(
            "QueueJobsStuck",
            expr="""
                runbook_queue_stuck_jobs
                  > on(target, queue) group_left
                runbook_queue_stuck_threshold{severity="warning"}
            """,
            summary="Queue {{ $labels.queue }} on {{ $labels.target }} has jobs stuck in processing: {{ $value | humanize }}",
            description="""
                Jobs of queue {{ $labels.queue }} (target {{ $labels.target }}) in processing and
                not updated for more than
                {{ with printf `runbook_queue_stuck_after_seconds{target=%q,queue=%q}` $labels.target $labels.queue | query }}{{ . | first | value | humanizeDuration }}{{ end }}:
                {{ $value | humanize }}. Their worker most likely died holding them.
            """,
            variants=(warning("5m"),),
        ),
        Alert(
            "QueueRetriesExhausted",
            expr="""
                runbook_queue_retries_exhausted_jobs
                  > on(target, queue) group_left
                runbook_queue_retries_exhausted_threshold{severity="warning"}
            """,
            summary="Queue {{ $labels.queue }} on {{ $labels.target }} has failed jobs out of retries: {{ $value | humanize }}",
            description="""
                Failed jobs of queue {{ $labels.queue }} (target {{ $labels.target }}) that used all
                their
                retries{{ with printf `runbook_queue_max_retries{target=%q,queue=%q}` $labels.target $labels.queue | query }}
                ({{ . | first | value | humanize }}){{ end }}: {{ $value | humanize }}. Nothing
                retries them automatically; a person has to decide.
            """,
            variants=(warning("5m"),),
        ),
        Alert(
            "QueueDeadLetterGrowing",
            why="""
                above the threshold AND more than at some point of the last hour: a dead-letter
                queue that only waits for its daily clean-up does not alert, one that keeps growing
                does
            """,
            expr="""
                runbook_queue_dead_letter_jobs
                  > on(target, queue) group_left
                runbook_queue_dead_letter_threshold{severity="warning"}
                and
                runbook_queue_dead_letter_jobs > min_over_time(runbook_queue_dead_letter_jobs[1h])
            """,
            summary="Queue {{ $labels.queue }} on {{ $labels.target }}: dead-letter queue growing, now {{ $value | humanize }}",
            description="""
                Jobs in the dead-letter queue of {{ $labels.queue }} (target {{ $labels.target }}):
                {{ $value | humanize }}, above its threshold of
                {{ with printf `runbook_queue_dead_letter_threshold{target=%q,queue=%q,severity="warning"}` $labels.target $labels.queue | query }}{{ . | first | value | humanize }}{{ end }},
                and has grown within the last hour.
            """,
            variants=(warning("15m"),),
        ),
        Alert(
            "QueueOldestPendingTooOld",
            expr="""
                runbook_queue_oldest_pending_age_seconds
                  > on(target, queue) group_left
                runbook_queue_oldest_pending_threshold_seconds{severity="${severity}"}
            """,
            summary="Queue {{ $labels.queue }} on {{ $labels.target }}: oldest pending job waits for {{ $value | humanizeDuration }}",
            description="""
                The oldest pending job of queue {{ $labels.queue }} (target {{ $labels.target }})
                was created {{ $value | humanizeDuration }} ago, longer than the ${severity} limit
                of
                {{ with printf `runbook_queue_oldest_pending_threshold_seconds{target=%q,queue=%q,severity="${severity}"}` $labels.target $labels.queue | query }}{{ . | first | value | humanizeDuration }}{{ end }}.
            """,
            variants=(
                warning("5m"),
                critical("5m"),
            ),
        ),
        Alert(
            "QueueWorkerStalled",
            why="""
                jobs wait and not one finished (completed or failed) within the queue's
                recent_window
            """,
            expr="""
                runbook_queue_jobs{status="pending"} > 0
                and on(target, queue)
                sum without(outcome) (runbook_queue_recent_jobs) == 0
            """,
            summary="Queue {{ $labels.queue }} on {{ $labels.target }}: jobs wait and none finishes, {{ $value | humanize }} pending",
            description="""
                Pending jobs in queue {{ $labels.queue }} (target {{ $labels.target }}):
                {{ $value | humanize }}; no job has completed or failed in any
                {{ with printf `runbook_queue_recent_window_seconds{target=%q,queue=%q}` $labels.target $labels.queue | query }}{{ . | first | value | humanizeDuration }}{{ end }}
                window for ${for}: ${impact}
            """,
            variants=(
                warning("10m", impact="the worker looks stalled."),
                critical("30m", impact="the queue has stopped."),
            ),
        ),
        Alert(
            "QueueFailureRatioHigh",
            why="""
                share of the jobs finished within recent_window that failed; 0/0 (nothing finished)
                is NaN and never alerts: QueueWorkerStalled covers that case
            """,
            expr="""
                (
                    runbook_queue_recent_jobs{outcome="failed"}
                  / ignoring(outcome)
                    sum without(outcome) (runbook_queue_recent_jobs)
                )
                  > on(target, queue) group_left
                runbook_queue_failure_ratio_threshold{severity="${severity}"}
            """,
            summary="Queue {{ $labels.queue }} on {{ $labels.target }}: {{ $value | humanizePercentage }} of finished jobs failed",
            description="""
                {{ $value | humanizePercentage }} of the jobs of queue {{ $labels.queue }} (target
                {{ $labels.target }}) that finished recently failed, above the ${severity} ratio of
                {{ with printf `runbook_queue_failure_ratio_threshold{target=%q,queue=%q,severity="${severity}"}` $labels.target $labels.queue | query }}{{ . | first | value | humanizePercentage }}{{ end }}
                for ${for}.
            """,
            variants=(
                warning("10m"),
                critical("10m"),
            ),
        ),
    ),
)
