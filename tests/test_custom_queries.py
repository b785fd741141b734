"""Custom SQL metrics (exporter/collectors/custom.py, exporter/queryconfig.py) on a real
PostgreSQL: runbook 000's error_logs counted by error_type, failures as metrics (a division by
zero, a missing table, a write refused by the read-only session), the cardinality cap, values
that are not numbers, config errors located; and through the real exporter, a scrape that
promtool accepts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import yaml
from prometheus_client.core import Metric

from exporter.collectors import custom
from exporter.config import ConfigError, parse_config
from exporter.db import open_connection, run_transaction
from exporter.doctor import Report
from exporter.scheduler import PartialFailure
from tests.conftest import new_database
from tests.helpers import assert_declared, assert_promtool_clean

# runbook 000's error_logs (error_type, timestamp), seeded: 3 timeouts and 2 validation errors
# in the last hour, 4 older ones that the hour's count must leave out
SCHEMA = """
CREATE TABLE public.error_logs (
  id bigserial PRIMARY KEY,
  error_type text NOT NULL,
  message text,
  "timestamp" timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON public.error_logs ("timestamp");
INSERT INTO public.error_logs (error_type, "timestamp")
SELECT t, now() - interval '5 minutes' FROM unnest(ARRAY['timeout','timeout','timeout',
  'validation','validation']) t;
INSERT INTO public.error_logs (error_type, "timestamp")
SELECT 'timeout', now() - interval '3 hours' FROM generate_series(1, 4);
"""

ERRORS_QUERY = {
    "name": "error_logs_last_hour",
    "sql": "SELECT error_type, count(*) AS errors FROM public.error_logs\n"
    "WHERE \"timestamp\" > now() - interval '1 hour' GROUP BY error_type",
    "interval": "1m",
    "labels": ["error_type"],
    "static_labels": {"runbook": "000"},
    "metrics": [
        {
            "name": "app_error_logs_last_hour",
            "column": "errors",
            "help": "Errors logged in the last hour by type (runbook 000).",
        }
    ],
}


@pytest.fixture(scope="module")
def logs_db(pg_server: str) -> Iterator[str]:
    with new_database(pg_server) as dsn:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(SCHEMA)
        yield dsn


def target_yaml(dsn: str, queries: list[dict[str, Any]], **extra: Any) -> str:
    return yaml.safe_dump({"targets": [{"name": "app", "dsn": dsn, "queries": queries, **extra}]})


def collect(dsn: str, queries: list[dict[str, Any]]) -> tuple[list[Metric], str | None]:
    """One run of the collector in a run's transaction: (families, the failure message)."""
    target = parse_config(target_yaml(dsn, queries)).targets[0]

    async def main() -> tuple[list[Metric], str | None]:
        conn = await open_connection(target)
        try:
            async with run_transaction(conn, target):
                try:
                    return await custom.Custom(target, target.collectors.custom).collect(conn), None
                except PartialFailure as e:
                    return e.families, str(e)
        finally:
            await conn.close()

    return asyncio.run(main())


def samples(fams: list[Metric], name: str) -> dict[tuple, float]:
    return {
        tuple(sorted(s.labels.items())): s.value for f in fams for s in f.samples if s.name == name
    }


def success(fams: list[Metric], query: str) -> float:
    return samples(fams, "runbook_custom_query_success")[(("query", query), ("target", "app"))]


def query(name: str, sql: str, **kw: Any) -> dict[str, Any]:
    return {
        "name": name,
        "sql": sql,
        "metrics": [{"name": f"app_{name}", "column": "v", "help": f"{name}."}],
        **kw,
    }


def test_labels_and_values_of_the_runbook_query(logs_db: str) -> None:
    fams, failure = collect(logs_db, [ERRORS_QUERY])
    assert failure is None
    got = samples(fams, "app_error_logs_last_hour")
    base = (("runbook", "000"), ("target", "app"))
    assert got == {
        (("error_type", "timeout"), *base): 3.0,
        (("error_type", "validation"), *base): 2.0,
    }
    assert success(fams, "error_logs_last_hour") == 1
    assert samples(fams, "runbook_custom_query_series_dropped") == {
        (("query", "error_logs_last_hour"), ("target", "app")): 0.0
    }


def test_a_failing_query_is_a_metric_and_the_others_are_served(logs_db: str) -> None:
    fams, failure = collect(
        logs_db,
        [
            query("divide", "SELECT 1/0 AS v"),
            query("missing", "SELECT count(*) AS v FROM public.no_such_table"),
            query(
                "write",
                "WITH d AS (DELETE FROM public.error_logs RETURNING 1) SELECT count(*) AS v FROM d",
            ),
            query("seq", "SELECT nextval('public.error_logs_id_seq') AS v"),
            ERRORS_QUERY,
        ],
    )
    assert success(fams, "error_logs_last_hour") == 1
    assert len(samples(fams, "app_error_logs_last_hour")) == 2
    for name in ("divide", "missing", "write", "seq"):
        assert success(fams, name) == 0, name
        assert not samples(fams, f"app_{name}"), name
    assert failure is not None
    assert "targets[0].queries[0] (divide): DivisionByZero: division by zero" in failure
    assert 'relation "public.no_such_table" does not exist' in failure
    # the session refuses the write: said so, and nothing was deleted
    # (PostgreSQL names the top-level statement of a data-modifying WITH: SELECT)
    assert "(write): ReadOnlySqlTransaction: cannot execute SELECT in a read-only" in failure
    assert "custom queries run in a read-only transaction" in failure
    assert "cannot execute nextval() in a read-only transaction" in failure
    with psycopg.connect(logs_db) as c:
        assert c.execute("SELECT count(*) FROM public.error_logs").fetchone() == (9,)


def test_two_statements_are_refused_by_the_server(logs_db: str) -> None:
    # the config admits it (it starts with SELECT); the extended protocol refuses the second
    fams, failure = collect(logs_db, [query("two", "SELECT 1 AS v; DELETE FROM public.error_logs")])
    assert success(fams, "two") == 0
    assert failure is not None and "cannot insert multiple commands" in failure
    with psycopg.connect(logs_db) as c:
        assert c.execute("SELECT count(*) FROM public.error_logs").fetchone() == (9,)


def test_the_cardinality_cap_drops_and_counts(logs_db: str) -> None:
    q = query("many", "SELECT g::text AS n, g AS v FROM generate_series(1, 250) g", labels=["n"])
    fams, failure = collect(logs_db, [{**q, "max_series": 100}])
    assert failure is None
    assert len(samples(fams, "app_many")) == 100
    assert samples(fams, "runbook_custom_query_series_dropped") == {
        (("query", "many"), ("target", "app")): 150.0
    }


@pytest.mark.parametrize(
    ("sql", "labels", "expected"),
    [
        ("SELECT 'x'::text AS v", [], "column 'v' is str, not a number"),
        ("SELECT 1 AS v", ["kind"], "column(s) ['kind'] not in the result (it has ['v'])"),
        ("SELECT 'a' AS k, 1 AS v UNION ALL SELECT 'a', 2", ["k"], "two rows have the same"),
        ("SELECT pg_sleep(2)::text AS k, 1 AS v", ["k"], "QueryCanceled"),
    ],
)
def test_results_that_cannot_be_metrics_fail_the_query(
    logs_db: str, sql: str, labels: list[str], expected: str
) -> None:
    fams, failure = collect(logs_db, [query("bad", sql, labels=labels, timeout="200ms")])
    assert success(fams, "bad") == 0
    assert failure is not None and expected in failure, failure


def test_null_values_give_no_sample_and_types_convert(logs_db: str) -> None:
    sql = (
        "SELECT * FROM (VALUES ('a', 1.5::numeric, 2::bigint), ('b', NULL, 3), (NULL, 4, 5))"
        " AS t(k, v, w)"
    )
    q = {
        "name": "typed",
        "sql": sql,
        "labels": ["k"],
        "metrics": [
            {"name": "app_v", "column": "v", "help": "v."},
            {"name": "app_w", "column": "w", "type": "counter", "help": "w."},
        ],
    }
    fams, failure = collect(logs_db, [q])
    assert failure is None
    assert samples(fams, "app_v") == {
        (("k", "a"), ("target", "app")): 1.5,
        (("k", ""), ("target", "app")): 4.0,
    }
    assert set(samples(fams, "app_w_total").values()) == {2.0, 3.0, 5.0}


def test_a_query_runs_at_its_own_interval(logs_db: str) -> None:
    target = parse_config(
        target_yaml(logs_db, [ERRORS_QUERY, query("often", "SELECT random() AS v")])
    ).targets[0]
    c = custom.Custom(target, target.collectors.custom)

    async def main() -> list[float]:
        conn = await open_connection(target)
        try:
            out = []
            for _ in range(2):
                await c.collect(conn)
                out.append(c.states["error_logs_last_hour"].last_run)
                out.append(c.states["often"].last_run)
            return out
        finally:
            await conn.close()

    first_hour, first_often, second_hour, second_often = asyncio.run(main())
    assert second_hour == first_hour  # 1m interval: not due again within the test
    # `often` has the collector's interval (15 s), also not due within a second; still served
    assert second_often == first_often


def test_doctor_explains_each_query(logs_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    target = parse_config(
        target_yaml(
            logs_db,
            [
                ERRORS_QUERY,
                query("missing", "SELECT v FROM nowhere"),
                query("nocol", "SELECT 1 AS n FROM public.error_logs WHERE false"),
            ],
        )
    ).targets[0]
    report = Report()

    async def main() -> None:
        conn = await open_connection(target)
        try:
            async with run_transaction(conn, target):
                await custom.Custom(target, target.collectors.custom).doctor(conn, report)
        finally:
            await conn.close()

    capsys.readouterr()
    asyncio.run(main())
    out = capsys.readouterr().out
    assert "custom query error_logs_last_hour [targets[0].queries[0]]: plan " in out
    assert "cost " in out
    assert "custom query missing [targets[0].queries[1]]: EXPLAIN fails: UndefinedTable" in out
    # a query that returns no row at runtime cannot check its columns: the doctor does
    assert "custom query nocol [targets[0].queries[2]]: column(s) ['v'] not in the result" in out
    assert report.findings == 2


# --- configuration --------------------------------------------------------------------------


def metric(**kw: Any) -> dict[str, Any]:
    return {"name": "app_x", "column": "v", "help": "x.", **kw}


@pytest.mark.parametrize(
    ("queries", "extra", "expected"),
    [
        (
            [query("q", "SELECT 1 AS v") | {"metrics": [metric(name="runbook_x")]}],
            {},
            "targets[0].queries[0].metrics[0].name: Value error, metric name 'runbook_x': the "
            "prefix runbook_ is the exporter's own",
        ),
        (
            [query("q", "SELECT 1 AS v") | {"metrics": [metric(name="app-x")]}],
            {},
            "targets[0].queries[0].metrics[0].name: Value error, invalid metric name 'app-x'",
        ),
        (
            [query("q", "SELECT 1 AS v") | {"metrics": [metric(name="app_x_total")]}],
            {},
            "targets[0].queries[0].metrics[0].name: metric name 'app_x_total': _total is for "
            "counters",
        ),
        (
            [query("q", "SELECT 1 AS v", labels=["target"])],
            {},
            "targets[0].queries[0].labels: Value error, label 'target' is reserved",
        ),
        (
            [query("q", "DELETE FROM t")],
            {},
            "targets[0].queries[0].sql: Value error, a metric query is one SELECT",
        ),
        (
            [query("q", "SELECT 1 AS v"), query("q", "SELECT 2 AS v")],
            {},
            "targets[0].queries[1].name: query names must be unique: 'q'",
        ),
        (
            [
                query("a", "SELECT 1 AS v") | {"metrics": [metric()]},
                query("b", "SELECT 1 AS v") | {"metrics": [metric(type="counter")]},
            ],
            {},
            "targets[0].queries[1].metrics[0].name: metric app_x_total is also given by query 'a'",
        ),
        (
            [query("q", "SELECT 1 AS v", interval="5s")],
            {},
            "targets[0].queries[0].interval: queries[0].interval (5s) must be at least 15s",
        ),
        (
            [query("q", "SELECT 1 AS v", timeout="30s")],
            {},
            "targets[0].queries[0].timeout: queries[0].timeout (30s) must not exceed the custom "
            "collector's timeout (collectors.custom.timeout) (10s)",
        ),
        (
            [query("q", "SELECT 1 AS v", labels=["v"])],
            {},
            "targets[0].queries[0].metrics[0].column: column 'v' is a label column",
        ),
    ],
)
def test_config_errors_are_located(queries: list, extra: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(target_yaml("host=127.0.0.1", queries, **extra), "c.yml")
    assert expected.replace("Value error, ", "") in str(e.value), str(e.value)


def test_one_metric_on_two_targets_has_one_type() -> None:
    text = yaml.safe_dump(
        {
            "targets": [
                {
                    "name": n,
                    "dsn": "host=127.0.0.1",
                    "queries": [query("q", "SELECT 1 AS v") | {"metrics": [metric(type=kind)]}],
                }
                for n, kind in (("a", "gauge"), ("b", "counter"))
            ]
        }
    )
    with pytest.raises(
        ConfigError,
        match=r"targets\[1\]\.queries\[0\]\.metrics\[0\]\.type: "
        "metric app_x_total has another type on target a",
    ):
        parse_config(text, "c.yml")


# --- through the real exporter --------------------------------------------------------------


def test_served_by_the_exporter_and_promtool_clean(logs_db: str, run_exporter: Any) -> None:
    config = yaml.safe_load(
        target_yaml(logs_db, [ERRORS_QUERY, query("divide", "SELECT 1/0 AS v")])
    )
    ex = run_exporter(config)
    s = ex.wait_for(
        lambda s: (
            s.value("runbook_custom_query_success", query="divide") == 0
            and s.value("app_error_logs_last_hour", error_type="timeout") == 3
        ),
        what="the custom queries' first run",
    )
    assert s.value("runbook_custom_query_success", query="error_logs_last_hour") == 1
    assert s.value("app_error_logs_last_hour", error_type="validation", runbook="000") == 2
    assert s.value("runbook_collector_success", collector="custom") == 0  # divide fails
    assert s.value("runbook_collector_success", collector="tables") == 1
    assert_declared(s.families, also={"app_error_logs_last_hour"})
    assert_promtool_clean(s.text)


def test_no_rows_is_success_without_samples(logs_db: str) -> None:
    q = query(
        "none",
        "SELECT error_type, count(*) AS v FROM public.error_logs WHERE false GROUP BY error_type",
        labels=["error_type"],
    )
    fams, failure = collect(logs_db, [q])
    assert failure is None
    assert success(fams, "none") == 1
    assert not samples(fams, "app_none")


def test_queries_share_the_run_budget(logs_db: str) -> None:
    # two 1.2 s queries in a 2 s run: the first is served, the second gets the time left and is
    # cancelled by PostgreSQL, and the run ends within its budget instead of being cut
    sleepy = "SELECT 1 AS v FROM pg_sleep(1.2)"
    target = parse_config(
        target_yaml(
            logs_db,
            [query("first", sleepy, timeout="1500ms"), query("second", sleepy, timeout="1500ms")],
            collectors={"custom": {"timeout": "2s"}},
        )
    ).targets[0]
    c = custom.Custom(target, target.collectors.custom)

    async def main() -> tuple[float, str]:
        conn = await open_connection(target)
        try:
            start = time.monotonic()
            async with run_transaction(conn, target):
                with pytest.raises(PartialFailure) as e:
                    await c.collect(conn)
            return time.monotonic() - start, str(e.value)
        finally:
            await conn.close()

    took, failure = asyncio.run(main())
    assert took < 2.0
    assert c.states["first"].success and not c.states["second"].success
    assert "(second): QueryCanceled" in failure
    assert "s left of collectors.custom.timeout; raise it" in failure
