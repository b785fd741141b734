"""The good_job: preset on a real PostgreSQL with GoodJob's tables made from its documented
install migration (tests/queue_libs/good_job_schema.py: good_job 4.19.2 -- a Ruby gem, not
installable here) and jobs moved with SQL of the shapes GoodJob 4 writes (enqueue, a process
performing, succeeding, an error Active Job retries, an error that ends the job, the process
refresh), in Rails' UTC timestamps without a time zone. Timestamps are then moved back with SQL
rather than waited for. Every value is read from a real scrape of the real exporter; promtool
evaluates the shipped queue alerts on it.

The seeded `default` queue: 60 queued for 20 minutes, 4 scheduled in an hour, 5 performing --
3 by a process that stopped refreshing an hour ago (past GoodJob's 5-minute expiry +
stuck_after: stuck), 1 without locked_by_id since 2 hours (stuck), 1 by a live one --, 1
errored and waiting for its retry, 2 discarded after their last retry (retry_stopped), 5
succeeded. `reports`: 2 queued, nothing finishing;
`idle`: one job succeeded two days ago. Both found by "*".
"""

from __future__ import annotations

import psycopg
import pytest

from tests import presets
from tests.helpers import Scrape, assert_declared, assert_promtool_clean
from tests.presets import ROLES, roles_of, val
from tests.queue_libs import good_job_schema as gj


def seed(dsn: str, schema: str = "public") -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        gj.install(c, schema)
        kw = {"schema": schema}
        dead_process = gj.register_process(c, **kw)
        live_process = gj.register_process(c, **kw)
        done = gj.enqueue(c, "default", 5, **kw)
        assert gj.perform(c, "default", 5, live_process, **kw) == sorted(done)
        gj.succeed(c, done, **kw)
        spent = gj.enqueue(c, "default", 2, **kw)
        assert gj.perform(c, "default", 2, live_process, **kw) == sorted(spent)
        gj.discard(c, spent, **kw)
        retry = gj.enqueue(c, "default", 1, **kw)
        assert gj.perform(c, "default", 1, live_process, **kw) == retry
        gj.retry(c, retry, wait=600, **kw)
        stuck = gj.enqueue(c, "default", 3, **kw)
        assert gj.perform(c, "default", 3, dead_process, **kw) == sorted(stuck)
        gj.heartbeat(c, dead_process, ago=3600, **kw)
        running = gj.enqueue(c, "default", 1, **kw)
        assert gj.perform(c, "default", 1, live_process, **kw) == running
        # performing without locked_by_id (a session advisory lock only), for 2 hours
        unlocked = gj.enqueue(c, "default", 1, **kw)
        assert gj.perform(c, "default", 1, live_process, **kw) == unlocked
        c.execute(
            psycopg.sql.SQL("UPDATE {} SET locked_by_id = NULL WHERE id = %s::uuid").format(
                psycopg.sql.Identifier(schema, "good_jobs")
            ),
            (unlocked[0],),
        )
        gj.backdate(c, unlocked, 7200, **kw)
        backlog = gj.enqueue(c, "default", 60, **kw)
        gj.backdate(c, backlog, 1200, **kw)
        gj.enqueue(c, "default", 4, delay=3600, **kw)
        gj.enqueue(c, "reports", 2, **kw)
        old = gj.enqueue(c, "idle", 1, **kw)
        assert gj.perform(c, "idle", 1, live_process, **kw) == old
        gj.succeed(c, old, **kw)
        gj.backdate(c, old, 2 * 86400, **kw)
        c.execute(psycopg.sql.SQL("ANALYZE {}").format(psycopg.sql.Identifier(schema, "good_jobs")))


# the queue items of the scraped config
ITEMS = (
    {"good_job": "default"},
    {"good_job": "*", "thresholds": {"depth_warning": 7}},
)
gj_db = presets.database_fixture(seed)


@pytest.fixture
def gj_scrape(gj_db: str, run_exporter) -> Scrape:
    return presets.scrape_when_ready(
        run_exporter, presets.preset_config(gj_db, *ITEMS), "idle", "a GoodJob scrape"
    )


