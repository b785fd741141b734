"""Configured thresholds as series, so shipped alert rules stay static and dashboards draw
the same lines: a rule compares `runbook_queue_jobs` with `runbook_queue_depth_threshold`
of the same target and queue, and a per-queue override needs no rule edit.

These families come from the configuration alone; they are built once and served always.
"""

from __future__ import annotations

from prometheus_client.core import Metric

from exporter.config import Config
from exporter.metrics import Fields, ThresholdSeries, spec

SRC = "collectors/thresholds.py"
Q = ("target", "queue", "severity")
T = ("target", "severity")

QUEUE_DEPTH = spec(
    "runbook_queue_depth_threshold", "gauge", "Pending jobs above which the queue alerts.", Q, SRC
)
QUEUE_STUCK = spec(
    "runbook_queue_stuck_threshold", "gauge", "Stuck jobs above which the queue alerts.", Q, SRC
)
QUEUE_EXHAUSTED = spec(
    "runbook_queue_retries_exhausted_threshold",
    "gauge",
    "Jobs with retries exhausted above which the queue alerts.",
    Q,
    SRC,
)
QUEUE_DLQ = spec(
    "runbook_queue_dead_letter_threshold",
    "gauge",
    "Dead-letter jobs above which the queue alerts.",
    Q,
    SRC,
)
QUEUE_OLDEST = spec(
    "runbook_queue_oldest_pending_threshold_seconds",
    "gauge",
    "Age of the oldest pending job above which the queue alerts.",
    Q,
    SRC,
)
QUEUE_FAILURE = spec(
    "runbook_queue_failure_ratio_threshold",
    "gauge",
    "Share of recently finished jobs that failed above which the queue alerts.",
    Q,
    SRC,
)
QUEUE_STUCK_AFTER = spec(
    "runbook_queue_stuck_after_seconds",
    "gauge",
    "A processing job not updated for this long counts as stuck.",
    ("target", "queue"),
    SRC,
)
QUEUE_MAX_RETRIES = spec(
    "runbook_queue_max_retries",
    "gauge",
    "Retry count at which a failed job needs a person.",
    ("target", "queue"),
    SRC,
)
QUEUE_WINDOW = spec(
    "runbook_queue_recent_window_seconds",
    "gauge",
    "Window of runbook_queue_recent_jobs.",
    ("target", "queue"),
    SRC,
)
PG_CONNECTIONS = spec(
    "runbook_pg_connections_threshold_ratio",
    "gauge",
    "Share of usable connections (max minus reserved) above which to alert.",
    T,
    SRC,
)
PG_LONG_QUERY = spec(
    "runbook_pg_long_query_threshold_seconds",
    "gauge",
    "Query run time above which a query counts as long-running.",
    T,
    SRC,
)
PG_IDLE_TX = spec(
    "runbook_pg_idle_in_transaction_threshold_seconds",
    "gauge",
    "Idle-in-transaction age above which to alert.",
    T,
    SRC,
)
PG_LOCK_WAIT = spec(
    "runbook_pg_lock_wait_threshold_seconds",
    "gauge",
    "Lock wait above which to alert.",
    T,
    SRC,
)
PG_DEAD_TUPLES = spec(
    "runbook_pg_dead_tuple_ratio_threshold",
    "gauge",
    "Dead-tuple ratio of a table above which to alert.",
    T,
    SRC,
)
PG_DEAD_MIN_ROWS = spec(
    "runbook_pg_dead_tuple_min_rows",
    "gauge",
    "Tables with fewer live plus dead rows are not alerted on.",
    ("target",),
    SRC,
)
PG_SLOW_STATEMENT = spec(
    "runbook_pg_slow_statement_threshold_seconds",
    "gauge",
    "Mean execution time above which a statement counts as slow.",
    ("target",),
    SRC,
)
PG_ROLLBACK = spec(
    "runbook_pg_rollback_ratio_threshold",
    "gauge",
    "Share of transactions rolled back above which to alert.",
    T,
    SRC,
)


QUEUE_THRESHOLDS: Fields = {  # of a queue's `thresholds`
    "depth_warning": (QUEUE_DEPTH, "warning"),
    "depth_critical": (QUEUE_DEPTH, "critical"),
    "stuck_warning": (QUEUE_STUCK, "warning"),
    "retries_exhausted_warning": (QUEUE_EXHAUSTED, "warning"),
    "dead_letter_warning": (QUEUE_DLQ, "warning"),
    "oldest_pending_warning": (QUEUE_OLDEST, "warning"),
    "oldest_pending_critical": (QUEUE_OLDEST, "critical"),
    "failure_ratio_warning": (QUEUE_FAILURE, "warning"),
    "failure_ratio_critical": (QUEUE_FAILURE, "critical"),
}
QUEUE_SETTINGS: Fields = {  # of the queue itself
    "stuck_after": (QUEUE_STUCK_AFTER, None),
    "max_retries": (QUEUE_MAX_RETRIES, None),
    "recent_window": (QUEUE_WINDOW, None),
}
PG_THRESHOLDS: Fields = {  # of a target's `thresholds`
    "connections_warning_ratio": (PG_CONNECTIONS, "warning"),
    "connections_critical_ratio": (PG_CONNECTIONS, "critical"),
    "long_query_warning": (PG_LONG_QUERY, "warning"),
    "long_query_critical": (PG_LONG_QUERY, "critical"),
    "idle_in_transaction_warning": (PG_IDLE_TX, "warning"),
    "idle_in_transaction_critical": (PG_IDLE_TX, "critical"),
    "lock_wait_warning": (PG_LOCK_WAIT, "warning"),
    "dead_tuple_ratio_warning": (PG_DEAD_TUPLES, "warning"),
    "dead_tuple_min_rows": (PG_DEAD_MIN_ROWS, None),
    "slow_statement_mean": (PG_SLOW_STATEMENT, None),
    "rollback_ratio_warning": (PG_ROLLBACK, "warning"),
    "rollback_ratio_critical": (PG_ROLLBACK, "critical"),
}


def families(config: Config) -> list[Metric]:
    series = ThresholdSeries(QUEUE_THRESHOLDS, QUEUE_SETTINGS, PG_THRESHOLDS)
    for t in config.targets:
        series.add(t.thresholds, PG_THRESHOLDS, t.name)
        for q in t.queues:
            if q.label is None:  # pgmq: "*": the queues collector serves its queues' series
                continue
            series.add(q.thresholds, QUEUE_THRESHOLDS, t.name, q.label)
            series.add(q, QUEUE_SETTINGS, t.name, q.label)
    return series.families()
