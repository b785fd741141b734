"""The procrastinate: preset on a real PostgreSQL with Procrastinate's own schema: Procrastinate
3.x (PyPI, the test extra) applies it with its schema manager and defers, runs, fails and retries
the jobs through its API (tests/procrastinate_app.py); the test then moves two timestamps back
with SQL (a backlog deferred 20 minutes ago, a worker silent for 2 hours) rather than waiting.
Every value is read from a real scrape of the real exporter, and the shipped queue alerts are
evaluated by promtool on it.

The seeded `emails` queue: 60 due, 2 scheduled in an hour, 2 running (one held by the silent
worker: stuck), 1 failed and deferred for a retry (todo, attempts 1), 1 failed for good, 4
succeeded. `reports`: 2 waiting; `misc`: 1 waiting (found by "*").
"""

from __future__ import annotations

import re

import psycopg
import pytest

from tests import presets
from tests.helpers import Scrape, assert_declared, assert_promtool_clean
from tests.presets import ROLES, roles_of, val
from tests.procrastinate_app import seed

# the queue items of the scraped config
ITEMS = (
    {"procrastinate": "emails"},
    {"procrastinate": "reports", "name": "reports_q"},
    {"procrastinate": "*", "thresholds": {"depth_warning": 7}},
)
procrastinate_db = presets.database_fixture(seed)


@pytest.fixture
def procrastinate_scrape(procrastinate_db: str, run_exporter) -> Scrape:
    return presets.scrape_when_ready(
        run_exporter,
        presets.preset_config(procrastinate_db, *ITEMS),
        "misc",
        "a Procrastinate scrape",
    )


def test_procrastinate_statuses_in_a_real_scrape(procrastinate_scrape: Scrape) -> None:
    s = procrastinate_scrape
    jobs = roles_of(s, ("emails", "reports_q", "misc"))
    assert jobs["emails"] == {
        "pending": 60,
        "scheduled": 2,
        "processing": 2,
        "failed": 1,
        "dead": 1,
    }
    assert jobs["reports_q"] == {**dict.fromkeys(ROLES, 0), "pending": 2}
    assert jobs["misc"] == {**dict.fromkeys(ROLES, 0), "pending": 1}
    assert 1200 <= val(s, "runbook_queue_oldest_pending_age_seconds", "emails") < 1300
    assert val(s, "runbook_queue_stuck_jobs", "emails") == 1
    assert val(s, "runbook_queue_retries_exhausted_jobs", "emails") == 1
    # 4 succeeded within the window; failed: the one failed for good, the one to retry
    assert val(s, "runbook_queue_recent_jobs", "emails", outcome="completed") == 4
    assert val(s, "runbook_queue_recent_jobs", "emails", outcome="failed") == 2
    assert val(s, "runbook_queue_jobs_estimated", "emails", status="completed") == 4
    ups = presets.ups(s)
    assert ups == {"emails": 1, "reports_q": 1, "misc": 1}
    assert s.value("runbook_queue_depth_threshold", queue="misc", severity="warning") == 7
    assert_declared(s.families)
    assert_promtool_clean(s.text)


def test_queue_alerts_fire_in_promtool_on_the_procrastinate_scrape(
    procrastinate_scrape, tmp_path
) -> None:
    firing = [
        ("QueueBacklogHigh", "warning", "emails"),  # 60 pending > 50
        ("QueueOldestPendingTooOld", "warning", "emails"),  # 20 min > 15 min
        ("QueueJobsStuck", "warning", "emails"),  # its worker silent for 2 h
        ("QueueRetriesExhausted", "warning", "emails"),  # status failed
        ("QueueFailureRatioHigh", "warning", "emails"),  # 2 failed of 6 finished
        ("QueueFailureRatioHigh", "critical", "emails"),
        ("QueueWorkerStalled", "warning", "reports_q"),  # waiting, nothing finished
        ("QueueWorkerStalled", "critical", "reports_q"),
        ("QueueWorkerStalled", "warning", "misc"),
        ("QueueWorkerStalled", "critical", "misc"),
    ]
    presets.assert_queue_alerts(procrastinate_scrape, firing, tmp_path)


def grow(dsn: str, n: int = 20000) -> None:
    """n more succeeded jobs in `emails` with their events, two days old, as Procrastinate
    leaves them: enough rows for the planner to show which index a real queue would use."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(
            "WITH j AS (INSERT INTO procrastinate_jobs (queue_name, task_name, status, attempts)"
            " SELECT 'emails', 'ok', 'succeeded', 1 FROM generate_series(1, %s) RETURNING id)"
            " INSERT INTO procrastinate_events (job_id, type, at)"
            " SELECT id, e.type::procrastinate_job_event_type, now() - interval '2 days'"
            " FROM j, (VALUES ('deferred'), ('started'), ('succeeded')) e(type)",
            (n,),
        )
        c.execute("ANALYZE procrastinate_jobs, procrastinate_events")


def test_doctor_reports_the_version_and_the_missing_indexes(pg_server, capsys) -> None:
    from tests.conftest import new_database

    with new_database(pg_server) as dsn:
        seed(dsn)
        grow(dsn)
        item = "      - procrastinate: emails\n"
        out = presets.doctor_out(dsn, item, capsys)
        assert "Procrastinate found in schema public: 3.1 or later (worker heartbeats)" in out
        # Procrastinate's own partial index covers todo and doing, not the failed jobs it
        # keeps; nothing indexes the events by time
        assert "queue emails: no index bounds the state query" in out, out
        assert "queue emails: no index bounds the recent query" in out, out
        assert "procrastinate_jobs (queue_name, status) WHERE status IN" in out
        assert "procrastinate_events (at) WHERE type IN" in out
        with psycopg.connect(dsn, autocommit=True) as c:
            for fix in re.findall(r"CREATE INDEX CONCURRENTLY [^\n]*;", out):
                c.execute(fix)
            c.execute("ANALYZE procrastinate_jobs, procrastinate_events")
        out = presets.doctor_out(dsn, item, capsys)
    assert "queue emails: the state query is bounded by an index" in out, out
    assert "queue emails: the recent query is bounded by an index" in out, out
    assert "FINDING" not in out, out


def test_unsupported_and_missing_procrastinate_are_named(fresh_db, run_exporter) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as c:
        # what Procrastinate 2.x left: the jobs and events tables without 3.0's _v1 indexes
        c.execute("CREATE SCHEMA old")
        c.execute("CREATE TABLE old.procrastinate_jobs (id bigserial, queue_name varchar)")
        c.execute("CREATE TABLE old.procrastinate_events (id bigserial, job_id bigint)")
    err = presets.failed_run_error(
        run_exporter,
        fresh_db,
        {"procrastinate": "emails", "schema": "old"},
        {"procrastinate": "x"},
    )
    assert (
        "targets[0].queues[0].procrastinate: unsupported Procrastinate version: 2.x or older" in err
    ), err
    assert (
        'targets[0].queues[1].procrastinate: table "public.procrastinate_jobs" does not exist'
        in err
    ), err


def test_procrastinate_config_errors() -> None:
    (q,) = presets.parse_items("      - procrastinate: emails\n")
    assert (q.label, q.schema_name, q.stuck_after) == ("emails", "public", 300.0)
    presets.assert_config_errors(
        [
            (
                "      - procrastinate: a\n        max_queues: 3\n",
                'max_queues only applies to procrastinate: "*"',
            ),
            ("      - procrastinate: a\n        pg_boss: b\n", "a queue has one of the keys"),
            (
                "      - procrastinate: '*'\n      - procrastinate: '*'\n",
                'give procrastinate: "*" at most once',
            ),
        ]
    )
