"""The queues collector against a real PostgreSQL: incidents are made for real in a
processing_jobs table like runbook 000's, and every value is read from a real scrape."""

from __future__ import annotations

import logging

import psycopg
import pytest
from psycopg import sql

from exporter import doctor
from exporter.collectors import queues as qc
from exporter.config import parse_config
from tests.helpers import assert_declared, assert_promtool_clean

JOBS_TABLE = """
CREATE TABLE processing_jobs (
    id            bigserial PRIMARY KEY,
    status        text NOT NULL DEFAULT 'pending',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    retry_count   integer NOT NULL DEFAULT 0,
    error_message text
)
"""
DLQ_TABLE = """
CREATE TABLE processing_jobs_dlq (
    id        bigserial PRIMARY KEY,
    job_id    bigint,
    error     text,
    failed_at timestamptz NOT NULL DEFAULT now()
)
"""
# what `runbook-exporter doctor` recommends for the default status mapping (docs/queues.md)
INDEXES = """
CREATE INDEX processing_jobs_active_idx ON processing_jobs (status)
    INCLUDE (created_at, updated_at) WHERE status IN ('pending', 'processing');
CREATE INDEX processing_jobs_failed_idx ON processing_jobs (status, retry_count)
    WHERE status IN ('failed', 'dead');
CREATE INDEX processing_jobs_recent_idx ON processing_jobs (updated_at)
    WHERE status IN ('completed', 'failed')
"""
Q = "processing_jobs"


