"""Retention compliance (exporter/collectors/retention.py) on a real PostgreSQL: rows past
retention appear, are capped, and clear when deleted -- through the real exporter, with the
shipped rule evaluated by promtool on the real scrape; a missing table, column or privilege
fails only that table; the doctor prints the index the query needs; config errors located."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from prometheus_client.core import Metric

from exporter.collectors import retention
from exporter.config import ConfigError, parse_config
from exporter.db import open_connection
from exporter.doctor import Report
from exporter.scheduler import PartialFailure
from tests.conftest import new_database
from tests.helpers import assert_promtool_clean, assert_promtool_fires, scrape_series

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "alerts" / "retention.rules.yml"
DAY = 86400

# error_logs: 40 rows 31-70 days old (past a 30-day period) and 10 fresh ones; sessions: a
# `date` column, all within its period; a text column to be refused
SCHEMA = """
CREATE TABLE public.error_logs (id bigserial PRIMARY KEY, error_type text,
  created_at timestamptz NOT NULL, note text);
INSERT INTO public.error_logs (error_type, created_at)
SELECT 'timeout', now() - make_interval(days => 30 + g) FROM generate_series(1, 40) g;
INSERT INTO public.error_logs (error_type, created_at)
SELECT 'timeout', now() - make_interval(hours => g) FROM generate_series(1, 10) g;
CREATE TABLE public.sessions (id int, day date);
INSERT INTO public.sessions VALUES (1, current_date - 2);
"""


@pytest.fixture
def logs_db(pg_server: str) -> Iterator[str]:
    with new_database(pg_server) as dsn:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(SCHEMA)
        yield dsn


def config(dsn: str, items: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"targets": [{"name": "app", "dsn": dsn, "retention": items, **extra}]}


ERROR_LOGS = {"table": "error_logs", "column": "created_at", "period": "30d", "grace": "1d"}


def collect(dsn: str, items: list[dict[str, Any]]) -> tuple[list[Metric], str | None]:
    target = parse_config(yaml.safe_dump(config(dsn, items))).targets[0]

    async def main() -> tuple[list[Metric], str | None]:
        conn = await open_connection(target)
        try:
            c = retention.Retention(target, target.collectors.retention)
            try:
                return await c.collect(conn), None
            except PartialFailure as e:
                return e.families, str(e)
        finally:
            await conn.close()

    return asyncio.run(main())


def values(fams: list[Metric], name: str) -> dict[str, float]:
    return {s.labels["table"]: s.value for f in fams for s in f.samples if s.name == name}


def test_rows_past_retention_counted_capped_and_aged(logs_db: str) -> None:
    fams, failure = collect(
        logs_db,
        [
            ERROR_LOGS,
            {"table": "public.sessions", "column": "day", "period": "7d", "grace": 0},
        ],
    )
    assert failure is None
    assert values(fams, "runbook_retention_expired_rows") == {"error_logs": 40, "sessions": 0}
    assert values(fams, "runbook_retention_expired_rows_capped") == {
        "error_logs": 0,
        "sessions": 0,
    }
    age = values(fams, "runbook_retention_oldest_row_age_seconds")
    assert 70 * DAY - 60 < age["error_logs"] < 70 * DAY + 60
    assert 1 * DAY < age["sessions"] < 3 * DAY + 60  # a date: midnight, in the server's zone
    assert values(fams, "runbook_retention_period_seconds") == {
        "error_logs": 30 * DAY,
        "sessions": 7 * DAY,
    }
    assert values(fams, "runbook_retention_grace_seconds") == {"error_logs": DAY, "sessions": 0}
    assert values(fams, "runbook_retention_up") == {"error_logs": 1, "sessions": 1}

    fams, _ = collect(logs_db, [{**ERROR_LOGS, "max_count": 25}])
    assert values(fams, "runbook_retention_expired_rows") == {"error_logs": 25}
    assert values(fams, "runbook_retention_expired_rows_capped") == {"error_logs": 1}


def test_a_broken_table_fails_alone(logs_db: str) -> None:
    with psycopg.connect(logs_db, autocommit=True) as c:
        c.execute("CREATE TABLE public.secret (created_at timestamptz)")
        c.execute("CREATE ROLE retention_reader LOGIN")
        c.execute("GRANT SELECT ON public.error_logs, public.sessions TO retention_reader")
    dsn = psycopg.conninfo.make_conninfo(logs_db, user="retention_reader")
    fams, failure = collect(
        dsn,
        [
            {"table": "public.nope", "period": "30d"},
            {"table": "public.sessions", "column": "missing", "period": "30d"},
            {"table": "public.secret", "period": "30d"},
            {**ERROR_LOGS, "table": "public.error_logs"},
        ],
    )
    try:
        assert values(fams, "runbook_retention_expired_rows") == {"error_logs": 40}
        up = {
            s.labels["table"]: s.value
            for f in fams
            for s in f.samples
            if s.name == "runbook_retention_up"
        }
        assert up == {"nope": 0, "sessions": 0, "secret": 0, "error_logs": 1}
        assert failure is not None
        for text in (
            'targets[0].retention[0].table: table "public.nope" does not exist',
            'targets[0].retention[1].column: column "missing" does not exist in public.sessions',
            'targets[0].retention[2].table: permission denied: cannot SELECT from "public.secret"',
        ):
            assert text in failure, failure
    finally:
        with psycopg.connect(logs_db, autocommit=True) as c:
            c.execute("DROP OWNED BY retention_reader; DROP ROLE retention_reader")


def test_a_column_that_is_not_a_timestamp_is_named(logs_db: str) -> None:
    fams, failure = collect(
        logs_db, [{"table": "public.error_logs", "column": "note", "period": "30d"}]
    )
    assert values(fams, "runbook_retention_up") == {"error_logs": 0}
    assert failure == (
        'targets[0].retention[0].column: column "note" is text, not a timestamp or date'
    )


def test_doctor_prints_the_index_then_sees_it(
    logs_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = parse_config(yaml.safe_dump(config(logs_db, [ERROR_LOGS]))).targets[0]

    def doctor() -> tuple[Report, str]:
        report = Report()

        async def main() -> None:
            conn = await open_connection(target)
            try:
                async with conn.transaction():
                    c = retention.Retention(target, target.collectors.retention)
                    await c.doctor(conn, report)
            finally:
                await conn.close()

        capsys.readouterr()
        asyncio.run(main())
        return report, capsys.readouterr().out

    report, out = doctor()
    assert report.findings == 1
    statement = (
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS error_logs_created_at_retention_idx ON "
        "public.error_logs (created_at);"
    )
    assert statement in out, out
    with psycopg.connect(logs_db, autocommit=True) as c:
        c.execute(statement)
    report, out = doctor()
    assert report.findings == 0, out
    assert "an index on created_at bounds the query" in out


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ({"table": "a.b.c", "period": "30d"}, "retention[0].table: Value error, invalid table"),
        (
            {"table": "t", "period": "30m"},
            "retention[0].period: period (1800s) must be at least 1h",
        ),
        ({"table": "t", "period": "30d", "max_count": 0}, "retention[0].max_count: Input should"),
        ({"table": "t", "period": "30d", "colum": "x"}, "retention[0].colum: unknown key"),
        ({"table": "t"}, "retention[0].period: Field required"),
    ],
)
def test_config_errors_are_located(item: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(yaml.safe_dump(config("host=127.0.0.1", [item])), "c.yml")
    assert f"targets[0].{expected}".replace("Value error, ", "") in str(e.value), str(e.value)


def test_a_table_given_twice_is_refused() -> None:
    with pytest.raises(
        ConfigError,
        match=r"targets\[0\]\.retention: retention tables must be "
        r"unique within a target: \['public\.t'\]",
    ):
        parse_config(
            yaml.safe_dump(
                config(
                    "host=127.0.0.1",
                    [{"table": "t", "period": "1d"}, {"table": "public.t", "period": "2d"}],
                )
            ),
            "c.yml",
        )


# --- through the real exporter: appear, alert, clear -----------------------------------------


def test_rows_past_retention_alert_and_clear_through_the_exporter(
    logs_db: str, run_exporter: Any, tmp_path: Path
) -> None:
    ex = run_exporter(config(logs_db, [ERROR_LOGS], collectors={"retention": {"interval": "1s"}}))
    s = ex.wait_for(
        lambda s: s.value("runbook_retention_expired_rows", table="error_logs") == 40,
        what="40 rows past retention",
    )
    assert s.value("runbook_collector_success", collector="retention") == 1
    assert_promtool_clean(s.text)
    alert = {
        "alertname": "RetentionCleanupBehind",
        "severity": "warning",
        "target": "app",
        "schema": "public",
        "table": "error_logs",
    }
    # the scraped values held for an hour: the 70-day-old row keeps it firing past its for:
    assert_promtool_fires(
        [RULES], scrape_series(s.samples, "runbook_retention_"), [alert], "35m", tmp_path
    )

    # the cleanup job runs: the rows past retention are deleted, the count and the alert clear
    with psycopg.connect(logs_db, autocommit=True) as c:
        c.execute("DELETE FROM public.error_logs WHERE created_at < now() - interval '30 days'")
    s = ex.wait_for(
        lambda s: s.value("runbook_retention_expired_rows", table="error_logs") == 0,
        what="the rows past retention cleared",
    )
    assert s.value("runbook_retention_oldest_row_age_seconds", table="error_logs") < DAY
    assert_promtool_fires(
        [RULES], scrape_series(s.samples, "runbook_retention_"), [], "35m", tmp_path
    )
