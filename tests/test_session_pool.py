"""A slow statement on one source never delays another's collection on the same target
(exporter/db.py: a small pool of sessions per target).

The queue reads a view whose every statement sleeps (real PostgreSQL, pg_sleep in an
uncorrelated subquery: one sleep per statement), so the queues collector holds a session for
most of each run. With the default pool the connections collector keeps its 1 s interval and
its duration and wait stay small; with one session per target (the control, max_sessions 1)
the same connections runs wait behind the queue and fail, which is what the pool fixes.
"""

from __future__ import annotations

import time

import psycopg
import pytest

from exporter import sources
from tests.test_queues import JOBS_TABLE, add_jobs

SLEEP = 0.8  # per statement; within the 1 s statement_timeout the connections collector needs
SLOW_VIEW = f"""
CREATE VIEW slow_jobs AS
SELECT * FROM processing_jobs WHERE (SELECT count(*) FROM pg_sleep({SLEEP})) = 1
"""
C = {"target": "app", "collector": "connections"}
Q = {"target": "app", "collector": "queues"}


def config(dsn: str, max_sessions: int) -> dict:
    only = {"connections", "queues"}
    collectors = {n: {"enabled": False} for n in sources.collector_names() if n not in only}
    # four statements read the view (active, failed, recent, dead letters): ~3.2 s of each 4 s
    collectors["queues"] = {"interval": "4s", "timeout": "4s"}
    return {
        "targets": [
            {
                "name": "app",
                "dsn": dsn,
                "collect_interval": "1s",
                "max_sessions": max_sessions,
                "collectors": collectors,
                # no retry column: the failed count is one subquery, so one sleep, as in the
                # other statements
                "queues": [
                    {
                        "table": "slow_jobs",
                        "dead_letter_table": "slow_jobs",
                        "retry_count_column": None,
                    }
                ],
            }
        ]
    }


@pytest.fixture
def slow_queue(fresh_db: str) -> str:
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(JOBS_TABLE)
        add_jobs(c, 5, "pending")
        c.execute(SLOW_VIEW)
    return fresh_db


def sleeping_sessions(dsn: str) -> int:
    """The exporter's sessions running a statement on the slow view right now."""
    with psycopg.connect(dsn, autocommit=True) as c:
        (n,) = c.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'runbook-exporter'"
            " AND state = 'active' AND query LIKE '%%slow_jobs%%'"
        ).fetchone()
    return n


def watch(ex, dsn: str, seconds: float) -> dict:
    """Scrape every 0.25 s for `seconds` (bounded): what the connections collector did while
    the queue's statements were seen sleeping."""
    first = ex.scrape()
    seen: dict = {"overlapping": 0, "failed": 0, "max_duration": 0.0, "max_wait": 0.0}
    seen["reasons"] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        s = ex.scrape()
        last = ex.exporter.store.snapshot()[("app", "connections")].last
        if last is not None and last.error:
            seen["reasons"].add(last.error)
        if sleeping_sessions(dsn) and s.value("runbook_collector_success", **C) is not None:
            seen["overlapping"] += 1
        if s.value("runbook_collector_success", **C) == 0:
            seen["failed"] += 1
        seen["max_duration"] = max(
            seen["max_duration"], s.value("runbook_collector_duration_seconds", **C) or 0
        )
        seen["max_wait"] = max(
            seen["max_wait"], s.value("runbook_collector_wait_seconds", **C) or 0
        )
        time.sleep(0.25)
    last = ex.scrape()
    seen["runs"] = last.value("runbook_collector_runs_total", **C) - first.value(
        "runbook_collector_runs_total", **C
    )
    seen["errors"] = last.value("runbook_collector_errors_total", **C) - first.value(
        "runbook_collector_errors_total", **C
    )
    seen["queue_duration"] = last.value("runbook_collector_duration_seconds", **Q)
    return seen


def wait_for_a_slow_queue_run(ex) -> None:
    ex.wait_for(
        lambda s: s.value("runbook_collector_duration_seconds", **Q) > 3 * SLEEP,
        timeout=15,
        what="a queue run that slept in each statement",
    )


