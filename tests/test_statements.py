"""The statements collector on a real pg_stat_statements: a slow statement is counted, the top N
is bounded, query texts are collapsed, truncated or turned off, the exporter's own statements
are left out; without the extension (or its preloaded library) the collector reports 0, logs
that once, and nothing else breaks. Values are read from real scrapes of the exporter."""

from __future__ import annotations

import logging
import uuid

import psycopg
import pytest

from exporter.collectors.statements import normalise, query_label
from exporter.demo.pgserver import LocalPostgres
from exporter.secrets import register_secret
from tests.helpers import Scrape
from tests.pg import selected_bin_dir

LOGGER = "exporter.collectors.statements"


def target(dsn: str, name: str = "app", thresholds: dict | None = None, **statements) -> dict:
    t: dict = {
        "name": name,
        "dsn": dsn,
        "collect_interval": "1s",
        "collectors": {"statements": {"interval": "1s", **statements}},  # default 60s
    }
    if thresholds:
        t["thresholds"] = thresholds
    return t


def runs(s: Scrape, collector: str, target: str = "app") -> float:
    return s.value("runbook_collector_runs_total", target=target, collector=collector) or 0


def info(s: Scrape, target: str = "app") -> dict[str, str]:
    """queryid -> query label of the runbook_pg_statement_info series."""
    return {
        x["queryid"]: x["query"]
        for x in s.labelsets("runbook_pg_statement_info")
        if x["target"] == target
    }


def test_slow_statement_counted_and_top_n_bounded(fresh_db, run_exporter):
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("SELECT pg_sleep(1.2)")
        for i in range(6):  # fast, distinct statements to compete for the top N
            c.execute(f"SELECT count(*) FROM generate_series(1, 100) AS g{i}")
    ex = run_exporter(
        {
            "targets": [
                target(
                    fresh_db,
                    thresholds={"slow_statement_mean": "1s"},
                    top_n=3,
                    query_text_length=20,
                )
            ]
        }
    )
    s = ex.wait_for(
        lambda s: s.value("runbook_pg_slow_statements", target="app") == 1,
        what="the slow statement",
    )
    assert s.value("runbook_pg_stat_statements_available", target="app") == 1
    calls = s.labelsets("runbook_pg_statement_calls_total")
    assert len(calls) == 3, calls  # top_n
    texts = info(s)
    assert set(texts) == {x["queryid"] for x in calls}
    assert all(len(q) <= 20 for q in texts.values()), texts
    sleep = [qid for qid, q in texts.items() if q.startswith("SELECT pg_sleep(")]
    assert len(sleep) == 1, texts
    qid = sleep[0]
    assert s.value("runbook_pg_statement_calls_total", target="app", queryid=qid) == 1
    assert s.value("runbook_pg_statement_seconds_total", target="app", queryid=qid) >= 1.19
    assert s.value("runbook_pg_statement_mean_seconds", target="app", queryid=qid) >= 1.19


def test_own_statements_left_out_and_texts_collapsed(fresh_db, run_exporter):
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("SELECT relname\n\n   FROM pg_class\tWHERE relname = 'canary'")
    fast = {"interval": "1s"}
    t = target(fresh_db, top_n=1000, query_text_length=1000)
    t["collectors"] |= {"tables": fast, "connections": fast, "database": fast}
    ex = run_exporter({"targets": [t]})
    # wait until every collector has run a few times, then look at what was recorded
    s = ex.wait_for(
        lambda s: (
            all(runs(s, c) >= 3 for c in ("connections", "database", "tables", "statements"))
            and any("pg_class" in q for q in info(s).values())
        ),
        what="several runs of every collector",
    )
    texts = list(info(s).values())
    assert "SELECT relname FROM pg_class WHERE relname = $1" in texts  # collapsed, normalised
    for own in ("pg_stat_activity", "pg_stat_database", "pg_stat_user_tables", "set_config"):
        assert not any(own in q for q in texts), (own, texts)
    assert not any("runbook-exporter" in q for q in texts)


