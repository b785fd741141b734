"""The exporter through a real PgBouncer (Debian's 1.18) in transaction mode -- what Supabase's
Supavisor does on port 6543 -- with `pooler: transaction`.

A transaction-mode pooler gives each transaction whichever server connection is free, so a
client must not rely on its session: a SET lands on one server connection and stays there for
the next client, and a prepared statement is missing on the next server (PgBouncer before 1.21
does not track them). The pool here has two server connections used in turn (round robin,
tests/pgbouncer.py), and the first test shows that this setup does catch both mistakes in a
plain client. The others prove, for the real exporter: every collector works run after run
with no prepared-statement error; lock_timeout and statement_timeout still cut queries (they
are set per transaction, SET LOCAL); nothing the exporter sets is seen by another client of the
same pool; the doctor works through it too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from exporter.config import parse_config
from exporter.doctor import run_doctor
from exporter.sources import collector_names
from tests import incidents, pgmq_schema, pgnet_schema
from tests.conftest import new_database
from tests.pgbouncer import PgBouncer, server_pid

pytestmark = pytest.mark.slow

# the server's defaults, which every client of the pool must keep seeing
DEFAULTS = {
    "statement_timeout": "0",
    "lock_timeout": "0",
    "idle_in_transaction_session_timeout": "0",
    "default_transaction_read_only": "off",
}
SHOW = "SELECT " + ", ".join(f"current_setting('{name}')" for name in DEFAULTS)


@pytest.fixture(scope="module")
def bouncer(pg_server: str) -> Iterator[PgBouncer]:
    with PgBouncer(pg_server, pool_size=2) as b:
        yield b


@pytest.fixture
def pooled_db(pg_server: str, bouncer: PgBouncer) -> Iterator[tuple[str, str]]:
    """(direct DSN, DSN through PgBouncer) of a new database with a queue in trouble, a second
    table queue, two pgmq queues and pg_net's tables with failing calls; the database's pool
    filled."""
    with new_database(pg_server) as dsn:
        incidents.create_queue(dsn)
        incidents.seed_queue_incident(dsn)
        pgnet_schema.seed_incident(dsn)
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("CREATE TABLE other_jobs (LIKE processing_jobs INCLUDING ALL)")
            c.execute("INSERT INTO other_jobs (status) SELECT 'pending' FROM generate_series(1, 4)")
            pgmq_schema.install(c)
            for name in ("email", "sms"):
                pgmq_schema.create_queue(c, name)
            pgmq_schema.send(c, "email", 5)
            pgmq_schema.send(c, "sms", 2)
        dbname = conninfo_to_dict(dsn)["dbname"]
        bouncer.fill_pool(dbname)
        yield dsn, bouncer.dsn(dbname)


def target(dsn: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "app",
        "dsn": dsn,
        "pooler": "transaction",
        "collect_interval": "1s",
        "statement_timeout": "800ms",
        "lock_timeout": "300ms",
        "collectors": {
            "tables": {"interval": "1s"},
            "statements": {"interval": "1s"},
            "pgnet": {"interval": "1s"},
        },
        "queues": [
            {"table": "public.processing_jobs"},
            {"table": "public.other_jobs"},
            {"pgmq": "email"},
            {"pgmq": "*"},
        ],
        **extra,
    }


def other_client_settings(dsn: str, transactions: int = 6) -> set[tuple[str, ...]]:
    """What another client of the pool sees, over several transactions (so over every server
    connection of the pool)."""
    seen = set()
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as c:
        for _ in range(transactions):
            seen.add(c.execute(SHOW).fetchone())
    return seen


def test_this_pool_catches_session_state_and_prepared_statements(pooled_db):
    """The negative controls: a plain psycopg client does break here."""
    _, pooled = pooled_db
    with psycopg.connect(pooled, autocommit=True) as c:
        pids = {server_pid(c) for _ in range(4)}
        assert len(pids) == 2  # consecutive transactions go to different server connections
    prepared_missing = (
        psycopg.errors.InvalidSqlStatementName,
        psycopg.errors.DuplicatePreparedStatement,
    )
    # psycopg prepares a statement after 5 executions
    with psycopg.connect(pooled, autocommit=True) as c, pytest.raises(prepared_missing):
        for i in range(12):
            c.execute("SELECT %s::int", (i,))
    with psycopg.connect(pooled, autocommit=True, prepare_threshold=None) as c:
        c.execute("SET lock_timeout = '1234ms'")  # a session setting ...
        assert ("0", "1234ms", "0", "off") in other_client_settings(pooled)  # ... leaks
        for _ in range(4):
            c.execute("RESET lock_timeout")  # on both server connections
    assert other_client_settings(pooled) == {tuple(DEFAULTS.values())}


def test_every_collector_works_through_transaction_pooling_and_leaves_nothing(
    pooled_db, run_exporter
):
    direct, pooled = pooled_db
    ex = run_exporter({"targets": [target(pooled)]})
    names = set(collector_names())

    def runs(s) -> dict[str, float]:
        return {
            ls["collector"]: s.value("runbook_collector_runs_total", **ls)
            for ls in s.labelsets("runbook_collector_runs_total")
        }

    leaks: set[tuple[str, ...]] = set()

    def many_runs(s) -> bool:
        leaks.update(other_client_settings(pooled, 2))  # meanwhile, another client of the pool
        done = runs(s)
        # past psycopg's default prepare threshold (5) for every statement of every collector
        return set(done) >= names and min(done.values()) >= 8

    s = ex.wait_for(many_runs, timeout=60, what="8 runs of every collector")
    for name in names:
        assert s.value("runbook_collector_success", target="app", collector=name) == 1, name
        assert s.value("runbook_collector_errors_total", target="app", collector=name) == 0, name
    assert leaks == {tuple(DEFAULTS.values())}, leaks
    # what the collectors measured through the pooler is right
    assert s.value("runbook_target_up", target="app") == 1
    assert s.value("runbook_queue_stuck_jobs", target="app", queue="processing_jobs") == 3
    assert s.value("runbook_queue_jobs", target="app", queue="other_jobs", status="pending") == 4
    assert s.value("runbook_queue_jobs", target="app", queue="email", status="pending") == 5
    assert s.value("runbook_queue_jobs", target="app", queue="sms", status="pending") == 2
    assert s.value("runbook_pgnet_recent_responses", target="app", outcome="4xx") == 12
    # no run left a transaction open on a server connection
    with psycopg.connect(direct, autocommit=True) as c:
        open_tx = c.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND state LIKE 'idle in transaction%'"
        ).fetchone()[0]
    assert open_tx == 0


def test_timeouts_bound_queries_through_the_pooler(pooled_db, run_exporter):
    direct, pooled = pooled_db
    ex = run_exporter({"targets": [target(pooled)]})
    ex.wait_for(
        lambda s: s.value("runbook_collector_success", target="app", collector="queues") == 1,
        what="queues collected",
    )
    # another session holds other_jobs: the queue's query waits for the lock, lock_timeout
    # (SET LOCAL in the run's transaction) cuts it; the savepoint keeps the other queue served
    with psycopg.connect(direct) as locker:
        locker.execute("LOCK TABLE other_jobs IN ACCESS EXCLUSIVE MODE")
        s = ex.wait_for(
            lambda s: s.value("runbook_queue_up", target="app", queue="other_jobs") == 0,
            what="the locked queue down",
        )
        assert s.value("runbook_queue_up", target="app", queue="processing_jobs") == 1
        assert s.value("runbook_collector_success", target="app", collector="queues") == 0
        assert s.value("runbook_collector_duration_seconds", target="app", collector="queues") < 2
        assert other_client_settings(pooled) == {tuple(DEFAULTS.values())}
        locker.rollback()
    s = ex.wait_for(
        lambda s: s.value("runbook_queue_up", target="app", queue="other_jobs") == 1,
        what="the queue back once the lock is gone",
    )

    # a statement slower than statement_timeout is cancelled by the server, through the pooler
    db = ex.exporter.dbs["app"]

    async def slow() -> tuple[type, float]:
        started = time.monotonic()
        try:
            async with db.connection(10) as conn:
                await conn.execute("SELECT pg_sleep(5)")
        except psycopg.Error as e:
            return type(e), time.monotonic() - started
        return type(None), time.monotonic() - started

    error, took = asyncio.run_coroutine_threadsafe(slow(), ex.exporter._loop).result(15)
    assert error is psycopg.errors.QueryCanceled
    assert 0.7 < took < 2.5, took
    assert other_client_settings(pooled) == {tuple(DEFAULTS.values())}
    # and the session is usable at once: the next runs succeed
    before = s.value("runbook_collector_runs_total", target="app", collector="database")
    ex.wait_for(
        lambda s: (
            s.value("runbook_collector_runs_total", target="app", collector="database")
            >= before + 2
            and s.value("runbook_collector_success", target="app", collector="database") == 1
        ),
        what="runs after the cancelled statement",
    )


def test_doctor_through_the_pooler(pooled_db, capsys):
    _, pooled = pooled_db
    config = parse_config(yaml.safe_dump({"targets": [target(pooled)]}))
    code = run_doctor(config)
    out = capsys.readouterr().out
    assert code in (0, 1), out  # findings (an index to add) are fine, errors are not
    assert "ERROR" not in out and "check aborted" not in out, out
    assert "connected: PostgreSQL" in out
    assert "pg_net" in out and "the role can read its tables" in out
    assert other_client_settings(pooled) == {tuple(DEFAULTS.values())}


def test_discover_through_the_pooler(pooled_db, tmp_path):
    """discover sets nothing on the session and reads in one bounded transaction, so it finds
    the queues through the pooler and leaves every server connection at its defaults."""
    from tests.test_discover import discover

    _, pooled = pooled_db
    code, out, err = discover(pooled, tmp_path)
    assert code == 0, err
    found = yaml.safe_load(out)["targets"][0]
    assert {q.get("table") or q.get("pgmq") for q in found["queues"]} >= {
        "public.processing_jobs",
        "email",
        "sms",
    }, out
    assert "Traceback" not in err and "ERROR" not in out, err
    assert other_client_settings(pooled) == {tuple(DEFAULTS.values())}
