"""The PgBouncer reader (exporter/poolers/pgbouncer.py) against a real PgBouncer (Debian's 1.18,
tests/pgbouncer.py) in front of the test PostgreSQL: its admin console read with the simple
query protocol, clients made to wait for real (a pool of one server connection held by an open
transaction while other clients queue), the alerts fired by promtool from the real scrape, and
an unreadable console (nothing listening, a wrong password) served as down with a reason while
everything else keeps being served, the password nowhere.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from exporter.config import ConfigError, parse_config
from exporter.demo.pgserver import free_port
from exporter.poolers import pgbouncer
from tests.helpers import (
    assert_declared,
    assert_promtool_clean,
    assert_promtool_fires,
    scrape_series,
)
from tests.pgbouncer import PgBouncer

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "alerts" / "pgbouncer.rules.yml"
STATS_USER, STATS_PASSWORD = "runbook_stats", "stats-pw-5ecret-16"
WAITERS = 3


@pytest.fixture(scope="module")
def bouncer(pg_server: str) -> Iterator[PgBouncer]:
    """One server connection per pool, in transaction mode; a stats user with a password."""
    with PgBouncer(pg_server, pool_size=1, stats_user=(STATS_USER, STATS_PASSWORD)) as b:
        yield b


def pooler(b: PgBouncer, password: str = STATS_PASSWORD, **extra: Any) -> dict[str, Any]:
    return {
        "name": "main",
        "dsn": b.admin_dsn(STATS_USER, password),
        "interval": "1s",
        "timeout": "1s",
        **extra,
    }


@contextmanager
def clients_waiting(b: PgBouncer, dbname: str = "postgres") -> Iterator[None]:
    """The pool's one server connection held by an open transaction while WAITERS other
    clients queue for it; all released (and joined) on exit."""
    holder = psycopg.connect(b.dsn(dbname), connect_timeout=5)
    holder.execute("SELECT 1")  # psycopg opened a transaction: the server stays with us
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            with psycopg.connect(b.dsn(dbname), autocommit=True, connect_timeout=30) as c:
                c.execute("SELECT 1")  # queues until the holder commits
        except BaseException as e:  # reported by the test, not lost in the thread
            errors.append(e)

    threads = [threading.Thread(target=wait, daemon=True) for _ in range(WAITERS)]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        holder.commit()
        holder.close()
        for t in threads:
            t.join(30)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)


def test_the_console_takes_only_the_simple_protocol_outside_transactions(bouncer):
    """Why the reader connects in autocommit mode and sends no parameters: the negative
    controls on the real console, then the reader's own session."""
    dsn = bouncer.admin_dsn(STATS_USER, STATS_PASSWORD)
    extended = pytest.raises(psycopg.errors.ProtocolViolation, match="extended query protocol")
    with psycopg.connect(dsn, autocommit=True) as c, extended:
        c.cursor(binary=True).execute("SHOW POOLS")  # a binary cursor: extended protocol
    with psycopg.connect(dsn) as c, pytest.raises(psycopg.errors.ProtocolViolation, match="BEGIN"):
        c.execute("SHOW POOLS")  # psycopg opens a transaction first
    shown = asyncio.run(pgbouncer.read_console(dsn, 5))
    assert {"POOLS", "STATS", "DATABASES", "LISTS", "CONFIG"} == set(shown)
    assert any(r["database"] == "postgres" and "cl_waiting" in r for r in shown["POOLS"])


