"""The pg_net collector (exporter/collectors/pgnet.py) and its alerts (alerts/pgnet.rules.yml).

pg_net is a C extension with a background worker that is not packaged for Debian 12, so it
cannot be installed here. The tests create its two tables from the schema pg_net 0.20.4
documents (tests/pgnet_schema.py, DDL written by us) and insert the rows its worker writes for
each outcome -- an HTTP status, a timeout, a failure below HTTP. That is exactly what the
exporter reads; no HTTP request is made, so no HTTP server is needed (a real local one would
only exercise pg_net, not the exporter). Everything else is real: PostgreSQL, the exporter
with its scheduler and HTTP server, promtool with the shipped rules.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from exporter.collectors import pgnet
from exporter.config import ConfigError, parse_config
from exporter.db import open_connection, run_transaction
from exporter.doctor import Report
from tests import pgnet_schema
from tests.helpers import (
    assert_declared,
    assert_promtool_clean,
    assert_promtool_fires,
    scrape_series,
)

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "alerts" / "pgnet.rules.yml"
SECRETS = ("url-secret-7", "service-role-secret-7", "body-secret-7")


def target_config(dsn: str, **pgnet_settings: Any) -> dict[str, Any]:
    return {"name": "app", "dsn": dsn, "collectors": {"pgnet": pgnet_settings}}


def collect(dsn: str, **pgnet_settings: Any) -> dict[tuple[str, tuple[str, ...]], float]:
    """One run of the collector as the exporter makes it (its session, one read-only
    transaction): {(series name, label values after target): value}."""
    config = parse_config(yaml.safe_dump({"targets": [target_config(dsn, **pgnet_settings)]}))
    target = config.targets[0]

    async def main() -> list:
        conn = await open_connection(target)
        try:
            async with run_transaction(conn, target):
                return await pgnet.PgNet(target, target.collectors.pgnet).collect(conn)
        finally:
            await conn.close()

    out = {}
    for family in asyncio.run(main()):
        for s in family.samples:
            assert s.labels["target"] == "app"
            rest = tuple(v for k, v in s.labels.items() if k != "target")
            out[(s.name, rest)] = s.value
    return out


def doctor(dsn: str) -> Report:
    config = parse_config(yaml.safe_dump({"targets": [target_config(dsn)]}))
    target = config.targets[0]
    report = Report()

    async def main() -> None:
        conn = await open_connection(target)
        try:
            async with run_transaction(conn, target):
                await pgnet.PgNet(target, target.collectors.pgnet).doctor(conn, report)
        finally:
            await conn.close()

    asyncio.run(main())
    return report


@pytest.fixture
def pgnet_db(fresh_db: str) -> str:
    with psycopg.connect(fresh_db, autocommit=True) as c:
        pgnet_schema.create(c)
    return fresh_db


def test_counts_each_outcome_within_the_window_and_the_queue(pgnet_db: str):
    with psycopg.connect(pgnet_db, autocommit=True) as c:
        for status, n in ((200, 7), (204, 1), (301, 1), (401, 3), (404, 2), (500, 1), (503, 1)):
            pgnet_schema.respond(c, status, n)
        pgnet_schema.respond(c, 101, 1)  # a status outside 200-599
        pgnet_schema.time_out(c, 2)
        pgnet_schema.fail(c, 1)
        # before the window: pg_net keeps responses for hours, they must not count
        pgnet_schema.respond(c, 401, 50, ago="2 hours")
        pgnet_schema.time_out(c, 5, ago="11 minutes")
        pgnet_schema.queue_request(c, 4)
    got = collect(pgnet_db)
    recent = {k[1][0]: v for k, v in got.items() if k[0] == "runbook_pgnet_recent_responses"}
    assert recent == {
        "2xx": 8,
        "3xx": 1,
        "4xx": 5,
        "5xx": 2,
        "other": 1,
        "timed_out": 2,
        "error": 1,
    }
    assert got[("runbook_pgnet_available", ())] == 1
    assert got[("runbook_pgnet_request_queue_depth", ())] == 4
    # the thresholds the rules compare with, from the config (defaults here)
    assert got[("runbook_pgnet_failure_ratio_threshold", ("warning",))] == 0.05
    assert got[("runbook_pgnet_failure_ratio_threshold", ("critical",))] == 0.25
    assert got[("runbook_pgnet_failures_threshold", ("warning",))] == 0
    assert got[("runbook_pgnet_min_responses", ())] == 20
    assert got[("runbook_pgnet_window_seconds", ())] == 600

    # a wider window takes the older timeouts in; overrides become the threshold series
    got = collect(
        pgnet_db,
        window="15m",
        min_responses=5,
        max_queue_count=3,
        thresholds={"failures_warning": 10, "failure_ratio_critical": 0.5},
    )
    assert got[("runbook_pgnet_recent_responses", ("timed_out",))] == 7
    assert got[("runbook_pgnet_recent_responses", ("4xx",))] == 5
    assert got[("runbook_pgnet_request_queue_depth", ())] == 3  # counted up to the cap
    assert got[("runbook_pgnet_failures_threshold", ("warning",))] == 10
    assert got[("runbook_pgnet_failure_ratio_threshold", ("critical",))] == 0.5
    assert got[("runbook_pgnet_min_responses", ())] == 5
    assert got[("runbook_pgnet_window_seconds", ())] == 900


def test_quiet_without_pg_net(fresh_db: str, capsys):
    assert collect(fresh_db) == {("runbook_pgnet_available", ()): 0}
    # an application's own schema called net is not pg_net
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("CREATE SCHEMA net; CREATE TABLE net.hosts (name text)")
    assert collect(fresh_db) == {("runbook_pgnet_available", ()): 0}
    report = doctor(fresh_db)
    assert report.findings == 0 and report.errors == 0
    assert "pg_net is not installed in this database" in capsys.readouterr().out


@pytest.fixture
def plain_role(pgnet_db: str) -> Iterator[tuple[str, str]]:
    """A login role with no privilege on pg_net's tables, and a DSN that connects as it."""
    role = f"pgnet_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pgnet_db, autocommit=True) as c:
        c.execute(f"CREATE ROLE {role} LOGIN")
    params = conninfo_to_dict(pgnet_db)
    params["user"] = role
    try:
        yield role, make_conninfo("", **params)
    finally:
        with psycopg.connect(pgnet_db, autocommit=True) as c:
            c.execute(f"DROP OWNED BY {role}")
            c.execute(f"DROP ROLE {role}")