@pytest.mark.slow
def test_a_slow_queue_does_not_hold_up_the_connections_collector(slow_queue, run_exporter):
    ex = run_exporter(config(slow_queue, max_sessions=3))
    wait_for_a_slow_queue_run(ex)
    seen = watch(ex, slow_queue, 6)
    print("pool of 3:", seen)
    assert seen["overlapping"] >= 5, seen  # the queue really held a session meanwhile
    # the connections collector kept its 1 s interval, every run succeeded, and its duration
    # is its own work: milliseconds, not the queue's seconds
    assert seen["runs"] >= 5 and seen["errors"] == 0 and seen["failed"] == 0, seen
    assert seen["max_duration"] < 0.3 and seen["max_wait"] < 0.3, seen
    assert ex.scrape().value("runbook_queue_up", target="app", queue="slow_jobs") == 1
    assert seen["queue_duration"] > 3 * SLEEP, seen
    with psycopg.connect(slow_queue, autocommit=True) as c:
        (sessions,) = c.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'runbook-exporter'"
        ).fetchone()
    assert 2 <= sessions <= 3  # a second session opened for the other collector, no more


@pytest.mark.slow
def test_the_control_one_session_per_target_holds_the_connections_collector_up(
    slow_queue, run_exporter
):
    """What the pool fixes: with one session the connections runs wait behind the queue's
    statements, at most half their timeout, then fail saying why."""
    ex = run_exporter(config(slow_queue, max_sessions=1))
    wait_for_a_slow_queue_run(ex)
    seen = watch(ex, slow_queue, 6)
    print("one session:", seen)
    assert seen["errors"] >= 2 and seen["failed"] >= 1, seen
    assert any("no free session within 0.5s" in r for r in seen["reasons"]), seen


def test_sessions_idle_past_idle_close_are_closed_keeping_one(fresh_db, monkeypatch):
    """Overlapping runs open up to max_sessions; once nobody needed the extra ones for
    IDLE_CLOSE they are closed (the server sees them go), and the last one stays."""
    import asyncio

    import yaml

    from exporter import db
    from exporter.config import parse_config

    monkeypatch.setattr(db, "IDLE_CLOSE", 0.3)
    text = yaml.safe_dump({"targets": [{"name": "app", "dsn": fresh_db, "max_sessions": 3}]})
    target = parse_config(text, "pool.yml").targets[0]

    def server_sessions() -> int:
        with psycopg.connect(fresh_db, autocommit=True) as c:
            return c.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = 'runbook-exporter'"
            ).fetchone()[0]

    async def main() -> tuple[int, int, int, int]:
        pool = db.TargetDB(target)
        try:

            async def run(seconds: float) -> None:
                async with pool.connection(10) as conn:
                    await conn.execute(f"SELECT pg_sleep({seconds})")

            await asyncio.gather(run(0.3), run(0.3), run(0.3))  # three at once: three sessions
            opened, seen = pool.sessions, await asyncio.to_thread(server_sessions)
            await asyncio.sleep(0.5)  # none of them used for longer than IDLE_CLOSE
            await run(0)
            left = 0
            for _ in range(100):  # bounded: the closed sessions' backends exit at once
                left = await asyncio.to_thread(server_sessions)
                if left == 1:
                    break
                await asyncio.sleep(0.05)
            return opened, seen, pool.sessions, left
        finally:
            await pool.close()

    opened, seen, after, left = asyncio.run(main())
    assert (opened, seen) == (3, 3)
    assert (after, left) == (1, 1)
    deadline = time.monotonic() + 5
    while server_sessions() > 0 and time.monotonic() < deadline:  # bounded: the pool is closed
        time.sleep(0.05)
    assert server_sessions() == 0


def test_a_server_that_never_answers_fails_the_run_with_its_reason_in_time():
    """A listener that takes the connection and never speaks (a frozen or overloaded server):
    opening the session gives up before the run's own timeout, with the reason, and the
    target is down with its background reconnect scheduled, rather than the run being cut
    by the scheduler with only "timed out"."""
    import asyncio
    import socket

    import yaml

    from exporter import db
    from exporter.config import parse_config

    with socket.create_server(("127.0.0.1", 0), backlog=4) as silent:  # never accept()ed
        port = silent.getsockname()[1]
        text = yaml.safe_dump(
            {
                "targets": [
                    {
                        "name": "app",
                        "dsn": f"postgresql://monitor@127.0.0.1:{port}/app",
                        "collect_interval": "2s",
                        "collect_timeout": "1s",
                    }
                ]
            }
        )
        target = parse_config(text, "silent.yml").targets[0]

        async def main() -> tuple[str, float, int, int]:
            pool = db.TargetDB(target)
            started = time.monotonic()
            try:
                async with pool.connection(1.0):
                    raise AssertionError("a session from a server that never answered")
            except db.TargetUnavailable as e:
                return str(e), time.monotonic() - started, pool.up, pool.sessions
            finally:
                await pool.close()

        reason, took, up, sessions = asyncio.run(main())
    assert reason == "no answer from the server within 1s opening a session"
    assert took < 1.0  # before the scheduler would cut the run at its 1 s timeout
    assert (up, sessions) == (0, 0)