def test_rows_are_read_by_column_name_whatever_the_version():
    """An older PgBouncer's SHOW POOLS (no maxwait_us, no cancel columns), a newer one's extra
    column, and more pools than max_pools: nothing guessed, the busiest pools kept."""
    pools = [
        # 1.7-style: no maxwait_us, no cl_*_cancel_req
        {"database": "app", "user": "web", "cl_active": 4, "cl_waiting": 2, "sv_active": 4,
         "sv_idle": 0, "sv_used": 0, "maxwait": 3, "pool_mode": "transaction"},
        # a newer one: an extra column the reader does not know
        {"database": "app", "user": "jobs", "cl_active": 1, "cl_waiting": 0, "sv_active": 1,
         "sv_idle": 1, "maxwait": 0, "maxwait_us": 0, "load_balance_hosts": "x",
         "pool_mode": "session"},
        {"database": "other", "user": "web", "cl_active": 0, "cl_waiting": 0, "sv_active": 0,
         "maxwait": 0, "maxwait_us": 0, "pool_mode": "transaction"},
        {"database": "pgbouncer", "user": "pgbouncer", "cl_active": 1, "cl_waiting": 0},
    ]  # fmt: skip
    shown = {
        "POOLS": pools,
        "DATABASES": [{"name": "app", "pool_size": 4, "paused": 0}, {"name": "other"}],
        "STATS": [{"database": "app", "total_xact_count": 10, "total_wait_time": 2_500_000}],
        "LISTS": [{"list": "used_clients", "items": 7}],
        "CONFIG": [{"key": "max_client_conn", "value": "100"}],
    }
    got = {
        (s.name, tuple(s.labels.values())): s.value
        for f in pgbouncer.families("p", shown, max_pools=2)
        for s in f.samples
    }
    assert got[("runbook_pgbouncer_pool_max_wait_seconds", ("p", "app", "web"))] == 3
    assert got[("runbook_pgbouncer_pool_saturation_ratio", ("p", "app", "web"))] == 1.0
    assert got[("runbook_pgbouncer_pool_saturation_ratio", ("p", "app", "jobs"))] == 0.25
    assert ("runbook_pgbouncer_pool_clients", ("p", "app", "web", "active_cancel_req")) not in got
    assert got[("runbook_pgbouncer_pools_skipped", ("p",))] == 1  # "other" left out
    assert not any(
        labels[1:2] in (("other",), ("pgbouncer",)) for (n, labels) in got if "pool_" in n
    )
    assert got[("runbook_pgbouncer_client_wait_seconds_total", ("p", "app"))] == 2.5
    assert got[("runbook_pgbouncer_transactions_total", ("p", "app"))] == 10
    assert ("runbook_pgbouncer_queries_total", ("p", "app")) not in got
    assert got[("runbook_pgbouncer_list_items", ("p", "used_clients"))] == 7
    assert got[("runbook_pgbouncer_max_client_connections", ("p",))] == 100


def test_pooler_config_is_checked():
    base = {"name": "main", "dsn": "host=127.0.0.1 port=6432 user=stats"}
    parse_config(yaml.safe_dump({"poolers": [base]}))  # a pooler alone is something to do
    bad = [
        ({**base, "dsn": "host=127.0.0.1 dbname=app"}, "dbname=pgbouncer"),
        ({**base, "password_env": "X", "password_file": "/x"}, "at most one of"),
        ({**base, "timeout": "20s"}, "must be above 0 and not exceed interval"),
        ({**base, "thresholds": {"saturation_warning": 0.9, "saturation_critical": 0.5}}, "above"),
        ({**base, "nope": 1}, "nope"),
    ]
    for item, said in bad:
        with pytest.raises(ConfigError, match=said):
            parse_config(yaml.safe_dump({"poolers": [item]}), "c.yml")
    with pytest.raises(ConfigError, match="pooler names must be unique"):
        parse_config(yaml.safe_dump({"poolers": [base, base]}))
    with pytest.raises(ConfigError, match="cannot be parsed") as e:
        parse_config(yaml.safe_dump({"poolers": [{**base, "dsn": "password='unclosed-77 x"}]}))
    assert "unclosed-77" not in str(e.value)


