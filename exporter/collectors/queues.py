"""Job queues (runbooks 000 and 003): depth per status role, oldest pending job, stuck and
retries-exhausted jobs, dead letters, recently finished jobs -- the same series for every kind
of queue.

The kinds live in exporter/queuekinds/: `table:` items are hand-rolled jobs tables
(queuekinds/table.py), `pgmq:` items pgmq queues (queuekinds/pgmq.py), `pg_boss:`, `oban:`...
the job libraries' own schemas (queuekinds/library.py and a module per library). Each kind
checks its queue in the catalog and measures it into a `Reading`; this collector keeps the
metric specs and turns every reading into the same families, so the alert rules and the queue
dashboard work for every kind unchanged. docs/queues.md has the queries, the mappings and the
measured plans.

Each queue is checked in the catalog once per connection. A queue whose table or column is
missing, or whose query fails, loses its own series only: the target's other queues are still
served, `runbook_queue_up{queue}` is 0 for it, and the collector's run counts as failed
(`runbook_collector_success` 0, so RunbookCollectorFailing fires) with a message naming the
config path, e.g. `targets[0].queues[1].table: table "public.jobz" does not exist`. Failing
queues are checked again on every run, so they recover as soon as the table appears.

The queues a `pgmq: "*"` or library `"*"` item (`pg_boss: "*"`...) finds at runtime have no
threshold series from the configuration (collectors/thresholds.py serves those of named queues):
this collector serves theirs, from the wildcard item's settings, with the same specs. Two
wildcards that find a queue of the same name (Oban's and River's `default`) would serve two
series of one label set: the later one is skipped and named in the run's error.
"""

from __future__ import annotations

import weakref
from typing import Any

import psycopg
from prometheus_client.core import Metric

from exporter import queuekinds
from exporter.collectors.thresholds import QUEUE_SETTINGS, QUEUE_THRESHOLDS
from exporter.config import Queue, Target
from exporter.db import savepoint
from exporter.metrics import ThresholdSeries, spec
from exporter.queuekinds.base import (  # noqa: F401  (re-exported: the doctor, tests, bench)
    CATALOG_SQL,
    SELECTABLE,
    Column,
    Member,
    Query,
    QueueConfigError,
    QueueKind,
    Reading,
    TableInfo,
    estimate_rows,
    explain_plan,
    queue_path,
    run,
    table_info,
)
from exporter.queuekinds.table import (  # noqa: F401  (re-exported, as above)
    TIMESTAMP_TYPES,
    Estimates,
    active_query,
    check_queue,
    completed_query,
    dead_letter_query,
    failed_parts,
    failed_query,
    queries,
    queue_problems,
    recent_query,
)
from exporter.queuekinds.table import measure as measure_table
from exporter.scheduler import PartialFailure
from exporter.sources import Collector

SRC = "collectors/queues.py"
TQ = ("target", "queue")

JOBS = spec(
    "runbook_queue_jobs",
    "gauge",
    "Jobs in the queue by status role (pending, processing, failed, dead; completed only with "
    "count_terminal: exact; scheduled for pgmq messages and library jobs not due yet), counted "
    "exactly.",
    (*TQ, "status"),
    SRC,
)
JOBS_ESTIMATED = spec(
    "runbook_queue_jobs_estimated",
    "gauge",
    "Completed jobs estimated from planner statistics (count_terminal: estimate; for pgmq the "
    "archive table's rows); as fresh as the table's last ANALYZE, scaled by its current size.",
    (*TQ, "status"),
    SRC,
)
OLDEST_PENDING = spec(
    "runbook_queue_oldest_pending_age_seconds",
    "gauge",
    "Age (now - created_at) of the oldest pending job; 0 when none is pending.",
    TQ,
    SRC,
)
STUCK = spec(
    "runbook_queue_stuck_jobs",
    "gauge",
    "Processing jobs whose updated_at is older than the queue's stuck_after (library presets: "
    "held past the library's own expiry or heartbeat by more than stuck_after).",
    TQ,
    SRC,
)
RETRIES_EXHAUSTED = spec(
    "runbook_queue_retries_exhausted_jobs",
    "gauge",
    "Failed jobs with retry_count >= max_retries: no automatic retry left, they need a person "
    "(0 when the queue has no retry_count_column; library presets: the library's own terminal "
    "failure).",
    TQ,
    SRC,
)
DEAD_LETTER = spec(
    "runbook_queue_dead_letter_jobs",
    "gauge",
    "Dead-lettered jobs: rows with a dead status plus the rows of the dead_letter_table; absent "
    "when the queue has neither.",
    TQ,
    SRC,
)
RECENT = spec(
    "runbook_queue_recent_jobs",
    "gauge",
    "Jobs that reached the completed or failed role within the queue's recent_window (by "
    "updated_at).",
    (*TQ, "outcome"),
    SRC,
)