def add_jobs(
    conn: psycopg.Connection,
    n: int,
    status: str,
    *,
    created_ago: str = "1 minute",
    updated_ago: str = "1 minute",
    retry_count: int = 0,
    error: str | None = None,
    table: str = "processing_jobs",
) -> None:
    """n jobs in `status`, created and last updated the given interval ago."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (status, created_at, updated_at, retry_count, error_message)"
            " SELECT %s, now() - %s::interval, now() - %s::interval, %s, %s"
            " FROM generate_series(1, %s)"
        ).format(sql.Identifier(table)),
        (status, created_ago, updated_ago, retry_count, error, n),
    )


def target(dsn: str, queues: list[dict], name: str = "app") -> dict:
    return {"name": name, "dsn": dsn, "collect_interval": "1s", "queues": queues}


def queues_ok(s, tgt: str = "app") -> bool:
    return s.value("runbook_collector_success", target=tgt, collector="queues") == 1


def jobs(s, status: str, queue: str = Q) -> float | None:
    return s.value("runbook_queue_jobs", target="app", queue=queue, status=status)


def one(s, name: str, queue: str = Q, **labels: str) -> float | None:
    return s.value(name, target="app", queue=queue, **labels)


def test_incidents_backlog_stuck_exhausted_dead_letters_and_estimate(fresh_db, run_exporter):
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(JOBS_TABLE)
        c.execute(DLQ_TABLE)
        c.execute(INDEXES)
        # backlog: 300 pending, the oldest created 10 minutes ago
        c.execute(
            "INSERT INTO processing_jobs (status, created_at, updated_at)"
            " SELECT 'pending', now() - g * interval '2 seconds', now() - g * interval '2 seconds'"
            " FROM generate_series(1, 300) g"
        )
        # 5 stuck workers (runbook 000: processing, updated_at older than 30 min) + 2 healthy
        add_jobs(c, 5, "processing", created_ago="50 minutes", updated_ago="45 minutes")
        add_jobs(c, 2, "processing", created_ago="1 minute", updated_ago="10 seconds")
        # 4 jobs out of retries (runbook 000: at 3 they need a person), 2 that will retry
        add_jobs(c, 4, "failed", updated_ago="1 hour", retry_count=3, error="OCR timed out")
        add_jobs(c, 2, "failed", updated_ago="1 minute", retry_count=1, error="HTTP 503")
        add_jobs(c, 3, "dead", updated_ago="2 hours", retry_count=3, error="invalid PDF")
        c.execute("INSERT INTO processing_jobs_dlq (job_id, error) VALUES (1, 'x'), (2, 'y')")
        add_jobs(c, 2000, "completed", created_ago="3 hours", updated_ago="2 hours")
        add_jobs(c, 7, "completed", created_ago="2 minutes", updated_ago="1 minute")
        c.execute("ANALYZE processing_jobs")

    ex = run_exporter(
        {
            "targets": [
                target(
                    fresh_db,
                    [
                        {
                            "table": "public.processing_jobs",
                            "statuses": {"dead": "dead"},
                            "dead_letter_table": "processing_jobs_dlq",
                        }
                    ],
                )
            ]
        }
    )
    s = ex.wait_for(queues_ok, what="queues collector")
    assert jobs(s, "pending") == 300
    assert jobs(s, "processing") == 7
    assert jobs(s, "failed") == 6
    assert jobs(s, "dead") == 3
    assert jobs(s, "completed") is None  # estimated, not counted
    assert jobs(s, "other") is None
    assert one(s, "runbook_queue_stuck_jobs") == 5
    assert one(s, "runbook_queue_retries_exhausted_jobs") == 4
    assert one(s, "runbook_queue_dead_letter_jobs") == 3 + 2  # dead status + DLQ rows
    assert 595 <= one(s, "runbook_queue_oldest_pending_age_seconds") <= 660
    assert one(s, "runbook_queue_recent_jobs", outcome="completed") == 7
    assert one(s, "runbook_queue_recent_jobs", outcome="failed") == 2
    est = one(s, "runbook_queue_jobs_estimated", status="completed")
    assert est == pytest.approx(2007, rel=0.05), est
    # every queue series is declared (docs/metrics.md) and passes promtool's lint
    assert_declared(n for n in s.families if n.startswith("runbook_queue_"))
    assert_promtool_clean(s.text)

    # the backlog drains and a stuck job is reset (runbook 000's query): the next run shows it
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(
            "UPDATE processing_jobs SET status = 'completed', updated_at = now()"
            " WHERE status = 'pending'"
        )
        c.execute(
            "UPDATE processing_jobs SET status = 'pending', updated_at = now(),"
            " retry_count = retry_count + 1"
            " WHERE status = 'processing' AND updated_at < now() - interval '30 minutes'"
            " AND retry_count < 3"
        )
    s = ex.wait_for(lambda s: jobs(s, "pending") == 5, what="backlog drained, stuck jobs reset")
    assert one(s, "runbook_queue_stuck_jobs") == 0
    assert one(s, "runbook_queue_recent_jobs", outcome="completed") == 307
    assert one(s, "runbook_queue_oldest_pending_age_seconds") >= 2999  # created 50 min ago


def test_healthy_queue_reports_zeros(fresh_db, run_exporter):
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(JOBS_TABLE)
        add_jobs(c, 3, "pending", created_ago="5 seconds", updated_ago="5 seconds")
        add_jobs(c, 2, "processing", created_ago="20 seconds", updated_ago="2 seconds")
        add_jobs(c, 40, "completed", created_ago="3 minutes", updated_ago="2 minutes")
        c.execute("ANALYZE processing_jobs")
    ex = run_exporter({"targets": [target(fresh_db, [{"table": "processing_jobs"}])]})
    s = ex.wait_for(queues_ok, what="queues collector")
    assert jobs(s, "pending") == 3
    assert jobs(s, "processing") == 2
    assert jobs(s, "failed") == 0
    assert jobs(s, "dead") is None  # no dead status configured
    assert one(s, "runbook_queue_stuck_jobs") == 0
    assert one(s, "runbook_queue_retries_exhausted_jobs") == 0
    assert 4 <= one(s, "runbook_queue_oldest_pending_age_seconds") < 60
    assert one(s, "runbook_queue_recent_jobs", outcome="completed") == 40
    assert one(s, "runbook_queue_recent_jobs", outcome="failed") == 0
    # neither a dead status nor a DLQ table: the series would be a meaningless 0
    assert "runbook_queue_dead_letter_jobs" not in s.families


def test_empty_queue_oldest_pending_is_zero(fresh_db, run_exporter):
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(JOBS_TABLE)
        c.execute(DLQ_TABLE)
    ex = run_exporter(
        {
            "targets": [
                target(
                    fresh_db,
                    [{"table": "processing_jobs", "dead_letter_table": "processing_jobs_dlq"}],
                )
            ]
        }
    )
    s = ex.wait_for(queues_ok, what="queues collector")
    assert jobs(s, "pending") == 0
    assert one(s, "runbook_queue_oldest_pending_age_seconds") == 0
    assert one(s, "runbook_queue_dead_letter_jobs") == 0  # DLQ configured but empty


def test_stuck_after_override_per_queue(fresh_db, run_exporter):
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(JOBS_TABLE)
        add_jobs(c, 5, "processing", created_ago="50 minutes", updated_ago="45 minutes")
        add_jobs(c, 2, "processing", created_ago="15 minutes", updated_ago="12 minutes")
    queues = [
        {"name": "default_30m", "table": "processing_jobs"},
        {"name": "patient_1h", "table": "processing_jobs", "stuck_after": "1h"},
        {"name": "strict_10m", "table": "processing_jobs", "stuck_after": "10m"},
    ]
    ex = run_exporter({"targets": [target(fresh_db, queues)]})
    s = ex.wait_for(queues_ok, what="queues collector")
    assert one(s, "runbook_queue_stuck_jobs", queue="default_30m") == 5
    assert one(s, "runbook_queue_stuck_jobs", queue="patient_1h") == 0
    assert one(s, "runbook_queue_stuck_jobs", queue="strict_10m") == 7


def test_custom_status_mapping_enum_schema_and_exact_count(fresh_db, run_exporter):
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(
            "CREATE SCHEMA ocr;"
            " CREATE TYPE ocr.job_state AS ENUM"
            " ('queued', 'running', 'done', 'error', 'cancelled');"
            " CREATE TABLE ocr.documents (id bigserial PRIMARY KEY,"
            " state ocr.job_state NOT NULL DEFAULT 'queued',"
            " enqueued_at timestamptz NOT NULL DEFAULT now(),"
            " changed_at timestamptz NOT NULL DEFAULT now());"
            " CREATE TABLE ocr.dead_letters (id bigserial PRIMARY KEY, document_id bigint)"
        )
        for state, n, ago in (
            ("queued", 12, "3 minutes"),
            ("running", 2, "50 minutes"),
            ("done", 25, "1 minute"),
            ("done", 100, "1 day"),
            ("error", 4, "1 minute"),
            ("cancelled", 9, "1 minute"),
        ):
            c.execute(
                "INSERT INTO ocr.documents (state, enqueued_at, changed_at)"
                " SELECT %s::ocr.job_state, now() - %s::interval, now() - %s::interval"
                " FROM generate_series(1, %s)",
                (state, ago, ago, n),
            )
        c.execute("INSERT INTO ocr.dead_letters (document_id) VALUES (1), (2), (3)")
    queue = {
        "name": "ocr",
        "table": "ocr.documents",
        "status_column": "state",
        "statuses": {
            "pending": "queued",
            "processing": "running",
            "completed": "done",
            "failed": "error",
        },
        "created_at_column": "enqueued_at",
        "updated_at_column": "changed_at",
        "retry_count_column": None,
        "count_terminal": "exact",
        "dead_letter_table": "ocr.dead_letters",
    }
    ex = run_exporter({"targets": [target(fresh_db, [queue])]})
    s = ex.wait_for(queues_ok, what="queues collector")
    assert jobs(s, "pending", "ocr") == 12
    assert jobs(s, "processing", "ocr") == 2
    assert jobs(s, "failed", "ocr") == 4
    assert jobs(s, "completed", "ocr") == 125  # count_terminal: exact
    assert one(s, "runbook_queue_jobs_estimated", "ocr", status="completed") is None
    # 'cancelled' is mapped to no role: not counted, and no status="other" (docs/queues.md)
    assert {ls["status"] for ls in s.labelsets("runbook_queue_jobs")} == {
        "pending",
        "processing",
        "failed",
        "completed",
    }
    assert one(s, "runbook_queue_stuck_jobs", "ocr") == 2
    assert one(s, "runbook_queue_retries_exhausted_jobs", "ocr") == 0  # no retry column
    assert one(s, "runbook_queue_dead_letter_jobs", "ocr") == 3
    assert one(s, "runbook_queue_recent_jobs", "ocr", outcome="completed") == 25
    assert one(s, "runbook_queue_recent_jobs", "ocr", outcome="failed") == 4
    assert 170 <= one(s, "runbook_queue_oldest_pending_age_seconds", "ocr") <= 240


def test_count_terminal_off_reports_no_completed(fresh_db, run_exporter):
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(JOBS_TABLE)
        add_jobs(c, 50, "completed", updated_ago="1 hour")
        add_jobs(c, 1, "pending")
        c.execute("ANALYZE processing_jobs")
    ex = run_exporter(
        {"targets": [target(fresh_db, [{"table": "processing_jobs", "count_terminal": "off"}])]}
    )
    s = ex.wait_for(queues_ok, what="queues collector")
    assert jobs(s, "pending") == 1
    assert jobs(s, "completed") is None
    assert "runbook_queue_jobs_estimated" not in s.families


def test_missing_table_and_columns_name_the_config_path(fresh_db, run_exporter, caplog):
    caplog.set_level(logging.WARNING, logger="exporter.scheduler")
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(JOBS_TABLE)
        add_jobs(c, 4, "pending")
    ex = run_exporter(
        {
            "targets": [
                target(
                    fresh_db,
                    [{"table": "processing_jobs"}, {"table": "public.jobz"}],
                ),
                target(
                    fresh_db,
                    [
                        {
                            "table": "processing_jobs",
                            "status_column": "state",
                            "created_at_column": "error_message",
                        }
                    ],
                    name="typo",
                ),
            ]
        }
    )
    s = ex.wait_for(
        lambda s: (
            s.value("runbook_collector_success", target="app", collector="queues") == 0
            and s.value("runbook_collector_success", target="typo", collector="queues") == 0
        ),
        what="both queue collectors failing",
    )
    # only the broken queue goes dark: the target's healthy queue is still served
    assert jobs(s, "pending") == 4
    assert jobs(s, "pending", "jobz") is None
    assert s.value("runbook_queue_up", target="app", queue="processing_jobs") == 1
    assert s.value("runbook_queue_up", target="app", queue="jobz") == 0
    assert s.value("runbook_queue_up", target="typo", queue="processing_jobs") == 0
    assert s.values("runbook_queue_jobs", target="typo") == []
    assert s.value("runbook_collector_success", target="app", collector="database") == 1
    errors = [str(getattr(r, "error", "")) for r in caplog.records]
    assert any(
        'targets[0].queues[1].table: table "public.jobz" does not exist' in e for e in errors
    )
    typo = next(e for e in errors if "targets[1]" in e)
    assert (
        'targets[1].queues[0].status_column: column "state" does not exist in table'
        ' "public.processing_jobs"' in typo
    )
    assert (
        'targets[1].queues[0].created_at_column: column "error_message" of table'
        ' "public.processing_jobs" has type text, expected timestamptz or timestamp' in typo
    )

    # the failing queue is checked again on every run: creating the table heals the target
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(JOBS_TABLE.replace("processing_jobs", "jobz"))
        add_jobs(c, 2, "pending", table="jobz")
    s = ex.wait_for(queues_ok, what="recovered after CREATE TABLE")
    assert jobs(s, "pending") == 4
    assert jobs(s, "pending", "jobz") == 2
    assert s.value("runbook_queue_up", target="app", queue="jobz") == 1


def test_a_locked_queue_table_does_not_hide_the_other_queue(fresh_db, run_exporter):
    """A migration holds ACCESS EXCLUSIVE on one queue table: that queue's query gives up at
    lock_timeout, the other queue is still served, the run counts as failed; released, the
    locked queue comes back."""
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(JOBS_TABLE)
        c.execute(JOBS_TABLE.replace("processing_jobs", "jobz"))
        add_jobs(c, 4, "pending")
        add_jobs(c, 2, "pending", table="jobz")
    ex = run_exporter(
        {
            "targets": [
                {
                    **target(fresh_db, [{"table": "processing_jobs"}, {"table": "public.jobz"}]),
                    "lock_timeout": "300ms",
                }
            ]
        }
    )
    ex.wait_for(queues_ok, what="queues collector")
    migration = psycopg.connect(fresh_db)
    try:
        migration.execute("LOCK TABLE jobz IN ACCESS EXCLUSIVE MODE")  # held: no commit yet
        s = ex.wait_for(
            lambda s: s.value("runbook_queue_up", target="app", queue="jobz") == 0,
            what="the locked queue reported down",
        )
        assert not queues_ok(s)
        assert s.value("runbook_queue_up", target="app", queue="processing_jobs") == 1
        assert jobs(s, "pending") == 4
        assert jobs(s, "pending", "jobz") is None
        error = ex.exporter.store.snapshot()[("app", "queues")].last.error
        assert error.startswith("targets[0].queues[1]: LockNotAvailable: ")
        assert "lock timeout" in error
    finally:
        migration.rollback()
        migration.close()
    s = ex.wait_for(queues_ok, what="recovered after the lock is released")
    assert jobs(s, "pending", "jobz") == 2
    assert s.value("runbook_queue_up", target="app", queue="jobz") == 1


def test_dropped_table_is_reported_by_config_path(fresh_db, run_exporter):
    """A table dropped after the first check: the query error is turned into the same message."""
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(JOBS_TABLE)
    ex = run_exporter({"targets": [target(fresh_db, [{"table": "processing_jobs"}])]})
    ex.wait_for(queues_ok, what="queues collector")
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("DROP TABLE processing_jobs")
    ex.wait_for(lambda s: not queues_ok(s), what="collector failing after DROP TABLE")
    state = ex.exporter.store.snapshot()[("app", "queues")]
    assert state.last.error == (
        'targets[0].queues[0].table: table "public.processing_jobs" does not exist'
    )


def test_queries_read_only_active_rows_with_the_recommended_indexes(fresh_db):
    """O(active jobs), not O(table): with the indexes the doctor recommends, the planner picks
    them on its own for a table of 60k finished jobs, and the buffers read stay small."""
    with psycopg.connect(fresh_db, autocommit=True) as c:
        # the test server commits asynchronously (synchronous_commit off), and VACUUM marks a
        # page all-visible only once its rows' commits are flushed: commit as a real server does
        c.execute("SET synchronous_commit = on")
        c.execute(JOBS_TABLE)
        c.execute(INDEXES)
        add_jobs(c, 60000, "completed", updated_ago="2 hours")
        add_jobs(c, 300, "pending")
        add_jobs(c, 50, "processing")
        add_jobs(c, 20, "failed", retry_count=3)
        c.execute("VACUUM ANALYZE processing_jobs")
        (pages,) = c.execute(
            "SELECT relpages FROM pg_class WHERE relname = 'processing_jobs'"
        ).fetchone()
        queue = parse_config(f"targets: [{{name: app, dsn: 'host=x', queues: [{{table: {Q}}}]}}]")
        for query in qc.queries(queue.targets[0].queues[0]):
            if query.index_column is None:
                continue  # the completed estimate runs EXPLAIN only
            (plan,) = c.execute(
                sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ") + query.text,
                query.params,
                prepare=False,
            ).fetchone()
            text = str(plan)
            assert "Seq Scan" not in text, (query.name, plan)
            root = plan[0]["Plan"]
            buffers = root["Shared Hit Blocks"] + root["Shared Read Blocks"]
            assert buffers < pages / 10, (query.name, buffers, pages)
            if query.name == "recent":
                continue  # reads the window's rows from the table: O(window) as it is
            # after VACUUM the active and failed counts come from their covering index alone
            scans = [n for n in doctor._plan_nodes(root) if "Index Name" in n]
            assert scans and all(n["Node Type"] == "Index Only Scan" for n in scans), plan
            assert all(n["Heap Fetches"] == 0 for n in scans), (query.name, plan)


def test_failed_jobs_are_exact_up_to_the_limit_and_estimated_beyond(fresh_db):
    """Failed jobs pile up: each count of them stops at exact_count_limit and the planner's
    estimate (at least the limit) stands in beyond it, so QueueRetriesExhausted, whose
    threshold the config keeps below the limit, fires as with a full count. Dead jobs are
    always exact (QueueDeadLetterGrowing follows their growth)."""
    import asyncio

    from exporter.queuekinds.table import measure

    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(JOBS_TABLE)
        c.execute(INDEXES)
        add_jobs(c, 40, "failed", retry_count=3)  # out of retries
        add_jobs(c, 7, "failed", retry_count=1)  # retried later
        add_jobs(c, 25, "dead")
        add_jobs(c, 3, "pending")
        c.execute("ANALYZE processing_jobs")

    def reading(limit: int, estimates=None):
        item = {"table": Q, "statuses": {"dead": "dead"}, "exact_count_limit": limit}
        queue = (
            parse_config(
                yaml_dump({"targets": [{"name": "app", "dsn": "host=x", "queues": [item]}]})
            )
            .targets[0]
            .queues[0]
        )

        async def go():
            async with await psycopg.AsyncConnection.connect(fresh_db) as conn:
                return await measure(conn, queue, estimates)

        return asyncio.run(go())

    exact = reading(1000)
    assert exact.jobs == {"pending": 3, "processing": 0, "failed": 47, "dead": 25}
    assert exact.retries_exhausted == 40 and exact.failed_estimated is False
    assert exact.dead_letter == 25

    capped = reading(10)
    assert capped.failed_estimated is True
    # the exhausted count reached the limit: the planner's estimate, at least the limit (here
    # 25: the planner takes status and retry_count as independent)
    assert 10 <= capped.retries_exhausted <= 47
    assert capped.jobs["failed"] == capped.retries_exhausted + 7  # 7 retrying: below, exact
    assert capped.jobs["dead"] == 25 and capped.dead_letter == 25  # never capped
    # statistics on the pair (docs/queues.md) make the estimate follow the real split
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(
            "CREATE STATISTICS processing_jobs_failed_stats (mcv) ON status, retry_count"
            " FROM processing_jobs"
        )
        c.execute("ANALYZE processing_jobs")
    assert reading(10).retries_exhausted == 40
    # the estimates are kept for ESTIMATE_TTL between runs (the collector's TableKind holds
    # them): within it no EXPLAIN is made again, the kept figure is served
    import time

    from exporter.queuekinds.table import Estimates

    kept = Estimates({0: 999.0}, time.monotonic())
    assert reading(10, kept).retries_exhausted == 999
    assert reading(10, Estimates({0: 999.0}, time.monotonic() - 61)).retries_exhausted == 40

    with pytest.raises(Exception, match="exact_count_limit"):
        parse_config(
            yaml_dump(
                {
                    "targets": [
                        {
                            "name": "app",
                            "dsn": "host=x",
                            "queues": [
                                {
                                    "table": Q,
                                    "exact_count_limit": 5,
                                    "thresholds": {"retries_exhausted_warning": 5},
                                }
                            ],
                        }
                    ]
                }
            )
        )


def yaml_dump(config: dict) -> str:
    import yaml

    return yaml.safe_dump(config)
