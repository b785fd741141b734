"""The solid_queue: preset on a real PostgreSQL with Solid Queue's tables made from its
documented schema (tests/queue_libs/solid_queue_schema.py: solid_queue 1.5.0's
queue_schema.rb -- a Ruby gem, not installable here) and jobs moved with SQL of the shapes
Solid Queue writes (enqueue into ready / scheduled / blocked executions, a worker claiming,
finishing and failing, its heartbeat), in Rails' UTC timestamps without a time zone.
Timestamps are then moved back with SQL rather than waited for. Every value is read from a real
scrape of the real exporter; promtool evaluates the shipped queue alerts on it.

The seeded `default` queue: 60 ready for 20 minutes, 4 scheduled in an hour, 5 claimed -- 3 by
a worker whose heartbeat stopped an hour ago (past process_alive_threshold 5 min +
stuck_after: stuck), 1 by a worker gone from the processes table (stuck), 1 by a live one
--, 2 failed executions (dead, retries exhausted), 5 finished. `reports`: 2 blocked by a
concurrency limit (pending), nothing finishing; `idle`: one job finished two days ago. Both
found by "*".
"""

from __future__ import annotations

import psycopg
import pytest

from tests import presets
from tests.helpers import Scrape, assert_declared, assert_promtool_clean
from tests.presets import ROLES, roles_of, val
from tests.queue_libs import solid_queue_schema as sq


def seed(dsn: str, schema: str = "public") -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        sq.install(c, schema)
        kw = {"schema": schema}
        dead_worker = sq.register_process(c, "worker-dead", **kw)
        live_worker = sq.register_process(c, "worker-live", **kw)
        done = sq.enqueue(c, "default", 5, **kw)
        assert sq.claim(c, "default", 5, live_worker, **kw) == done
        sq.finish(c, done, **kw)
        failed = sq.enqueue(c, "default", 2, **kw)
        assert sq.claim(c, "default", 2, live_worker, **kw) == failed
        sq.fail(c, failed, **kw)
        stuck = sq.enqueue(c, "default", 3, **kw)
        assert sq.claim(c, "default", 3, dead_worker, **kw) == stuck
        sq.heartbeat(c, dead_worker, ago=3600, **kw)
        running = sq.enqueue(c, "default", 1, **kw)
        assert sq.claim(c, "default", 1, live_worker, **kw) == running
        # a worker gone from solid_queue_processes (deregistered) still holding a job
        gone_worker = sq.register_process(c, "worker-gone", **kw)
        orphan = sq.enqueue(c, "default", 1, **kw)
        assert sq.claim(c, "default", 1, gone_worker, **kw) == orphan
        c.execute(
            psycopg.sql.SQL("DELETE FROM {} WHERE id = %s").format(
                psycopg.sql.Identifier(schema, "solid_queue_processes")
            ),
            (gone_worker,),
        )
        backlog = sq.enqueue(c, "default", 60, **kw)
        sq.backdate(c, backlog, 1200, **kw)
        sq.enqueue(c, "default", 4, delay=3600, **kw)
        sq.enqueue(c, "reports", 2, concurrency_key="ReportJob/1", **kw)
        old = sq.enqueue(c, "idle", 1, **kw)
        assert sq.claim(c, "idle", 1, live_worker, **kw) == old
        sq.finish(c, old, **kw)
        sq.backdate(c, old, 2 * 86400, **kw)
        c.execute(
            psycopg.sql.SQL("ANALYZE {}").format(psycopg.sql.Identifier(schema, "solid_queue_jobs"))
        )


# the queue items of the scraped config
ITEMS = (
    {"solid_queue": "default"},
    {"solid_queue": "*", "thresholds": {"depth_warning": 7}},
)
sq_db = presets.database_fixture(seed)


@pytest.fixture
def sq_scrape(sq_db: str, run_exporter) -> Scrape:
    return presets.scrape_when_ready(
        run_exporter, presets.preset_config(sq_db, *ITEMS), "idle", "a Solid Queue scrape"
    )