def test_an_unreadable_password_is_reason_password_not_a_crash(monkeypatch, caplog):
    monkeypatch.delenv("RUNBOOK_TEST_UNSET_PW", raising=False)
    item = {
        "name": "p",
        "dsn": "host=127.0.0.1 port=1 user=s",
        "password_env": "RUNBOOK_TEST_UNSET_PW",
    }
    [p] = parse_config(yaml.safe_dump({"poolers": [item]})).poolers
    fams = asyncio.run(pgbouncer.Reader(p).run())
    got = {(s.name, tuple(s.labels.values())): s.value for f in fams for s in f.samples}
    assert got[("runbook_pgbouncer_up", ("p",))] == 0
    assert got[("runbook_pgbouncer_failure_reason", ("p", "password"))] == 1
    [rec] = [r for r in caplog.records if r.getMessage() == "pooler console unreadable"]
    assert rec.reason == "password" and "RUNBOOK_TEST_UNSET_PW is not set" in rec.error


@pytest.mark.slow
def test_waiting_clients_are_seen_and_fire_the_alerts(bouncer, run_exporter, tmp_path):
    """A pool of one held by an open transaction, three clients queued behind it: the real
    exporter serves the queue (cl_waiting, maxwait > 0, saturation 1) and promtool fires
    PgBouncerClientsWaiting and PgBouncerPoolSaturated (both severities) from that scrape."""
    thresholds = {"max_wait_warning": "500ms", "max_wait_critical": "1s"}
    ex = run_exporter({"poolers": [pooler(bouncer, thresholds=thresholds)]})
    labels = {"pooler": "main", "database": "postgres", "user": bouncer.user}
    with clients_waiting(bouncer):
        s = ex.wait_for(
            lambda s: (
                s.value("runbook_pgbouncer_pool_clients", **labels, state="waiting") == WAITERS
                and s.value("runbook_pgbouncer_pool_max_wait_seconds", **labels) > 1.2
            ),
            timeout=20,
            what="three clients waiting over 1.2 s",
        )
    assert s.value("runbook_pgbouncer_up", pooler="main") == 1
    assert s.value("runbook_pgbouncer_pool_servers", **labels, state="active") == 1
    assert s.value("runbook_pgbouncer_pool_size", **labels) == 1
    assert s.value("runbook_pgbouncer_pool_saturation_ratio", **labels) == 1
    assert (
        s.value("runbook_pgbouncer_max_wait_threshold_seconds", pooler="main", severity="critical")
        == 1
    )
    assert_promtool_clean(s.text)
    assert_declared(s.families)
    fired = [
        {"alertname": a, "severity": sev, **labels}
        for a in ("PgBouncerClientsWaiting", "PgBouncerPoolSaturated")
        for sev in ("warning", "critical")
    ]
    assert_promtool_fires(
        [RULES], scrape_series(s.samples, "runbook_pgbouncer_"), fired, "15m", tmp_path
    )
    # the queue drained: the same pool, quiet
    s = ex.wait_for(
        lambda s: (
            s.value("runbook_pgbouncer_pool_clients", **labels, state="waiting") == 0
            and s.value("runbook_pgbouncer_pool_max_wait_seconds", **labels) == 0
        ),
        timeout=10,
        what="the queue drained",
    )
    quiet = scrape_series(s.samples, "runbook_pgbouncer_")
    assert_promtool_fires([RULES], quiet, [], "15m", tmp_path)


