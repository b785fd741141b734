"""Configured thresholds as series, so shipped alert rules stay static and dashboards draw
the same lines: a rule compares `runbook_queue_jobs` with `runbook_queue_depth_threshold`
of the same target and queue, and a per-queue override needs no rule edit.

These families come from the configuration alone; they are built once and served always.
"""

from __future__ import annotations

from prometheus_client.core import Metric

from exporter.config import Config
from exporter.metrics import spec

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


def families(config: Config) -> list[Metric]:
    fams = {
        s: s.family()
        for s in (
            QUEUE_DEPTH,
            QUEUE_STUCK,
            QUEUE_EXHAUSTED,
            QUEUE_DLQ,
            QUEUE_OLDEST,
            QUEUE_FAILURE,
            QUEUE_STUCK_AFTER,
            QUEUE_MAX_RETRIES,
            QUEUE_WINDOW,
            PG_CONNECTIONS,
            PG_LONG_QUERY,
            PG_IDLE_TX,
            PG_LOCK_WAIT,
            PG_DEAD_TUPLES,
            PG_DEAD_MIN_ROWS,
            PG_SLOW_STATEMENT,
            PG_ROLLBACK,
        )
    }
    for t in config.targets:
        th = t.thresholds
        for sev in ("warning", "critical"):
            fams[PG_CONNECTIONS].add_metric([t.name, sev], getattr(th, f"connections_{sev}_ratio"))
            fams[PG_LONG_QUERY].add_metric([t.name, sev], getattr(th, f"long_query_{sev}"))
            fams[PG_IDLE_TX].add_metric([t.name, sev], getattr(th, f"idle_in_transaction_{sev}"))
            fams[PG_ROLLBACK].add_metric([t.name, sev], getattr(th, f"rollback_ratio_{sev}"))
        fams[PG_LOCK_WAIT].add_metric([t.name, "warning"], th.lock_wait_warning)
        fams[PG_DEAD_TUPLES].add_metric([t.name, "warning"], th.dead_tuple_ratio_warning)
        fams[PG_DEAD_MIN_ROWS].add_metric([t.name], th.dead_tuple_min_rows)
        fams[PG_SLOW_STATEMENT].add_metric([t.name], th.slow_statement_mean)
        for q in t.queues:
            qt, labels = q.thresholds, [t.name, q.label]
            for sev in ("warning", "critical"):
                fams[QUEUE_DEPTH].add_metric([*labels, sev], getattr(qt, f"depth_{sev}"))
                fams[QUEUE_OLDEST].add_metric([*labels, sev], getattr(qt, f"oldest_pending_{sev}"))
                fams[QUEUE_FAILURE].add_metric([*labels, sev], getattr(qt, f"failure_ratio_{sev}"))
            fams[QUEUE_STUCK].add_metric([*labels, "warning"], qt.stuck_warning)
            fams[QUEUE_EXHAUSTED].add_metric([*labels, "warning"], qt.retries_exhausted_warning)
            fams[QUEUE_DLQ].add_metric([*labels, "warning"], qt.dead_letter_warning)
            fams[QUEUE_STUCK_AFTER].add_metric(labels, q.stuck_after)
            fams[QUEUE_MAX_RETRIES].add_metric(labels, q.max_retries)
            fams[QUEUE_WINDOW].add_metric(labels, q.recent_window)
    return [f for f in fams.values() if f.samples]