def test_solid_queue_states_in_a_real_scrape(sq_scrape: Scrape) -> None:
    s = sq_scrape
    jobs = roles_of(s, ("default", "reports", "idle"))
    assert jobs["default"] == {
        "pending": 60,
        "scheduled": 4,
        "processing": 5,
        "failed": 0,
        "dead": 2,
    }
    assert jobs["reports"] == {**dict.fromkeys(ROLES, 0), "pending": 2}  # blocked
    assert jobs["idle"] == dict.fromkeys(ROLES, 0)
    assert 1200 <= val(s, "runbook_queue_oldest_pending_age_seconds", "default") < 1300
    # 3 of a silent worker, 1 of a worker gone; the live worker's job is not stuck
    assert val(s, "runbook_queue_stuck_jobs", "default") == 4
    assert val(s, "runbook_queue_retries_exhausted_jobs", "default") == 2
    assert val(s, "runbook_queue_recent_jobs", "default", outcome="completed") == 5
    assert val(s, "runbook_queue_recent_jobs", "default", outcome="failed") == 2
    assert val(s, "runbook_queue_recent_jobs", "idle", outcome="completed") == 0
    # a planner estimate (the queue and finished conditions taken as independent)
    assert 3 <= val(s, "runbook_queue_jobs_estimated", "default", status="completed") <= 10
    ups = presets.ups(s)
    assert ups == {"default": 1, "reports": 1, "idle": 1}
    assert_declared(s.families)
    assert_promtool_clean(s.text)


def test_queue_alerts_fire_in_promtool_on_the_solid_queue_scrape(sq_scrape, tmp_path) -> None:
    firing = [
        ("QueueBacklogHigh", "warning", "default"),  # 60 ready > 50
        ("QueueOldestPendingTooOld", "warning", "default"),  # 20 min > 15 min
        ("QueueJobsStuck", "warning", "default"),  # claimed by a worker without heartbeat
        ("QueueRetriesExhausted", "warning", "default"),  # failed executions
        ("QueueFailureRatioHigh", "warning", "default"),  # 2 failed of 7 finished
        ("QueueFailureRatioHigh", "critical", "default"),
        ("QueueWorkerStalled", "warning", "reports"),  # blocked, nothing finished
        ("QueueWorkerStalled", "critical", "reports"),
    ]
    presets.assert_queue_alerts(sq_scrape, firing, tmp_path)


def test_doctor_reports_the_solid_queue_schema_and_a_missing_index(pg_server, capsys) -> None:
    """On a day of finished jobs, every query is bounded by Solid Queue's own indexes (the
    execution tables hold unfinished jobs only); without one the doctor prints it."""
    from tests.conftest import new_database

    item = "      - solid_queue: '*'\n        schema: queue\n"
    with new_database(pg_server) as dsn:
        with psycopg.connect(dsn, autocommit=True) as c:
            sq.install(c, "queue")
            sq.bulk(c, 40000, 300, schema="queue")
        out = presets.doctor_out(dsn, item, capsys)
        assert "Solid Queue found in schema queue: Solid Queue 0.6 to 1.5 schema" in out
        assert "queues q0, q1, q2: the state query is bounded by an index" in out
        assert "queues q0, q1, q2: the recent query is bounded by an index" in out
        assert "FINDING" not in out, out
        with psycopg.connect(dsn, autocommit=True) as c:
            # either of Solid Queue's indexes on finished_at bounds it: without both
            c.execute("DROP INDEX queue.index_solid_queue_jobs_for_filtering")
            c.execute("DROP INDEX queue.index_solid_queue_jobs_on_finished_at")
        out = presets.doctor_out(dsn, item, capsys)
        assert "queues q0, q1, q2: no index bounds the recent query" in out
        assert "CREATE INDEX CONCURRENTLY index_solid_queue_jobs_for_filtering" in out


def test_missing_and_unsupported_solid_queue_are_named(fresh_db, run_exporter) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as c:
        sq.install(c, "old")
        c.execute("DROP TABLE old.solid_queue_blocked_executions")
    err = presets.failed_run_error(
        run_exporter, fresh_db, {"solid_queue": "default", "schema": "old"}, {"solid_queue": "x"}
    )
    assert (
        "targets[0].queues[0].solid_queue: unsupported Solid Queue version: no table"
        " solid_queue_blocked_executions; this preset covers Solid Queue 0.6 to 1.5" in err
    ), err
    assert 'targets[0].queues[1].solid_queue: table "solid_queue_jobs" does not exist' in err


def test_solid_queue_config_shapes_and_errors() -> None:
    item = "      - solid_queue: default\n        process_alive_threshold: 10m\n"
    (item,) = presets.parse_items(item)
    assert (item.label, item.schema_name, item.process_alive_threshold) == (
        "default",
        "public",
        600.0,
    )
    presets.assert_config_errors(
        [
            (
                "      - solid_queue: a\n        rescue_after: 1h\n",
                "queues[0].rescue_after: unknown",
            ),
            ("      - solid_queue: ''\n", "give one of the library's queue names"),
        ]
    )