@pytest.mark.slow
def test_an_unreadable_console_is_down_with_a_reason_and_the_rest_keeps_serving(
    bouncer, fresh_db, run_exporter, tmp_path, caplog
):
    """Nothing listening on one pooler's port, a wrong password for another: each is served
    as down with its reason, PgBouncerDown fires for both, the good pooler and the target keep
    being served, and neither password reaches the scrape or a log line."""
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-pw-5ecret-16"
    ex = run_exporter(
        {
            "targets": [{"name": "app", "dsn": fresh_db, "collect_interval": "1s"}],
            "poolers": [
                pooler(bouncer),
                {**pooler(bouncer, wrong), "name": "locked"},
                {"name": "gone", "dsn": f"host=127.0.0.1 port={free_port()} user=x",
                 "interval": "1s", "timeout": "1s"},
            ],
        }
    )  # fmt: skip

    def reason(s, name: str) -> str | None:
        return next(
            (
                ls["reason"]
                for ls in s.labelsets("runbook_pgbouncer_failure_reason")
                if ls["pooler"] == name and s.value("runbook_pgbouncer_failure_reason", **ls) == 1
            ),
            None,
        )

    s = ex.wait_for(
        lambda s: (
            reason(s, "locked") == "auth"
            and reason(s, "gone") == "connect"
            and s.value("runbook_pgbouncer_up", pooler="main") == 1
            and s.value("runbook_target_up", target="app") == 1
            and s.value("runbook_pg_max_connections", target="app") > 0
        ),
        timeout=20,
        what="two poolers down with their reasons, the rest served",
    )
    assert s.value("runbook_pgbouncer_up", pooler="locked") == 0
    assert s.value("runbook_pgbouncer_up", pooler="gone") == 0
    text = s.text
    logged = "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    assert "pooler console unreadable" in logged and "password authentication failed" in logged
    for secret in (wrong, STATS_PASSWORD):
        assert secret not in text and secret not in logged
    fired = [
        {"alertname": "PgBouncerDown", "severity": "critical", "pooler": p}
        for p in ("gone", "locked")
    ]
    assert_promtool_fires(
        [RULES], scrape_series(s.samples, "runbook_pgbouncer_"), fired, "5m", tmp_path
    )


# the Supavisor row reads Supavisor's own metrics (docs/supabase.md): no Supavisor runs here, so
# these and only these queries of the dashboard are left out of the check below
SUPAVISOR_QUERIES = ("supavisor_pool_checkout_duration_bucket", "supavisor_connections_active")


@pytest.mark.slow
def test_every_query_of_the_poolers_dashboard_answers(bouncer, run_exporter):
    """The Connection poolers dashboard on a real queue: PgBouncer with clients waiting, scraped
    by a real Prometheus; every PgBouncer panel query and the variable return a series (the
    Supavisor row is left out: SUPAVISOR_QUERIES), and the status tile shows the pool red."""
    from exporter.demo.devstack import DevStack
    from tests.test_dashboards import dashboards, queries, substitute, variable_queries, wait_all

    thresholds = {"max_wait_warning": "200ms", "max_wait_critical": "500ms"}
    ex = run_exporter({"poolers": [pooler(bouncer, thresholds=thresholds)]})
    d = dashboards()["runbook-poolers.json"]
    with (
        clients_waiting(bouncer),
        DevStack([f"127.0.0.1:{ex.server.port}"], interval=1.0, with_alertmanager=False) as stack,
    ):
        stack.wait_scraped()
        prom = stack.prom

        def answers(q: str) -> Callable[[], bool]:
            return lambda: bool(prom.query(q))

        def has_label(selector: str, label: str) -> Callable[[], bool]:
            return lambda: any(label in x for x in prom.series(selector))

        checks = {
            where: answers(substitute(expr))
            for where, expr in queries(d)
            if not any(name in expr for name in SUPAVISOR_QUERIES)
        }
        skipped = [w for w, e in queries(d) if any(n in e for n in SUPAVISOR_QUERIES)]
        assert len(skipped) == 2, skipped  # only the Supavisor row
        for var, sel, label in variable_queries(d):
            checks[f"variable {var}"] = has_label(substitute(sel), label)
        empty, _ = wait_all(checks, timeout=60)
        assert not empty, "queries without data:\n" + "\n".join(empty) + stack.logs()
        status = next(e for w, e in queries(d) if "PgBouncer pools" in w)

        def red() -> bool:
            got = prom.query(substitute(status))
            return any(
                r["metric"].get("database") == "postgres" and float(r["value"][1]) == 2 for r in got
            )

        still, _ = wait_all({"the queued pool is red": red}, timeout=20)
        assert not still, prom.query(substitute(status))