def test_unreadable_tables_fail_the_run_saying_what_to_grant(
    pgnet_db: str, plain_role: tuple[str, str], capsys
):
    role, dsn = plain_role
    with psycopg.connect(pgnet_db, autocommit=True) as c:
        pgnet_schema.respond(c, 401, 2)
    with pytest.raises(pgnet.PgNetUnreadable) as e:
        collect(dsn)
    message = str(e.value)
    assert f"role {role} cannot read net._http_response, net.http_request_queue" in message
    assert f"GRANT USAGE ON SCHEMA net TO {role};" in message
    assert f"GRANT SELECT ON net._http_response, net.http_request_queue TO {role};" in message

    report = doctor(dsn)
    out = capsys.readouterr().out
    assert report.findings == 1, out
    assert f"GRANT SELECT ON net._http_response, net.http_request_queue TO {role};" in out

    # what the message says is enough
    with psycopg.connect(pgnet_db, autocommit=True) as c:
        c.execute(pgnet.grant_statements(role))
    assert collect(dsn)[("runbook_pgnet_recent_responses", ("4xx",))] == 2
    report = doctor(dsn)
    out = capsys.readouterr().out
    assert report.findings == 0, out
    assert "the role can read its tables" in out


def test_doctor_names_a_missing_created_index(pgnet_db: str, capsys):
    with psycopg.connect(pgnet_db, autocommit=True) as c:
        (index,) = c.execute(
            "SELECT indexrelid::regclass::text FROM pg_index"
            " WHERE indrelid = 'net._http_response'::regclass"
        ).fetchone()
        c.execute(f"DROP INDEX {index}")
    report = doctor(pgnet_db)
    out = capsys.readouterr().out
    assert report.findings == 1, out
    assert "CREATE INDEX ON net._http_response (created);" in out


def _scans(plan: dict) -> list[dict]:
    out = [plan] if "Scan" in plan["Node Type"] else []
    for child in plan.get("Plans", []):
        out += _scans(child)
    return out


