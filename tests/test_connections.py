"""The connections collector against real incidents: a session idle in transaction, a session
blocked on a row lock, a query over the long-running threshold, many applications and users;
and a healthy database that shows none of them. Values are read from real scrapes."""

from __future__ import annotations

import threading
import uuid

import psycopg
from psycopg.conninfo import make_conninfo

from tests.helpers import Scrape, server_version

IDLE_AGE = "runbook_pg_idle_in_transaction_oldest_age_seconds"


def target(dsn: str, thresholds: dict | None = None, collectors: dict | None = None) -> dict:
    t: dict = {"name": "app", "dsn": dsn, "collect_interval": "1s"}
    if thresholds:
        t["thresholds"] = thresholds
    if collectors:
        t["collectors"] = collectors
    return t


def conns(s: Scrape, state: str) -> float | None:
    return s.value("runbook_pg_connections", target="app", state=state)


class Runner:
    """Runs one statement on its own connection in a thread; records how it ended."""

    def __init__(self, conn: psycopg.Connection, query: str) -> None:
        self.conn, self.query = conn, query
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.conn.execute(self.query)
        except BaseException as e:  # reported to the test, not lost in the thread
            self.error = e

    def start(self) -> Runner:
        self.thread.start()
        return self

    def stop(self, timeout: float = 10, grace: float = 0) -> None:
        # `grace`: seconds for a statement just released (its lock holder rolled back) to end
        # by itself; cancelling it at once races its commit on a busy machine
        self.thread.join(grace)
        if self.thread.is_alive():
            self.conn.cancel_safe(timeout=5)
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the statement thread did not finish"


def test_idle_in_transaction_is_counted_and_ages(fresh_db, run_exporter):
    ex = run_exporter({"targets": [target(fresh_db)]})
    idle = psycopg.connect(fresh_db, application_name="idle-tx-test")
    try:
        idle.execute("SELECT 1")  # not autocommit: the transaction stays open
        first = ex.wait_for(
            lambda s: conns(s, "idle_in_transaction") >= 1 and s.value(IDLE_AGE, target="app") > 0,
            what="an idle-in-transaction session",
        )
        age = first.value(IDLE_AGE, target="app")
        later = ex.wait_for(
            lambda s: s.value(IDLE_AGE, target="app") >= age + 1.5, what="the age to grow"
        )
        assert later.value("runbook_pg_oldest_transaction_age_seconds", target="app") >= age
        assert (
            later.value(
                "runbook_pg_connections_by_application", target="app", application="idle-tx-test"
            )
            == 1
        )
    finally:
        idle.close()
    ex.wait_for(
        lambda s: conns(s, "idle_in_transaction") == 0 and s.value(IDLE_AGE, target="app") == 0,
        what="the session gone once closed",
    )


def test_session_blocked_on_row_lock(fresh_db, run_exporter):
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("CREATE TABLE account (id int PRIMARY KEY, balance int)")
        c.execute("INSERT INTO account VALUES (1, 100)")
    ex = run_exporter({"targets": [target(fresh_db)]})
    # pg_locks.waitstart, the oldest wait's start, is PostgreSQL 14+: absent before, never 0
    waitstart = server_version(fresh_db) >= 140000
    holder = psycopg.connect(fresh_db, application_name="lock-holder")
    waiter = psycopg.connect(fresh_db, autocommit=True, application_name="lock-waiter")
    runner = None
    try:
        holder.execute("SELECT * FROM account WHERE id = 1 FOR UPDATE")
        waiter.execute("SET statement_timeout = '30s'")  # bounded even if the test breaks
        runner = Runner(waiter, "UPDATE account SET balance = balance + 1 WHERE id = 1").start()
        s = ex.wait_for(
            lambda s: (
                s.value("runbook_pg_lock_waiting_sessions", target="app") >= 1
                and (
                    s.value("runbook_pg_lock_wait_oldest_seconds", target="app") >= 1
                    if waitstart
                    else s.value("runbook_pg_lock_wait_oldest_seconds", target="app") is None
                )
            ),
            what="a session waiting on the row lock for a second",
        )
        assert conns(s, "active") >= 1  # the waiter is active, waiting
        assert conns(s, "idle_in_transaction") >= 1  # the holder
    finally:
        holder.rollback()  # releases the lock: the UPDATE goes through
        holder.close()
        if runner is not None:
            runner.stop(grace=5)
        waiter.close()
    assert runner.error is None, runner.error
    ex.wait_for(
        lambda s: (
            s.value("runbook_pg_lock_waiting_sessions", target="app") == 0
            and s.value("runbook_pg_lock_wait_oldest_seconds", target="app")
            == (0 if waitstart else None)
        ),
        what="no lock wait once released",
    )


