"""The river: preset on a real PostgreSQL with River's tables made from its documented
migrations (tests/queue_libs/river_schema.py: River 0.43.0, migration 7 -- River is a Go
library, not installable here) and jobs moved with SQL of the shapes River's client runs
(insert, fetch, complete, error, cancel). Timestamps are then moved back with SQL (a job
running for 2 hours, a backlog waiting for 20 minutes) rather than waited for. Every value is
read from a real scrape of the real exporter; promtool evaluates the shipped queue alerts on it.

The seeded `email` queue: 60 available for 20 minutes, 4 scheduled in an hour, 3 running
since 2 hours (past River's 1-hour rescue horizon + stuck_after: stuck), 1 retryable, 2
discarded (max_attempts 1: retries exhausted), 5 completed, 1 cancelled (not counted).
`reports`: 2 available and 1 pending (held by a workflow), nothing finishing; `idle`: a queue
River's client registered, without jobs. Both found by "*".
"""

from __future__ import annotations

import psycopg
import pytest

from tests import presets
from tests.helpers import Scrape, assert_declared, assert_promtool_clean
from tests.presets import ROLES, roles_of, val
from tests.queue_libs import river_schema as river


def seed(dsn: str, schema: str = "public") -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        river.install(c, schema)
        kw = {"schema": schema}
        done = river.insert(c, "email", 5, **kw)
        assert river.fetch(c, "email", 5, **kw) == done
        river.complete(c, done, **kw)
        spent = river.insert(c, "email", 2, max_attempts=1, **kw)
        assert river.fetch(c, "email", 2, **kw) == spent
        river.error(c, spent, **kw)  # attempt 1 of 1: discarded
        retry = river.insert(c, "email", 1, **kw)
        assert river.fetch(c, "email", 1, **kw) == retry
        river.error(c, retry, retry_in=600, **kw)  # attempt 1 of 25: retryable
        gone = river.insert(c, "email", 1, **kw)
        assert river.fetch(c, "email", 1, **kw) == gone
        river.cancel(c, gone, **kw)
        running = river.insert(c, "email", 3, **kw)
        assert river.fetch(c, "email", 3, **kw) == running
        river.backdate(c, running, 7200, **kw)
        backlog = river.insert(c, "email", 60, **kw)
        river.backdate(c, backlog, 1200, **kw)
        river.insert(c, "email", 4, delay=3600, **kw)
        river.insert(c, "reports", 2, **kw)
        c.execute(
            psycopg.sql.SQL(
                "INSERT INTO {} (args, kind, queue, state) VALUES ('{{}}', 'r', 'reports',"
                " 'pending')"
            ).format(psycopg.sql.Identifier(schema, "river_job"))
        )
        river.register_queue(c, "idle", schema)
        c.execute(psycopg.sql.SQL("ANALYZE {}").format(psycopg.sql.Identifier(schema, "river_job")))


# the queue items of the scraped config
ITEMS = (
    {"river": "email"},
    {"river": "*", "thresholds": {"depth_warning": 7}},
)
river_db = presets.database_fixture(seed)


@pytest.fixture
def river_scrape(river_db: str, run_exporter) -> Scrape:
    return presets.scrape_when_ready(
        run_exporter, presets.preset_config(river_db, *ITEMS), "idle", "a River scrape"
    )


def test_river_states_in_a_real_scrape(river_scrape: Scrape) -> None:
    s = river_scrape
    jobs = roles_of(s, ("email", "reports", "idle"))
    assert jobs["email"] == {
        "pending": 60,
        "scheduled": 4,
        "processing": 3,
        "failed": 1,
        "dead": 2,
    }
    assert jobs["reports"] == {**dict.fromkeys(ROLES, 0), "pending": 2, "scheduled": 1}
    assert jobs["idle"] == dict.fromkeys(ROLES, 0)
    assert 1200 <= val(s, "runbook_queue_oldest_pending_age_seconds", "email") < 1300
    assert val(s, "runbook_queue_stuck_jobs", "email") == 3
    assert val(s, "runbook_queue_retries_exhausted_jobs", "email") == 2
    # finalized within the window: 5 completed, 2 discarded; plus the attempt now retryable
    assert val(s, "runbook_queue_recent_jobs", "email", outcome="completed") == 5
    assert val(s, "runbook_queue_recent_jobs", "email", outcome="failed") == 3
    assert val(s, "runbook_queue_jobs_estimated", "email", status="completed") == 5
    ups = presets.ups(s)
    assert ups == {"email": 1, "reports": 1, "idle": 1}
    assert s.value("runbook_queue_depth_threshold", queue="idle", severity="warning") == 7
    assert_declared(s.families)
    assert_promtool_clean(s.text)