def test_good_job_states_in_a_real_scrape(gj_scrape: Scrape) -> None:
    s = gj_scrape
    jobs = roles_of(s, ("default", "reports", "idle"))
    assert jobs["default"] == {
        "pending": 60,
        "scheduled": 4,
        "processing": 5,
        "failed": 1,
        "dead": 2,
    }
    assert jobs["reports"] == {**dict.fromkeys(ROLES, 0), "pending": 2}
    assert jobs["idle"] == dict.fromkeys(ROLES, 0)
    assert 1200 <= val(s, "runbook_queue_oldest_pending_age_seconds", "default") < 1300
    # 3 of an expired process, 1 performing 2 h without locked_by_id; the live one's is not
    assert val(s, "runbook_queue_stuck_jobs", "default") == 4
    assert val(s, "runbook_queue_retries_exhausted_jobs", "default") == 2
    # finished within the window: 5 succeeded, 2 discarded; plus the error awaiting its retry
    assert val(s, "runbook_queue_recent_jobs", "default", outcome="completed") == 5
    assert val(s, "runbook_queue_recent_jobs", "default", outcome="failed") == 3
    assert val(s, "runbook_queue_recent_jobs", "idle", outcome="completed") == 0
    # a planner estimate (the queue and finished conditions taken as independent)
    assert 3 <= val(s, "runbook_queue_jobs_estimated", "default", status="completed") <= 10
    ups = presets.ups(s)
    assert ups == {"default": 1, "reports": 1, "idle": 1}
    assert_declared(s.families)
    assert_promtool_clean(s.text)


def test_queue_alerts_fire_in_promtool_on_the_good_job_scrape(gj_scrape, tmp_path) -> None:
    firing = [
        ("QueueBacklogHigh", "warning", "default"),  # 60 queued > 50
        ("QueueOldestPendingTooOld", "warning", "default"),  # 20 min > 15 min
        ("QueueJobsStuck", "warning", "default"),  # its process expired an hour ago
        ("QueueRetriesExhausted", "warning", "default"),  # retry_stopped
        ("QueueFailureRatioHigh", "warning", "default"),  # 3 failed of 8 finished
        ("QueueFailureRatioHigh", "critical", "default"),
        ("QueueWorkerStalled", "warning", "reports"),  # queued, nothing finished
        ("QueueWorkerStalled", "critical", "reports"),
    ]
    presets.assert_queue_alerts(gj_scrape, firing, tmp_path)


def test_doctor_reports_the_good_job_schema_and_a_missing_index(pg_server, capsys) -> None:
    """On a day of finished jobs, every query is bounded by GoodJob's own indexes; without
    one the doctor prints it."""
    from tests.conftest import new_database

    item = "      - good_job: '*'\n        schema: jobs\n"
    with new_database(pg_server) as dsn:
        with psycopg.connect(dsn, autocommit=True) as c:
            gj.install(c, "jobs")
            gj.bulk(c, 40000, 300, schema="jobs")
        out = presets.doctor_out(dsn, item, capsys)
        assert "GoodJob found in schema jobs: GoodJob 4.18+ schema" in out
        assert "queues q0, q1, q2: the state query is bounded by an index" in out
        assert "queues q0, q1, q2: the recent query is bounded by an index" in out
        assert "FINDING" not in out, out
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("DROP INDEX jobs.index_good_jobs_jobs_on_finished_at_only")
            c.execute("DROP INDEX jobs.index_good_jobs_on_queue_name")  # as before 4.18
        out = presets.doctor_out(dsn, item, capsys)
        assert "GoodJob 4.0 to 4.17 schema" in out
        assert "queues q0, q1, q2: no index bounds the recent query" in out
        assert "CREATE INDEX CONCURRENTLY index_good_jobs_jobs_on_finished_at_only" in out


def test_missing_and_unsupported_good_job_are_named(fresh_db, run_exporter) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as c:
        gj.install(c, "old")
        c.execute("ALTER TABLE old.good_jobs DROP COLUMN error_event")  # GoodJob 3.x
    err = presets.failed_run_error(
        run_exporter, fresh_db, {"good_job": "default", "schema": "old"}, {"good_job": "x"}
    )
    assert (
        "targets[0].queues[0].good_job: unsupported GoodJob version: good_jobs has no column"
        " error_event (before 4.0); this preset covers GoodJob 4.0 to 4.19" in err
    ), err
    assert 'targets[0].queues[1].good_job: table "good_jobs" does not exist' in err


def test_good_job_config_shapes_and_errors() -> None:
    (item,) = presets.parse_items("      - good_job: '*'\n        schema: jobs\n")
    assert (item.label, item.schema_name, item.max_queues) == (None, "jobs", 50)
    presets.assert_config_errors(
        [
            ("      - good_job: a\n        rescue_after: 1h\n", "queues[0].rescue_after: unknown"),
            ("      - good_job: '*'\n        name: x\n", "queues[0].name: name is for one queue"),
        ]
    )