def test_window_count_reads_the_window_through_the_index_not_the_table(pgnet_db: str):
    """pg_net keeps hours of responses (pg_net.ttl); the count reads only the window's."""
    with psycopg.connect(pgnet_db, autocommit=True) as c:
        pgnet_schema.respond(c, 200, 20_000, ago="3 hours")
        pgnet_schema.respond(c, 500, 40)
        c.execute("ANALYZE net._http_response")
        (pages,) = c.execute(
            "SELECT relpages FROM pg_class WHERE oid = 'net._http_response'::regclass"
        ).fetchone()
        (plan,) = c.execute(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + pgnet.RESPONSES_SQL, {"window": 600.0}
        ).fetchone()
    [scan] = _scans(plan[0]["Plan"])
    assert scan["Node Type"] in ("Index Scan", "Index Only Scan", "Bitmap Index Scan"), scan
    assert "created" in scan["Index Name"]
    assert scan["Actual Rows"] == 40
    buffers = plan[0]["Plan"]["Shared Hit Blocks"] + plan[0]["Plan"]["Shared Read Blocks"]
    assert pages > 200 and buffers < 10, (pages, buffers)


def test_settings_are_checked(fresh_db: str):
    def load(**settings: Any) -> None:
        parse_config(yaml.safe_dump({"targets": [target_config(fresh_db, **settings)]}))

    with pytest.raises(ConfigError, match=r"collectors\.pgnet\.window"):
        load(window="5s")
    with pytest.raises(ConfigError, match=r"failure_ratio_warning .* must not be above"):
        load(thresholds={"failure_ratio_warning": 0.5, "failure_ratio_critical": 0.2})
    with pytest.raises(ConfigError, match=r"collectors\.pgnet\.thresholds\.failures_warning"):
        load(thresholds={"failures_warning": -1})


def assert_alerts_fire(samples: list, tmp: Path, at: str = "15m") -> None:
    """The pg_net alerts firing at `at` when the scraped pg_net samples stay as they are: a
    promtool unit test built from a real scrape, failing with promtool's message when the
    alerts differ from the ones asked for."""
    expected = [
        ("PgNetCallsFailing", "warning"),
        ("PgNetFailureRatioHigh", "warning"),
        ("PgNetFailureRatioHigh", "critical"),
    ]
    assert_promtool_fires(
        [RULES],
        scrape_series(samples, "runbook_pgnet_"),
        [{"alertname": a, "severity": sev, "target": "app"} for a, sev in expected],
        at,
        tmp,
    )


@pytest.mark.slow
def test_failing_calls_seen_through_the_exporter_and_the_alerts_fire(
    fresh_db: str, run_exporter, tmp_path: Path, caplog
):
    """A webhook answering 401 since its key was rotated (12 calls), 2 timeouts, 30 good calls
    and 3 requests waiting: the real exporter serves it, promtool fires both alerts from the
    served values, and no URL, header or body reaches the scrape or a log line."""
    caplog.set_level(logging.DEBUG)
    pgnet_db = fresh_db
    pgnet_schema.seed_incident(pgnet_db)
    ex = run_exporter(
        {
            "targets": [
                {
                    **target_config(pgnet_db, interval="1s"),
                    "collect_interval": "2s",
                }
            ]
        }
    )

    def seen(s) -> bool:
        return s.value("runbook_pgnet_recent_responses", target="app", outcome="4xx") == 12

    s = ex.wait_for(seen, what="the 401s in the scrape")
    assert s.value("runbook_collector_success", target="app", collector="pgnet") == 1
    assert s.value("runbook_pgnet_recent_responses", target="app", outcome="2xx") == 30
    assert s.value("runbook_pgnet_recent_responses", target="app", outcome="timed_out") == 2
    assert s.value("runbook_pgnet_recent_responses", target="app", outcome="error") == 0
    assert s.value("runbook_pgnet_request_queue_depth", target="app") == 3
    assert_declared(n for n in s.families if n.startswith("runbook_pgnet_"))
    assert_promtool_clean(s.text)
    for secret in SECRETS:
        assert secret not in s.text
        assert secret not in caplog.text
    assert_alerts_fire(s.samples, tmp_path)

    # the key is fixed and the calls succeed again: the window moves on and the 401s leave it
    with psycopg.connect(pgnet_db, autocommit=True) as c:
        c.execute("UPDATE net._http_response SET created = created - interval '1 hour'")
        pgnet_schema.respond(c, 200, 25)
    s = ex.wait_for(
        lambda s: s.value("runbook_pgnet_recent_responses", target="app", outcome="4xx") == 0,
        what="the failures out of the window",
    )
    assert s.value("runbook_pgnet_recent_responses", target="app", outcome="2xx") == 25
