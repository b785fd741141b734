"""A database restart under a running exporter (issue 3): the target goes down and its series
are dropped while /metrics keeps answering; once the server is back the exporter reconnects on
its own, every collector succeeds again, and exactly one exporter session exists (no leak).
Uses a dedicated server, since stopping the shared one would break the other tests."""

from __future__ import annotations

import time

import httpx
import psycopg
import pytest

from exporter.db import APPLICATION_NAME
from exporter.demo.pgserver import LocalPostgres
from tests.helpers import Scrape
from tests.pg import selected_bin_dir

COLLECTORS = ("connections", "database", "tables", "statements")


def exporter_sessions(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as c:
        row = c.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (APPLICATION_NAME,)
        ).fetchone()
    return row[0]


@pytest.mark.slow
def test_database_restart(run_exporter):
    fast = {"interval": "1s"}
    with LocalPostgres(bin_dir=selected_bin_dir()) as pg:
        with psycopg.connect(pg.dsn, autocommit=True) as c:
            c.execute("CREATE EXTENSION pg_stat_statements")
        ex = run_exporter(
            {
                "targets": [
                    {
                        "name": "db",
                        "dsn": pg.dsn,
                        "collect_interval": "1s",
                        "connect_timeout": "1s",
                        "collectors": {"tables": fast, "statements": fast},
                    }
                ]
            }
        )

        def all_ok(s: Scrape, since: float = 0) -> bool:
            return s.value("runbook_target_up", target="db") == 1 and all(
                s.value("runbook_collector_success", target="db", collector=c) == 1
                and s.value(
                    "runbook_collector_last_success_timestamp_seconds", target="db", collector=c
                )
                > since
                for c in COLLECTORS
            )

        ex.wait_for(all_ok, what="every collector up before the restart")
        # sessions open only when the runs overlap, never more than max_sessions (default 3)
        assert 1 <= exporter_sessions(pg.dsn) <= 3

        pg.stop()
        stopped = time.monotonic()
        s = ex.wait_for(
            lambda s: (
                s.value("runbook_target_up", target="db") == 0
                and s.value("runbook_collector_success", target="db", collector="connections") == 0
            ),
            timeout=10,
            what="the target reported down",
        )
        assert time.monotonic() - stopped < 10
        # /metrics keeps answering, with the failure visible and the stale series dropped
        assert httpx.get(ex.url, timeout=5).status_code == 200
        assert s.values("runbook_pg_connections", target="db") == []
        assert s.value("runbook_exporter_build_info") == 1

        pg.start()
        restarted = time.time()
        # a background reconnect every 0.5-2 s (jittered) while the server is down: back within
        # seconds, however long the outage (tests/test_db_faults.py measures it)
        ex.wait_for(
            lambda s: all_ok(s, since=restarted),
            timeout=10,
            what="every collector succeeding again after the restart",
        )
        # the reconnect wakes every collector at once, so the pool may grow to its bound
        assert 1 <= exporter_sessions(pg.dsn) <= 3
        time.sleep(2)  # a few more runs of every collector must not open more sessions
        assert 1 <= exporter_sessions(pg.dsn) <= 3