def test_queue_alerts_fire_in_promtool_on_the_river_scrape(river_scrape, tmp_path) -> None:
    firing = [
        ("QueueBacklogHigh", "warning", "email"),  # 60 available > 50
        ("QueueOldestPendingTooOld", "warning", "email"),  # 20 min > 15 min
        ("QueueJobsStuck", "warning", "email"),  # running 2 h > 1 h rescue + 5 min
        ("QueueRetriesExhausted", "warning", "email"),  # discarded at max_attempts
        ("QueueFailureRatioHigh", "warning", "email"),  # 3 failed of 8 finished
        ("QueueFailureRatioHigh", "critical", "email"),
        ("QueueWorkerStalled", "warning", "reports"),  # waiting, nothing finished
        ("QueueWorkerStalled", "critical", "reports"),
    ]
    presets.assert_queue_alerts(river_scrape, firing, tmp_path)


def test_doctor_reports_the_river_version_and_a_missing_index(pg_server, capsys) -> None:
    """On a day of finished jobs (the planner's pick on a few rows says nothing), every
    query is bounded by River's own indexes; without one the doctor prints it."""
    from tests.conftest import new_database

    item = "      - river: '*'\n        schema: jobs\n"
    with new_database(pg_server) as dsn:
        with psycopg.connect(dsn, autocommit=True) as c:
            river.install(c, "jobs")
            river.bulk(c, 40000, 300, schema="jobs")
        out = presets.doctor_out(dsn, item, capsys)
        assert "River found in schema jobs: River migration 7 (River 0.40+; river_migration)" in out
        assert "3 River queue(s) are collected" in out
        assert "queues q0, q1, q2: the state query is bounded by an index" in out
        assert "queues q0, q1, q2: the recent query is bounded by an index" in out
        assert "FINDING" not in out, out
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("DROP INDEX jobs.river_job_state_and_finalized_at_index")
            c.execute("DELETE FROM jobs.river_migration")  # River's SQL run by another tool
        out = presets.doctor_out(dsn, item, capsys)
        assert "River migration 7 (River 0.40+; inferred from the catalog)" in out
        assert "queues q0, q1, q2: no index bounds the recent query" in out
        assert "CREATE INDEX CONCURRENTLY river_job_state_and_finalized_at_index" in out


def test_unsupported_missing_and_unknown_river_queues_are_named(fresh_db, run_exporter) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as c:
        river.install(c, "old", version=3)  # River before 0.5: no pending state
        river.install(c)
    err = presets.failed_run_error(
        run_exporter,
        fresh_db,
        {"river": "email", "schema": "old"},
        {"river": "x", "schema": "nowhere"},
        {"river": "emial"},
    )
    assert (
        "targets[0].queues[0].river: unsupported River version: migration version 3 (before "
        "River 0.5); this preset covers River 0.5 to 0.43" in err
    ), err
    assert 'targets[0].queues[1].river: schema "nowhere" does not exist' in err, err
    assert (
        'targets[0].queues[2].river: queue "emial" is not in public.river_queue and no job'
        " names it" in err
    ), err


def test_river_config_shapes_and_errors() -> None:
    (item,) = presets.parse_items("      - river: email\n        rescue_after: 30m\n")
    assert (item.label, item.schema_name, item.rescue_after, item.stuck_after) == (
        "email",
        "public",
        1800.0,
        300.0,
    )
    presets.assert_config_errors(
        [
            ("      - river: a\n        rescue_after: soon\n", "queues[0].rescue_after"),
            ("      - river: a\n        max_attempts: 3\n", "queues[0].max_attempts: unknown key"),
            ("      - river: '*'\n      - river: '*'\n", 'give river: "*" at most once'),
        ]
    )


def test_check_config_says_what_each_preset_of_presets_b_collects(tmp_path) -> None:
    """--check-config takes the River, Oban, Solid Queue and GoodJob items with their own
    options and says what "stuck" means for each."""
    out = presets.check_config_out(
        tmp_path,
        "targets:\n  - name: app\n    dsn: 'host=127.0.0.1 dbname=app'\n    queues:\n"
        "      - river: email\n        rescue_after: 30m\n"
        "      - oban: '*'\n        prefix: jobs\n"
        "      - solid_queue: default\n        process_alive_threshold: 10m\n"
        "      - good_job: '*'\n        schema: gj\n",
    )
    for line in (
        "queue email: River queue email (schema public); stuck: running past rescue_after"
        " 1800s + stuck_after, stuck after 300s",
        "queue *: every Oban queue in schema jobs (at most 50); stuck: executing past"
        " rescue_after 3600s + stuck_after",
        "queue default: Solid Queue queue default (schema public); stuck: claimed by a worker"
        " silent for process_alive_threshold 600s + stuck_after",
        "queue *: every GoodJob queue in schema gj (at most 50); stuck: performed by a process"
        " silent for 300s + stuck_after",
    ):
        assert line in out, out