FAILED_ESTIMATED = spec(
    "runbook_queue_failed_jobs_estimated",
    "gauge",
    "1 when a failed count of the queue reached its exact_count_limit, so "
    'runbook_queue_jobs{status="failed"} and runbook_queue_retries_exhausted_jobs are planner '
    "estimates (never below the limit); 0 when they are exact. Table queues only.",
    TQ,
    SRC,
)

QUEUE_UP = spec(
    "runbook_queue_up",
    "gauge",
    "1 when the queue's last collection succeeded; 0 when its table, a column or a privilege is "
    "missing or its query failed (its other series are then absent).",
    TQ,
    SRC,
)


# --- the families -----------------------------------------------------------------------


def families(target: str, label: str, r: Reading) -> list[Metric]:
    """A reading of any kind as the queue families."""
    jobs = JOBS.family()
    for status, count in r.jobs.items():
        jobs.add_metric([target, label, status], count)
    out: list[Metric] = [
        OLDEST_PENDING.one(r.oldest_pending, target, label),
        STUCK.one(r.stuck, target, label),
        RETRIES_EXHAUSTED.one(r.retries_exhausted, target, label),
    ]
    if r.recent is not None:
        recent = RECENT.family()
        for outcome in ("completed", "failed"):
            recent.add_metric([target, label, outcome], r.recent.get(outcome, 0.0))
        out.append(recent)
    if r.completed_estimate is not None:
        out.append(JOBS_ESTIMATED.one(r.completed_estimate, target, label, "completed"))
    out.append(jobs)
    if r.dead_letter is not None:
        out.append(DEAD_LETTER.one(r.dead_letter, target, label))
    if r.failed_estimated is not None:
        out.append(FAILED_ESTIMATED.one(1 if r.failed_estimated else 0, target, label))
    return out


async def collect_queue(
    conn: psycopg.AsyncConnection, target: Target, q: Queue, estimates: Estimates | None = None
) -> list[Metric]:
    """One table queue's families (the bench times this; `estimates` as TableKind keeps them)."""
    return families(target.name, q.label, await measure_table(conn, q, estimates))


# --- the collector ----------------------------------------------------------------------


_SCHEMA_ERRORS = (
    psycopg.errors.UndefinedTable,
    psycopg.errors.UndefinedColumn,
    psycopg.errors.InsufficientPrivilege,
    psycopg.errors.InvalidSchemaName,
    psycopg.errors.InvalidTextRepresentation,  # a status value the enum does not have
)

# errors that concern one queue and leave the connection usable; anything else (the
# connection broke) fails the whole run so the target reconnects
_QUEUE_ERRORS = (
    *_SCHEMA_ERRORS,
    psycopg.errors.QueryCanceled,  # statement_timeout on this queue's table
    psycopg.errors.LockNotAvailable,
)


