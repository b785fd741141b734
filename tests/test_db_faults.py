"""Database faults under a running exporter, on a dedicated real PostgreSQL (this module's own
server, so stopping or freezing it does not break the other tests): stop/start, a frozen server
(SIGSTOP of the postmaster and every backend, then SIGCONT), privileges revoked while serving,
tables and a queue table held in ACCESS EXCLUSIVE mode, and a server full at max_connections.

The exporter connects as the least-privilege role of deploy/sql/monitoring-role.sql with a
SCRAM password (pg_hba asks for it), so every error text is also checked for the password.
Assertions are on real scrapes of /metrics during and after each fault. Recovery times are
printed (`pytest -s -m slow tests/test_db_faults.py`); docs/postgres.md has the figures.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from exporter.db import APPLICATION_NAME
from exporter.demo.pgserver import LocalPostgres
from exporter.sources import collector_names
from tests.helpers import Scrape
from tests.pg import selected_bin_dir, server_major
from tests.test_least_privilege import ROLE, apply_role_sql

T = "db"
# the exporter's rhythm in these tests; RUNBOOK_FAULT_INTERVAL / _TIMEOUT measure others (the
# defaults are 15 and 10), e.g. for the figures of docs/postgres.md
INTERVAL = float(os.environ.get("RUNBOOK_FAULT_INTERVAL", "1"))
TIMEOUT = float(os.environ.get("RUNBOOK_FAULT_TIMEOUT", "1"))
# PostgreSQL 16+: ordinary roles may use max_connections - 1 - 2 = 9 slots, roles with
# pg_use_reserved_connections (the exporter's) 11, superusers 12
SETTINGS = {
    "max_connections": "12",
    "superuser_reserved_connections": "1",
    "reserved_connections": "2",
}
# the server of these tests: RUNBOOK_TEST_PG's (the version matrix) or the wheel's 18
BIN_DIR = selected_bin_dir()
# reserved_connections and pg_use_reserved_connections are PostgreSQL 16+: before it the
# setting would stop the server from starting, and the test of the reserved slot cannot run
RESERVED_SLOTS = BIN_DIR is None or int(server_major(BIN_DIR)) >= 16
if not RESERVED_SLOTS:
    del SETTINGS["reserved_connections"]
SETUP_SQL = """
CREATE EXTENSION pg_stat_statements;
CREATE TABLE public.processing_jobs (
    id bigserial PRIMARY KEY,
    status text NOT NULL DEFAULT 'pending',
    retry_count integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE public.email_jobs (LIKE public.processing_jobs INCLUDING ALL);
INSERT INTO public.processing_jobs (status) SELECT 'pending' FROM generate_series(1, 3);
INSERT INTO public.email_jobs (status) SELECT 'pending' FROM generate_series(1, 2);
CREATE TABLE public.big AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g;
CREATE TABLE public.small AS SELECT g AS id FROM generate_series(1, 100) g;
ANALYZE;
CREATE ROLE app LOGIN;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO app;
"""


@dataclass
class Faulty:
    pg: LocalPostgres
    admin_dsn: str  # superuser, appdb
    exporter_dsn: str  # runbook_monitor without its password
    app_dsn: str  # an ordinary role
    password: str
    password_file: Path


@pytest.fixture(scope="module")
def faulty(tmp_path_factory) -> Iterator[Faulty]:
    with LocalPostgres(settings=SETTINGS, bin_dir=BIN_DIR) as pg:
        with psycopg.connect(pg.dsn, autocommit=True) as c:
            c.execute("CREATE DATABASE appdb")
        admin = make_conninfo(pg.dsn, dbname="appdb")
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(SETUP_SQL)
            password = "pw-" + secrets.token_urlsafe(18)
            verifier = c.pgconn.encrypt_password(password.encode(), ROLE.encode(), b"scram-sha-256")
        r = apply_role_sql(
            admin,
            queue_tables="public.processing_jobs, public.email_jobs",
            password_scram=verifier.decode(),
        )
        assert r.returncode == 0, r.stderr
        # the exporter's role must authenticate with its password; everyone else stays trusted
        hba = pg.data / "pg_hba.conf"
        hba.write_text(f"host all {ROLE} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute("SELECT pg_reload_conf()")
        pw_file = tmp_path_factory.mktemp("faults") / "password"
        pw_file.write_text(password + "\n")
        with pytest.raises(psycopg.OperationalError):  # the password is really needed
            psycopg.connect(make_conninfo(admin, user=ROLE), connect_timeout=5)
        yield Faulty(
            pg,
            admin,
            make_conninfo(admin, user=ROLE),
            make_conninfo(admin, user="app"),
            password,
            pw_file,
        )


def config(f: Faulty, max_sessions: int = 3, **collectors: dict) -> dict:
    every_run = {"interval": f"{INTERVAL}s"}
    return {
        "targets": [
            {
                "name": T,
                "dsn": f.exporter_dsn,
                "max_sessions": max_sessions,
                "password_file": str(f.password_file),
                "collect_interval": f"{INTERVAL}s",
                "collect_timeout": f"{TIMEOUT}s",
                "statement_timeout": f"{min(0.5, TIMEOUT / 2)}s",
                "lock_timeout": "200ms",
                "connect_timeout": "1s",
                "collectors": {"tables": every_run, "statements": every_run, **collectors},
                "queues": [{"table": "public.processing_jobs"}, {"table": "public.email_jobs"}],
            }
        ]
    }


def success(s: Scrape, collector: str) -> float | None:
    return s.value("runbook_collector_success", target=T, collector=collector)


def last_success(s: Scrape, collector: str) -> float:
    v = s.value("runbook_collector_last_success_timestamp_seconds", target=T, collector=collector)
    return v or 0.0


def all_fresh(since: float = 0.0):
    def check(s: Scrape) -> bool:
        return s.value("runbook_target_up", target=T) == 1 and all(
            success(s, c) == 1 and last_success(s, c) > since for c in collector_names()
        )

    return check


def exporter_sessions(admin_dsn: str) -> list[int]:
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as c:
        rows = c.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (APPLICATION_NAME,)
        ).fetchall()
    return [r[0] for r in rows]


def settle_sessions(admin_dsn: str, most: int = 3, timeout: float = 10) -> None:
    """Sessions of a connection given up during a fault end once the server notices the
    closed socket; bounded wait for the exporter's own, at least one and at most `most` (its
    max_sessions), which a few more runs must not exceed."""
    deadline = time.monotonic() + timeout
    while not 1 <= len(pids := exporter_sessions(admin_dsn)) <= most:
        assert time.monotonic() < deadline, f"exporter sessions: {pids}"
        time.sleep(0.2)
    time.sleep(2)  # a few more runs must not open more
    assert 1 <= len(exporter_sessions(admin_dsn)) <= most


def errors(ex) -> dict[str, str]:
    return {
        k[1]: st.last.error
        for k, st in ex.exporter.store.snapshot().items()
        if st.last is not None and st.last.error
    }


def assert_no_password(f: Faulty, ex, *texts: str) -> None:
    everything = "\n".join([ex.scrape().text, *errors(ex).values(), *texts])
    assert f.password not in everything


def report(what: str, seconds: float) -> None:
    print(f"\nFAULT-TIMING {what}: {seconds:.2f} s")


def wait_timed(ex, predicate, since: float, timeout: float, what: str) -> tuple[Scrape, float]:
    s = ex.wait_for(predicate, timeout=timeout, what=what)
    return s, time.monotonic() - since


# --- stop / start --------------------------------------------------------------------------


@pytest.mark.slow
def test_stop_and_start(faulty: Faulty, run_exporter, caplog):
    ex = run_exporter(config(faulty))
    ex.wait_for(all_fresh(), what="every collector up")
    faulty.pg.stop()
    stopped = time.monotonic()
    try:
        s, down = wait_timed(
            ex,
            lambda s: s.value("runbook_target_up", target=T) == 0,
            stopped,
            5,
            "up 0 after the stop",
        )
        report("stop -> runbook_target_up 0", down)
        s = ex.wait_for(
            lambda s: all(success(s, c) == 0 for c in collector_names()), timeout=5, what="failing"
        )
        assert s.values("runbook_pg_connections", target=T) == []  # dropped, not stale
        assert s.value("runbook_exporter_build_info") == 1
        # let the backoff grow: recovery must not depend on it (longer: RUNBOOK_FAULT_OUTAGE)
        time.sleep(float(os.environ.get("RUNBOOK_FAULT_OUTAGE", "3")))
    finally:
        faulty.pg.start()
    back, back_wall = time.monotonic(), time.time()
    _, up = wait_timed(
        ex, lambda s: s.value("runbook_target_up", target=T) == 1, back, 10, "up 1 again"
    )
    _, fresh = wait_timed(ex, all_fresh(back_wall), back, 10, "fresh data from every collector")
    report("start -> runbook_target_up 1", up)
    report("start -> fresh data from every collector", fresh)
    assert up < 5 and fresh < 6
    settle_sessions(faulty.admin_dsn)
    assert_no_password(faulty, ex, caplog.text)


# --- frozen server -------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                # the command may hold spaces and parentheses: fields start after the last ")"
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry))
    return out


@contextmanager
def frozen(pg: LocalPostgres) -> Iterator[None]:
    """SIGSTOP the postmaster first (so it forks no new backend), then every child; SIGCONT
    in reverse order whatever happens."""
    postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
    stopped = [postmaster]
    try:
        os.kill(postmaster, signal.SIGSTOP)
        for child in _children(postmaster):
            with suppress(ProcessLookupError):
                os.kill(child, signal.SIGSTOP)
                stopped.append(child)
        yield
    finally:
        for pid in reversed(stopped):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


@pytest.mark.slow
def test_frozen_server(faulty: Faulty, run_exporter, caplog):
    ex = run_exporter(config(faulty))
    ex.wait_for(all_fresh(), what="every collector up")
    settle_sessions(faulty.admin_dsn)
    # freeze just after a run, so the first run to hang starts one interval later and the
    # figure is the same every time: about INTERVAL + TIMEOUT
    runs = ex.scrape().value("runbook_collector_runs_total", target=T, collector="connections")
    ex.wait_for(
        lambda s: s.value("runbook_collector_runs_total", target=T, collector="connections") > runs,
        timeout=INTERVAL + 5,
        what="a connections run",
    )
    # every run's result, to time the runs that hang (the store keeps only the last one)
    results: list = []
    store_put = ex.exporter.store.put
    ex.exporter.store.put = lambda key, result: (results.append(result), store_put(key, result))
    with frozen(faulty.pg):
        froze, froze_wall = time.monotonic(), time.time()
        s, down = wait_timed(
            ex,
            lambda s: s.value("runbook_target_up", target=T) == 0,
            froze,
            INTERVAL + TIMEOUT + 5,
            "up 0 while frozen",
        )
        report("freeze -> runbook_target_up 0", down)
        # the run that held the connection when the server froze: the watchdog ends it (and
        # turns up 0) half a second before its timeout
        hung = max(r.duration for r in list(results) if r.finished_at > froze_wall)
        report("longest hung run (up 1 until it ends)", hung)
        assert hung < TIMEOUT + 0.3
        # within one interval (for a run to start) plus one collect timeout, and some slack
        assert down < INTERVAL + TIMEOUT + 1.0
        t0 = time.monotonic()
        assert httpx.get(ex.url, timeout=5).status_code == 200  # /metrics never waits on it
        assert time.monotonic() - t0 < 1
        s = ex.wait_for(
            lambda s: success(s, "connections") == 0,
            timeout=INTERVAL + TIMEOUT + 5,
            what="connections failing",
        )
        assert f"no answer from the server within {TIMEOUT:g}s" in errors(ex).get(
            "connections", ""
        ) or ("not connected" in errors(ex).get("connections", ""))
        time.sleep(2)  # frozen for a while: reconnect attempts must stay bounded
        assert s.value("runbook_target_up", target=T) == 0
    thawed, thawed_wall = time.monotonic(), time.time()
    _, up = wait_timed(
        ex,
        lambda s: s.value("runbook_target_up", target=T) == 1,
        thawed,
        INTERVAL + 10,
        "up 1 after thaw",
    )
    _, fresh = wait_timed(ex, all_fresh(thawed_wall), thawed, INTERVAL + 10, "fresh after thaw")
    report("thaw -> runbook_target_up 1", up)
    report("thaw -> fresh data from every collector", fresh)
    settle_sessions(faulty.admin_dsn)  # no session leaked by the abandoned connections
    assert_no_password(faulty, ex, caplog.text)


# --- privileges revoked while serving ------------------------------------------------------


@pytest.mark.slow
def test_privileges_revoked_while_serving(faulty: Faulty, run_exporter, caplog):
    caplog.set_level(logging.WARNING, logger="exporter.scheduler")
    # another role's session and statement: what pg_monitor lets the exporter see
    other = psycopg.connect(faulty.app_dsn, autocommit=True, application_name="the-app")
    try:
        other.execute("SELECT count(*) FROM public.small WHERE id > 50")
        other.execute("BEGIN")
        other.execute("SELECT 1")  # idle in transaction from now on
        ex = run_exporter(config(faulty))
        s = ex.wait_for(
            lambda s: (
                all_fresh()(s)
                and s.value("runbook_pg_connections", target=T, state="idle_in_transaction") >= 1
            ),
            what="every collector up, the app's session seen",
        )
        with psycopg.connect(faulty.admin_dsn, autocommit=True) as admin:
            admin.execute(f"REVOKE pg_monitor FROM {ROLE}")
        try:
            revoked = time.time()
            s = ex.wait_for(
                lambda s: success(s, "connections") == 0 and success(s, "statements") == 0,
                timeout=10,
                what=f"connections and statements failing: {errors(ex)}",
            )
            # the states would all read 0: absent instead; what needs no privilege is served
            assert s.values("runbook_pg_connections", target=T) == []
            assert s.values("runbook_pg_oldest_transaction_age_seconds", target=T) == []
            assert s.value("runbook_pg_max_connections", target=T) == 12
            assert s.values("runbook_pg_connections_by_application", target=T) == []
            assert s.value("runbook_pg_slow_statements", target=T) is None
            assert s.value("runbook_pg_stat_statements_available", target=T) == 1
            assert s.value("runbook_target_up", target=T) == 1  # connected, just blind
            errs = errors(ex)
            assert f"grant pg_monitor (or pg_read_all_stats) to {ROLE}" in errs["connections"]
            assert f"grant pg_read_all_stats (or pg_monitor) to {ROLE}" in errs["statements"]
            logged = [
                r.error
                for r in caplog.records
                if r.name == "exporter.scheduler" and r.created >= revoked
            ]
            assert any("pg_monitor" in e for e in logged), logged
            assert_no_password(faulty, ex, caplog.text)
        finally:
            with psycopg.connect(faulty.admin_dsn, autocommit=True) as admin:
                admin.execute(f"GRANT pg_monitor TO {ROLE}")
        granted = time.time()
        ex.wait_for(all_fresh(granted), timeout=10, what="every collector back after the grant")
    finally:
        other.close()


# --- locked tables -------------------------------------------------------------------------


def size(s: Scrape, table: str) -> float | None:
    return s.value("runbook_pg_table_size_bytes", target=T, schema="public", table=table)


@pytest.mark.slow
def test_locked_tables_cost_only_their_own_series(faulty: Faulty, run_exporter, caplog):
    caplog.set_level(logging.INFO, logger="exporter.collectors.tables")
    ex = run_exporter(config(faulty))
    s = ex.wait_for(all_fresh(), what="every collector up")
    assert size(s, "big") > size(s, "small") > 0
    assert s.value("runbook_pg_tables_size_skipped", target=T) == 0

    holder = psycopg.connect(faulty.admin_dsn)  # a migration holding two tables
    holder.execute("LOCK TABLE public.big, public.processing_jobs IN ACCESS EXCLUSIVE MODE")
    try:
        locked = time.time()
        s = ex.wait_for(
            lambda s: last_success(s, "tables") > locked and success(s, "queues") == 0,
            timeout=10,
            what="a tables run after the lock, the locked queue failing",
        )
        # tables: the run succeeds, only the locked tables lose their size
        assert success(s, "tables") == 1
        assert s.value("runbook_pg_tables_size_skipped", target=T) == 2
        assert size(s, "big") is None and size(s, "processing_jobs") is None
        assert size(s, "small") > 0 and size(s, "email_jobs") > 0
        live = s.value("runbook_pg_table_live_tuples", target=T, schema="public", table="big")
        assert live == 20000  # from the statistics: no lock needed
        assert any("public.big" in getattr(r, "tables", "") for r in caplog.records)
        # queues: only the locked queue is down, the other one is still served
        assert s.value("runbook_queue_up", target=T, queue="processing_jobs") == 0
        assert s.value("runbook_queue_up", target=T, queue="email_jobs") == 1
        assert s.value("runbook_queue_jobs", target=T, queue="email_jobs", status="pending") == 2
        assert s.values("runbook_queue_jobs", target=T, queue="processing_jobs") == []
        assert "targets[0].queues[0]" in errors(ex)["queues"]
        assert "lock timeout" in errors(ex)["queues"]
        for c in ("connections", "database", "statements"):
            assert success(s, c) == 1, c
        assert s.value("runbook_target_up", target=T) == 1
    finally:
        holder.close()
    released = time.time()
    s = ex.wait_for(all_fresh(released), timeout=10, what="every collector after the release")
    assert size(s, "big") > 0
    assert s.value("runbook_queue_up", target=T, queue="processing_jobs") == 1
    assert s.value("runbook_pg_tables_size_skipped", target=T) == 0

    # a lock only *requested*: our AccessShareLock would queue behind it, so it is skipped too
    reader = psycopg.connect(faulty.admin_dsn)
    reader.execute("SELECT count(*) FROM public.small")  # holds AccessShareLock on small
    waiter = psycopg.connect(faulty.admin_dsn, autocommit=True)

    def request_lock() -> None:
        with suppress(psycopg.Error):  # waits until the reader is gone
            waiter.execute("BEGIN; LOCK TABLE public.small IN ACCESS EXCLUSIVE MODE; COMMIT")

    blocked = threading.Thread(target=request_lock, daemon=True)
    try:
        blocked.start()
        requested = time.time()
        s = ex.wait_for(
            lambda s: (
                last_success(s, "tables") > requested + 0.3
                and s.value("runbook_pg_tables_size_skipped", target=T) == 1
            ),
            timeout=10,
            what="the table with a pending ACCESS EXCLUSIVE request skipped",
        )
        assert size(s, "small") is None and size(s, "big") > 0
        assert success(s, "tables") == 1
    finally:
        reader.close()  # lets the waiter through, which then commits
        blocked.join(10)
        waiter.close()
    assert_no_password(faulty, ex, caplog.text)


# --- max_connections -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(
    not RESERVED_SLOTS, reason="reserved_connections is PostgreSQL 16+ (RUNBOOK_TEST_PG older)"
)
def test_reconnects_through_a_reserved_slot_at_max_connections(faulty: Faulty, run_exporter):
    # one session, so the test knows which one to end and the reserved slot fits it exactly
    ex = run_exporter(config(faulty, max_sessions=1))
    ex.wait_for(all_fresh(), what="every collector up")
    settle_sessions(faulty.admin_dsn, most=1)
    admin = psycopg.connect(faulty.admin_dsn, autocommit=True)
    sessions: list[psycopg.Connection] = []

    def fill() -> str:
        """Open ordinary sessions until the server refuses one; the refusal's text."""
        for _ in range(20):
            try:
                sessions.append(psycopg.connect(faulty.app_dsn, connect_timeout=5))
            except psycopg.OperationalError as e:
                return str(e)
        raise AssertionError("max_connections never reached")

    try:
        refusal = fill()
        assert "reserved" in refusal, refusal  # only roles with a reserved slot get in now
        (old_pid,) = exporter_sessions(faulty.admin_dsn)
        admin.execute("SELECT pg_terminate_backend(%s)", (old_pid,))
        killed = time.monotonic()
        # take the slot the exporter just left, before it reconnects
        assert "reserved" in fill()
        s, back = wait_timed(
            ex,
            lambda s: (
                s.value("runbook_target_up", target=T) == 1
                and exporter_sessions(faulty.admin_dsn) not in ([], [old_pid])
                and success(s, "connections") == 1
                and last_success(s, "connections") > time.time() - 1
            ),
            killed,
            15,
            "reconnected through a reserved slot",
        )
        report("session killed at max_connections -> reconnected", back)
        # the app's sessions and the admin's, the exporter's own not: the check above opens
        # a short admin session of its own, which a collection may still have counted, so
        # this waits (bounded) for the next one
        expected = len(sessions) + 1
        s = ex.wait_for(
            lambda s: sum(s.values("runbook_pg_connections", target=T)) == expected,
            timeout=5,
            what=f"{expected} sessions counted",
        )
        in_use = sum(s.values("runbook_pg_connections", target=T))
        usable = s.value("runbook_pg_max_connections", target=T) - s.value(
            "runbook_pg_reserved_connections", target=T
        )
        assert usable == 12 - 1 - 2
        assert in_use == expected
        threshold = s.value("runbook_pg_connections_threshold_ratio", target=T, severity="critical")
        assert in_use / usable > threshold  # PostgresConnectionsNearLimit's condition holds

        # the control: without the grant the same exporter cannot get back in
        admin.execute(f"REVOKE pg_use_reserved_connections FROM {ROLE}")
        (pid,) = exporter_sessions(faulty.admin_dsn)
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert "reserved" in fill()
        ex.wait_for(lambda s: s.value("runbook_target_up", target=T) == 0, timeout=10, what="up 0")
        time.sleep(3)  # several reconnect attempts
        s = ex.scrape()
        assert s.value("runbook_target_up", target=T) == 0
        assert exporter_sessions(faulty.admin_dsn) == []
        assert "reserved" in (ex.exporter.dbs[T].last_error or "")
    finally:
        with suppress(psycopg.Error):
            admin.execute(f"GRANT pg_use_reserved_connections TO {ROLE}")
        for c in sessions:
            c.close()
        admin.close()