def test_query_text_can_be_turned_off(fresh_db, run_exporter):
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("SELECT 1")
    ex = run_exporter({"targets": [target(fresh_db, top_n=5, query_text_length=0)]})
    s = ex.wait_for(
        lambda s: (
            s.value("runbook_collector_success", target="app", collector="statements") == 1
            and s.labelsets("runbook_pg_statement_calls_total")
        ),
        what="statement series",
    )
    assert 0 < len(s.labelsets("runbook_pg_statement_calls_total")) <= 5
    assert s.labelsets("runbook_pg_statement_info") == []


@pytest.mark.slow
def test_database_without_extension(fresh_db, run_exporter, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("DROP EXTENSION pg_stat_statements")
    name = f"nopgss_{uuid.uuid4().hex[:8]}"  # the warning is once per target name
    ex = run_exporter({"targets": [target(fresh_db, name)]})
    s = ex.wait_for(
        lambda s: (
            runs(s, "statements", name) >= 3
            and all(
                s.value("runbook_collector_success", target=name, collector=c) == 1
                for c in ("connections", "database", "statements")
            )
        ),
        what="three runs without the extension, other collectors fine",
    )
    assert s.value("runbook_pg_stat_statements_available", target=name) == 0
    assert s.value("runbook_pg_slow_statements", target=name) is None
    assert s.labelsets("runbook_pg_statement_calls_total") == []
    warnings = [r for r in caplog.records if r.name == LOGGER and getattr(r, "target", "") == name]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # once, not every run
    assert "CREATE EXTENSION pg_stat_statements" in warnings[0].hint

    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("CREATE EXTENSION pg_stat_statements")
    ex.wait_for(
        lambda s: (
            s.value("runbook_pg_stat_statements_available", target=name) == 1
            and s.value("runbook_pg_slow_statements", target=name) == 0
        ),
        what="available once created",
    )


@pytest.mark.slow
def test_library_not_preloaded(run_exporter, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with LocalPostgres(settings={"shared_preload_libraries": ""}, bin_dir=selected_bin_dir()) as pg:
        with psycopg.connect(pg.dsn, autocommit=True) as c:
            c.execute("CREATE EXTENSION pg_stat_statements")  # works; reading it does not
        name = f"nolib_{uuid.uuid4().hex[:8]}"
        ex = run_exporter({"targets": [target(pg.dsn, name)]})
        s = ex.wait_for(
            lambda s: (
                runs(s, "statements", name) >= 2
                and s.value("runbook_collector_success", target=name, collector="statements") == 1
                and s.value("runbook_collector_success", target=name, collector="connections") == 1
            ),
            what="statements collector succeeding without the library",
        )
        assert s.value("runbook_pg_stat_statements_available", target=name) == 0
    warnings = [r for r in caplog.records if r.name == LOGGER and getattr(r, "target", "") == name]
    assert len(warnings) == 1
    assert "shared_preload_libraries" in warnings[0].reason


def test_literals_of_utility_statements_are_not_exported(pg_server, fresh_db, run_exporter):
    # pg_stat_statements stores utility statements verbatim, a password included
    role = f"r_{uuid.uuid4().hex[:8]}"
    secret = f"pw-{uuid.uuid4().hex}"
    try:
        with psycopg.connect(fresh_db, autocommit=True) as c:
            c.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{secret}'")
            c.execute(f"DO $$BEGIN PERFORM '{secret}'; END$$ -- {secret}")
            c.execute('SELECT 1 AS "it\'s"')  # a quote inside an identifier is kept
        ex = run_exporter({"targets": [target(fresh_db, top_n=1000, query_text_length=1000)]})
        s = ex.wait_for(
            lambda s: any(q.startswith("CREATE ROLE") for q in info(s).values()),
            what="the CREATE ROLE statement",
        )
        assert secret not in s.text
        texts = list(info(s).values())
        assert f'CREATE ROLE "{role}" LOGIN PASSWORD $1' in texts
        assert "DO $1" in texts
        assert 'SELECT $1 AS "it\'s"' in texts
    finally:
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')


# --- normalise: hostile statement texts, no database needed ---------------------------------

SECRET = "tok_live_9f8e7d"
HOSTILE = [
    # (text, expected label); the secret must be gone from every one
    (f"SET app.token = {SECRET}", "SET app.token = $1"),
    (f"set app.token to '{SECRET}'", "set app.token to $1"),
    (f"SET SESSION app.token TO {SECRET}-x", "SET SESSION app.token TO $1"),
    (f'SET LOCAL "app"."token" = "{SECRET}"', 'SET LOCAL "app"."token" = $1'),
    (f"SET TIME ZONE '{SECRET}'", "SET TIME ZONE $1"),
    (f"SET ROLE {SECRET}", "SET ROLE $1"),
    (f"ALTER ROLE app SET app.token = {SECRET}", "ALTER ROLE app SET app.token = $1"),
    (f"ALTER SYSTEM SET app.token TO '{SECRET}'", "ALTER SYSTEM SET app.token TO $1"),
    (f"SET a = {SECRET}; SET b TO {SECRET}", "SET a = $1; SET b TO $2"),
    ("RESET app.token", "RESET app.token"),
    (f"SELECT set_config('app.token', '{SECRET}', false)", "SELECT set_config($1, $2, false)"),
    (f"SELECT 1 /* a /* nested */ {SECRET} */ + 2", "SELECT $1 + $2"),
    (f"/* {SECRET} */ SELECT 1 -- {SECRET}", "SELECT $1"),
    (f"SELECT 1 -- {SECRET}\nFROM t", "SELECT $1 FROM t"),
    (f"SELECT E'it\\'s {SECRET}', 'a''{SECRET}'", "SELECT $1, $2"),
    (f"SELECT $a$ $$ {SECRET} $$ $a$, $${SECRET}$$", "SELECT $1, $2"),
    (f"DO $body$ BEGIN PERFORM '{SECRET}'; END $body$", "DO $1"),
    (f"SELECT U&'{SECRET}\\0061', B'0101', X'1F', N'{SECRET}'", "SELECT $1, $2, $3, $4"),
    (f"SELECT '{SECRET}", "SELECT $1"),  # unterminated (a cut text): to the end
    (f"SELECT 1 /* {SECRET}", "SELECT $1"),
    (f"SELECT $x$ {SECRET}", "SELECT $1"),
    ("SELECT 4111111111111111, 1e10, .5, 0x1F, 1_000_000", "SELECT $1, $2, $3, $4, $5"),
    (f"SELECT $1, $2, '{SECRET}'", "SELECT $1, $2, $3"),  # numbered after the text's own
    (f"ALTER ROLE app PASSWORD '{SECRET}'", "ALTER ROLE app PASSWORD $1"),
    (f"COPY t FROM PROGRAM 'curl {SECRET}'", "COPY t FROM PROGRAM $1"),
    (f"SELECT DATE '{SECRET}'", "SELECT DATE $1"),
]


@pytest.mark.parametrize(("text", "expected"), HOSTILE)
def test_normalise_removes_literals_set_values_and_comments(text, expected):
    assert normalise(text) == expected
    assert SECRET not in query_label(text, 1000)


@pytest.mark.parametrize(
    "text",
    [
        "UPDATE t SET a = $1, b = $2 WHERE id = $3",  # DML's SET keeps its shape
        'SELECT "it\'s", "a""b", t1.c2, été FROM s1.t1',  # identifiers stay
        "SELECT count(*) FROM jobs WHERE status = $1",
    ],
)
def test_normalise_keeps_identifiers_and_normalised_dml(text):
    assert normalise(text) == text


def test_label_is_normalised_before_truncation_and_redacted():
    text = f"SELECT '{'x' * 50} {SECRET}' /* {SECRET} */, col"
    assert query_label(text, 12) == "SELECT $1 ,"
    register_secret("registered-secret-value")
    assert "registered-secret-value" not in query_label('SELECT "registered-secret-value"', 100)