class Queues(Collector):
    name = "queues"
    first_run = 30

    def __init__(self, target: Target, settings) -> None:
        super().__init__(target, settings)
        # one kind object per configured item: what it keeps between runs lives on it
        self.kinds: list[QueueKind] = [queuekinds.kind_of(q)(target, q) for q in target.queues]
        # (item, queue) pairs whose catalog check passed on a connection; a new connection
        # checks again
        self._checked: weakref.WeakKeyDictionary[Any, set[tuple[int, str]]] = (
            weakref.WeakKeyDictionary()
        )

    async def collect_checked(
        self, conn: psycopg.AsyncConnection, i: int, kind: QueueKind, m: Member
    ) -> Reading:
        """One queue, checked in the catalog first when this connection has not checked it
        yet. The caller runs it under a savepoint and, on a schema error, calls recheck()."""
        checked = self._checked.setdefault(conn, set())
        key = (i, m.label)
        if key not in checked:
            found = await kind.check(conn, m)
            if found:
                raise QueueConfigError("; ".join(found))
            checked.add(key)
        return await kind.measure(conn, m)

    async def recheck(
        self, conn: psycopg.AsyncConnection, i: int, kind: QueueKind, m: Member, error: Exception
    ) -> str:
        """The table changed since the check (dropped, renamed, grant revoked): check again, in
        the transaction the caller's savepoint gave back, so the error names the config path
        rather than the SQL."""
        self._checked.setdefault(conn, set()).discard((i, m.label))
        try:
            async with savepoint(conn):
                found = await kind.check(conn, m)
        except _QUEUE_ERRORS:
            found = []
        return "; ".join(found) if found else f"{kind.path}: {str(error).strip()}"

    async def collect(self, conn: psycopg.AsyncConnection) -> list[Metric]:
        target = self.target
        out: list[Metric] = []
        up = QUEUE_UP.family()
        found_thresholds = ThresholdSeries(QUEUE_THRESHOLDS, QUEUE_SETTINGS)
        problems: list[str] = []
        labels: set[str] = set()

        def failed(label: str | None, problem: str) -> None:
            problems.append(problem)
            if label is not None:  # a wildcard that cannot list its queues has no label
                up.add_metric([target.name, label], 0)

        for i, kind in enumerate(self.kinds):
            try:
                if kind.lists_members:
                    async with savepoint(conn):  # a failed item leaves the others theirs
                        members = await kind.members(conn)
                else:
                    members = await kind.members(conn)
            except QueueConfigError as e:
                failed(kind.item.label, str(e))
                continue
            except _QUEUE_ERRORS as e:
                if conn.broken or conn.closed:
                    raise
                failed(kind.item.label, f"{kind.path}: {type(e).__name__}: {e}".strip())
                continue
            for m in members:
                if m.label in labels:
                    # two "*" items found a queue of the same name (Oban's and River's
                    # "default"): one series per label, so the later one gives way
                    if m.dynamic:
                        problems.append(
                            f'{kind.path}: queue "{m.label}" is also found by an item before it:'
                            " configure one of them by name with a distinct name:"
                        )
                    continue
                labels.add(m.label)
                if m.dynamic:
                    found_thresholds.add(
                        m.settings.thresholds, QUEUE_THRESHOLDS, target.name, m.label
                    )
                    found_thresholds.add(m.settings, QUEUE_SETTINGS, target.name, m.label)
                try:
                    async with savepoint(conn):  # a failed queue leaves the others theirs
                        reading = await self.collect_checked(conn, i, kind, m)
                    out.extend(families(target.name, m.label, reading))
                    up.add_metric([target.name, m.label], 1)
                except QueueConfigError as e:
                    failed(m.label, str(e))
                except _SCHEMA_ERRORS as e:
                    if conn.broken or conn.closed:
                        raise
                    failed(m.label, await self.recheck(conn, i, kind, m, e))
                except _QUEUE_ERRORS as e:
                    if conn.broken or conn.closed:
                        raise
                    failed(m.label, f"{kind.path}: {type(e).__name__}: {e}".strip())
        out.append(up)
        out.extend(found_thresholds.families())
        if problems:
            raise PartialFailure("; ".join(problems), out)
        return out