def test_query_over_long_running_threshold(fresh_db, run_exporter):
    ex = run_exporter(
        {"targets": [target(fresh_db, {"long_query_warning": "1s", "long_query_critical": "60s"})]}
    )
    sleeper = psycopg.connect(fresh_db, autocommit=True, application_name="sleeper")
    runner = Runner(sleeper, "SELECT pg_sleep(5)").start()
    try:
        s = ex.wait_for(
            lambda s: (
                s.value("runbook_pg_long_running_queries", target="app", severity="warning") >= 1
            ),
            what="a query over the 1s warning threshold",
        )
        assert s.value("runbook_pg_long_running_queries", target="app", severity="critical") == 0
        assert s.value("runbook_pg_oldest_query_age_seconds", target="app") >= 1
        assert conns(s, "active") >= 1
    finally:
        runner.stop()  # cancels the sleep rather than waiting it out
        sleeper.close()


def test_applications_and_users_are_bounded(pg_server, fresh_db, run_exporter):
    ex = run_exporter(
        {
            "targets": [
                target(
                    fresh_db, collectors={"connections": {"max_applications": 2, "max_users": 1}}
                )
            ]
        }
    )
    roles = [f"r_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    opened: list[psycopg.Connection] = []
    with psycopg.connect(pg_server, autocommit=True) as admin:
        for r in roles:
            admin.execute(f'CREATE ROLE "{r}" LOGIN')
    try:
        for app, n in (("app-a", 4), ("app-b", 3)):
            for _ in range(n):
                opened.append(psycopg.connect(fresh_db, autocommit=True, application_name=app))
        for app in ("app-c", "app-d"):  # one as postgres, one as another role each
            opened.append(psycopg.connect(fresh_db, autocommit=True, application_name=app))
        for r, app in zip(roles, ("app-c", "app-d"), strict=True):
            opened.append(psycopg.connect(fresh_db, autocommit=True, user=r, application_name=app))

        def ready(s: Scrape) -> bool:
            by_app = "runbook_pg_connections_by_application"
            return (
                s.value(by_app, target="app", application="app-a") == 4
                and s.value(by_app, target="app", application="app-b") == 3
                and s.value(by_app, target="app", application="other") >= 4  # 2 c, 2 d
            )

        s = ex.wait_for(ready, what="the top applications and the rest as other")
        apps = [
            x for x in s.labelsets("runbook_pg_connections_by_application") if x["target"] == "app"
        ]
        assert len(apps) <= 3, apps
        assert {"app-c", "app-d"}.isdisjoint(x["application"] for x in apps)
        users = [x for x in s.labelsets("runbook_pg_connections_by_user") if x["target"] == "app"]
        assert len(users) == 2, users  # the top role and other
        assert s.value("runbook_pg_connections_by_user", target="app", user="other") >= 2
        # every session is counted once whichever way it is broken down
        total_by_state = sum(s.values("runbook_pg_connections", target="app"))
        assert sum(s.values("runbook_pg_connections_by_application", target="app")) == (
            total_by_state
        )
        assert sum(s.values("runbook_pg_connections_by_user", target="app")) == total_by_state
        assert total_by_state >= len(opened)
    finally:
        for c in opened:
            c.close()
        with psycopg.connect(pg_server, autocommit=True) as admin:
            for r in roles:
                admin.execute(f'DROP ROLE IF EXISTS "{r}"')


def test_exporter_own_session_is_not_counted(fresh_db, run_exporter):
    ex = run_exporter({"targets": [target(fresh_db)]})
    s = ex.wait_for(
        lambda s: s.value("runbook_collector_success", target="app", collector="connections") == 1,
        what="connections collector",
    )
    apps = {x["application"] for x in s.labelsets("runbook_pg_connections_by_application")}
    assert "runbook-exporter" not in apps


def test_healthy_database_shows_no_incident(fresh_db, run_exporter):
    fast = {"interval": "1s"}
    ex = run_exporter(
        {
            "targets": [
                target(
                    fresh_db,
                    {"long_query_warning": "1s", "long_query_critical": "2s"},
                    {"tables": fast, "statements": fast},
                )
            ]
        }
    )

    def healthy(s: Scrape) -> bool:
        ok = all(
            s.value("runbook_collector_success", target="app", collector=c) == 1
            for c in ("connections", "database", "tables", "statements")
        )
        return (
            ok
            and s.value("runbook_pg_lock_waiting_sessions", target="app") == 0
            and conns(s, "idle_in_transaction") == 0
            and s.value(IDLE_AGE, target="app") == 0
        )

    s = ex.wait_for(healthy, what="all collectors up on a quiet database")
    assert s.value("runbook_pg_long_running_queries", target="app", severity="warning") == 0
    assert s.value("runbook_pg_long_running_queries", target="app", severity="critical") == 0
    oldest_wait = 0 if server_version(fresh_db) >= 140000 else None  # pg_locks.waitstart: 14+
    assert s.value("runbook_pg_lock_wait_oldest_seconds", target="app") == oldest_wait
    max_conn = s.value("runbook_pg_max_connections", target="app")
    reserved = s.value("runbook_pg_reserved_connections", target="app")
    assert max_conn > 0 and 0 <= reserved < max_conn
    assert s.value("runbook_pg_unused_indexes", target="app") == 0
    assert s.value("runbook_pg_unused_index_size_bytes", target="app") == 0
    assert s.value("runbook_pg_invalid_indexes", target="app") == 0
    assert s.values("runbook_pg_table_dead_tuple_ratio", target="app") == []  # no tables
    assert s.value("runbook_pg_stat_statements_available", target="app") == 1
    assert s.value("runbook_pg_slow_statements", target="app") == 0


def test_works_as_a_role_with_only_pg_monitor(pg_server, fresh_db, run_exporter):
    role = f"mon_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN IN ROLE pg_monitor')
    fast = {"interval": "1s"}
    idle = psycopg.connect(fresh_db, application_name="other-role-idle")  # as postgres
    try:
        idle.execute("SELECT 1")
        ex = run_exporter(
            {
                "targets": [
                    {
                        "name": "app",
                        "dsn": make_conninfo(fresh_db, user=role),
                        "collect_interval": "1s",
                        "collectors": {"tables": fast, "statements": fast | {"top_n": 1000}},
                    }
                ]
            }
        )
        s = ex.wait_for(
            lambda s: (
                all(
                    s.value("runbook_collector_success", target="app", collector=c) == 1
                    for c in ("connections", "database", "tables", "statements")
                )
                and conns(s, "idle_in_transaction") >= 1
                and s.value(IDLE_AGE, target="app") > 0
            ),
            what="every collector working and another role's session visible",
        )
        assert s.value("runbook_pg_stat_statements_available", target="app") == 1
        # another role's statement texts are readable with pg_read_all_stats
        texts = [x["query"] for x in s.labelsets("runbook_pg_statement_info")]
        assert "SELECT $1" in texts, texts  # run by postgres in the idle session
    finally:
        idle.close()
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_a_role_without_pg_monitor_fails_naming_the_privilege(pg_server, fresh_db, run_exporter):
    # without pg_read_all_stats PostgreSQL hides other roles' sessions and statements instead
    # of refusing: every state would read 0. The collectors fail and say what to grant.
    role = f"blind_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
    busy = psycopg.connect(fresh_db, autocommit=True)  # as postgres: another role
    try:
        busy.execute("SELECT count(*) FROM generate_series(1, 10)")
        busy.execute("BEGIN")
        busy.execute("SELECT 1")
        fast = {"interval": "1s"}
        ex = run_exporter(
            {
                "targets": [
                    {
                        "name": "app",
                        "dsn": make_conninfo(fresh_db, user=role),
                        "collect_interval": "1s",
                        "collectors": {"statements": fast, "tables": fast},
                    }
                ]
            }
        )
        s = ex.wait_for(
            lambda s: (
                all(
                    s.value("runbook_collector_success", target="app", collector=c) == 0
                    for c in ("connections", "statements")
                )
                and s.value("runbook_collector_success", target="app", collector="database") == 1
            ),
            what="connections and statements failing, database working",
        )
        assert s.value("runbook_target_up", target="app") == 1
        assert s.values("runbook_pg_connections", target="app") == []  # not a row of zeros
        assert s.value(IDLE_AGE, target="app") is None
        assert s.value("runbook_pg_max_connections", target="app") > 0
        assert s.value("runbook_pg_slow_statements", target="app") is None
        snap = ex.exporter.store.snapshot()
        assert f"grant pg_monitor (or pg_read_all_stats) to {role}" in (
            snap[("app", "connections")].last.error
        )
        assert f"grant pg_read_all_stats (or pg_monitor) to {role}" in (
            snap[("app", "statements")].last.error
        )
    finally:
        busy.close()
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')
