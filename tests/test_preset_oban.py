"""The oban: preset on a real PostgreSQL with Oban's tables made from its documented
migrations (tests/queue_libs/oban_schema.py: Oban 2.23.0, migration 14 -- Oban is an Elixir
library, not installable here) and jobs moved with SQL of the shapes Oban's Basic engine runs
(insert, fetch, complete, error, cancel), in Oban's UTC timestamps without a time zone.
Timestamps are then moved back with SQL (a job executing for 2 hours, a backlog waiting for 20
minutes) rather than waited for. Every value is read from a real scrape of the real exporter;
promtool evaluates the shipped queue alerts on it.

The seeded `mailers` queue: 60 available for 20 minutes, 4 scheduled in an hour, 3 executing
since 2 hours (past Lifeline's 60-minute rescue_after + stuck_after: stuck), 1 retryable, 2
discarded (max_attempts 1: retries exhausted), 5 completed, 1 cancelled (not counted).
`reports`: 2 available and 1 suspended, nothing finishing; `exports`: 1 scheduled. Both found
by "*" (Oban has no table of queues: "*" finds the queues of its unfinished jobs).
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from tests import presets
from tests.helpers import Scrape, assert_declared, assert_promtool_clean
from tests.presets import ROLES, roles_of, val
from tests.queue_libs import oban_schema as oban


def seed(dsn: str, prefix: str = "public") -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        oban.install(c, prefix)
        kw = {"prefix": prefix}
        done = oban.insert(c, "mailers", 5, **kw)
        assert oban.fetch(c, "mailers", 5, **kw) == done
        oban.complete(c, done, **kw)
        spent = oban.insert(c, "mailers", 2, max_attempts=1, **kw)
        assert oban.fetch(c, "mailers", 2, **kw) == spent
        oban.error(c, spent, **kw)  # attempt 1 of 1: discarded
        retry = oban.insert(c, "mailers", 1, **kw)
        assert oban.fetch(c, "mailers", 1, **kw) == retry
        oban.error(c, retry, backoff=600, **kw)  # attempt 1 of 20: retryable
        gone = oban.insert(c, "mailers", 1, **kw)
        assert oban.fetch(c, "mailers", 1, **kw) == gone
        oban.cancel(c, gone, **kw)
        running = oban.insert(c, "mailers", 3, **kw)
        assert oban.fetch(c, "mailers", 3, **kw) == running
        oban.backdate(c, running, 7200, **kw)
        backlog = oban.insert(c, "mailers", 60, **kw)
        oban.backdate(c, backlog, 1200, **kw)
        oban.insert(c, "mailers", 4, delay=3600, **kw)
        oban.insert(c, "reports", 2, **kw)
        held = oban.insert(c, "reports", 1, delay=3600, **kw)
        c.execute(
            sql.SQL("UPDATE {} SET state = 'suspended' WHERE id = ANY(%s)").format(
                sql.Identifier(prefix, "oban_jobs")
            ),
            (held,),
        )
        oban.insert(c, "exports", 1, delay=60, **kw)
        c.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(prefix, "oban_jobs")))


# the queue items of the scraped config
ITEMS = (
    {"oban": "mailers"},
    {"oban": "*", "thresholds": {"depth_warning": 7}},
)
oban_db = presets.database_fixture(seed)


@pytest.fixture
def oban_scrape(oban_db: str, run_exporter) -> Scrape:
    return presets.scrape_when_ready(
        run_exporter, presets.preset_config(oban_db, *ITEMS), "exports", "an Oban scrape"
    )


def test_oban_states_in_a_real_scrape(oban_scrape: Scrape) -> None:
    s = oban_scrape
    jobs = roles_of(s, ("mailers", "reports", "exports"))
    assert jobs["mailers"] == {
        "pending": 60,
        "scheduled": 4,
        "processing": 3,
        "failed": 1,
        "dead": 2,
    }
    assert jobs["reports"] == {
        "pending": 2,
        "scheduled": 1,
        "processing": 0,
        "failed": 0,
        "dead": 0,
    }
    assert jobs["exports"] == {**dict.fromkeys(ROLES, 0), "scheduled": 1}
    # UTC without a time zone, read as such whatever the session's TimeZone
    assert 1200 <= val(s, "runbook_queue_oldest_pending_age_seconds", "mailers") < 1300
    assert val(s, "runbook_queue_stuck_jobs", "mailers") == 3
    assert val(s, "runbook_queue_retries_exhausted_jobs", "mailers") == 2
    # completed_at / discarded_at within the window: 5 and 2; plus the attempt now retryable
    assert val(s, "runbook_queue_recent_jobs", "mailers", outcome="completed") == 5
    assert val(s, "runbook_queue_recent_jobs", "mailers", outcome="failed") == 3
    assert val(s, "runbook_queue_jobs_estimated", "mailers", status="completed") == 5
    ups = presets.ups(s)
    assert ups == {"mailers": 1, "reports": 1, "exports": 1}
    assert s.value("runbook_queue_depth_threshold", queue="reports", severity="warning") == 7
    assert_declared(s.families)
    assert_promtool_clean(s.text)


def test_queue_alerts_fire_in_promtool_on_the_oban_scrape(oban_scrape, tmp_path) -> None:
    firing = [
        ("QueueBacklogHigh", "warning", "mailers"),  # 60 available > 50
        ("QueueOldestPendingTooOld", "warning", "mailers"),  # 20 min > 15 min
        ("QueueJobsStuck", "warning", "mailers"),  # executing 2 h > 60 min rescue + 5 min
        ("QueueRetriesExhausted", "warning", "mailers"),  # discarded at max_attempts
        ("QueueFailureRatioHigh", "warning", "mailers"),  # 3 failed of 8 finished
        ("QueueFailureRatioHigh", "critical", "mailers"),
        ("QueueWorkerStalled", "warning", "reports"),  # waiting, nothing finished
        ("QueueWorkerStalled", "critical", "reports"),
    ]
    presets.assert_queue_alerts(oban_scrape, firing, tmp_path)


def test_doctor_reports_the_oban_version_and_the_index_recent_needs(pg_server, capsys) -> None:
    """On a day of finished jobs (a Pruner keeping them that long), the state query is
    bounded by Oban's (state, queue, ...) index; no Oban index has completed_at, so counting
    the recently completed reads every completed job kept: the doctor says so and prints the
    index that bounds it."""
    from tests.conftest import new_database

    item = "      - oban: '*'\n        prefix: oban\n"
    with new_database(pg_server) as dsn:
        with psycopg.connect(dsn, autocommit=True) as c:
            oban.install(c, "oban")
            oban.bulk(c, 40000, 300, prefix="oban")
        out = presets.doctor_out(dsn, item, capsys)
        assert "Oban found in schema oban: Oban migration 14 (Oban 2.21 to 2.23;" in out
        assert "queues q0, q1, q2: the state query is bounded by an index" in out
        assert "queues q0, q1, q2: no index bounds the recent query" in out
        assert "CREATE INDEX CONCURRENTLY ON oban.oban_jobs (state, completed_at);" in out
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("CREATE INDEX ON oban.oban_jobs (state, completed_at)")
            c.execute("COMMENT ON TABLE oban.oban_jobs IS NULL")  # migrated by hand
            c.execute("ANALYZE oban.oban_jobs")
        out = presets.doctor_out(dsn, item, capsys)
        assert "Oban migration 14 (Oban 2.21 to 2.23; inferred from the catalog)" in out
        assert "FINDING" not in out, out


def test_unsupported_and_missing_oban_are_named(fresh_db, run_exporter) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as c:
        oban.install(c, "old", version=8)  # Oban 2.2: no cancelled state yet
    err = presets.failed_run_error(
        run_exporter, fresh_db, {"oban": "mailers", "schema": "old"}, {"oban": "x"}
    )
    assert (
        "targets[0].queues[0].oban: unsupported Oban version: migration 8 (before Oban 2.3);"
        " this preset covers Oban 2.3 to 2.23" in err
    ), err
    assert 'targets[0].queues[1].oban: table "oban_jobs" does not exist' in err, err


def test_oban_config_shapes_and_errors() -> None:
    (item,) = presets.parse_items("      - oban: mailers\n        prefix: jobs\n")
    assert (item.label, item.schema_name, item.rescue_after) == ("mailers", "jobs", 3600.0)
    presets.assert_config_errors(
        [
            ("      - oban: a\n        prefix: a\n        schema: b\n", "give schema or prefix"),
            ("      - oban: a\n        rescue_after: -1s\n", "queues[0].rescue_after"),
            ("      - oban: a\n        max_attempts: 3\n", "queues[0].max_attempts: unknown key"),
        ]
    )
