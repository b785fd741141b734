"""The tables collector against real bloat: dead tuples in a table autovacuum leaves alone, an
index nobody scans, an index left invalid by a failed CREATE INDEX CONCURRENTLY, vacuum and
analyze ages, and the top-N bound. Values are read from real scrapes of the exporter."""

from __future__ import annotations

import psycopg
import pytest

from tests.helpers import Scrape, flush_stats, server_version


def target(dsn: str, lock_timeout: str = "1s", **tables: object) -> dict:
    return {
        "name": "app",
        "dsn": dsn,
        "lock_timeout": lock_timeout,
        "collect_interval": "1s",
        "collectors": {"tables": {"interval": "1s", **tables}},  # default 60s: too slow here
    }


def table(s: Scrape, name: str, metric: str) -> float | None:
    return s.value(f"runbook_pg_table_{metric}", target="app", schema="public", table=name)


def test_dead_tuples_and_index_health(fresh_db, run_exporter):
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(
            "CREATE TABLE bloated (id int PRIMARY KEY, v int, code text)"
            " WITH (autovacuum_enabled = false)"
        )
        c.execute("INSERT INTO bloated SELECT g, g % 100, 'c' || g FROM generate_series(1, 2000) g")
        c.execute("CREATE INDEX bloated_v_idx ON bloated (v)")  # never scanned: unused
        c.execute("CREATE UNIQUE INDEX bloated_code_key ON bloated (code)")  # unique: needed
        c.execute("DELETE FROM bloated WHERE id <= 600")  # 30 % dead, over the 20 % of 002
        c.execute("CREATE TABLE dupes (v int)")
        c.execute("INSERT INTO dupes VALUES (1), (1)")
        with pytest.raises(psycopg.errors.UniqueViolation):
            # fails and leaves the index behind, invalid
            c.execute("CREATE UNIQUE INDEX CONCURRENTLY dupes_v_key ON dupes (v)")
        c.execute("CREATE TABLE empty (id int)")
        flush_stats(c)
    ex = run_exporter({"targets": [target(fresh_db)]})
    s = ex.wait_for(
        lambda s: (
            table(s, "bloated", "dead_tuples") == 600
            and s.value("runbook_pg_unused_indexes", target="app") == 1
        ),
        what="dead tuples and the unused index",
    )
    assert table(s, "bloated", "live_tuples") == 1400
    assert table(s, "bloated", "dead_tuple_ratio") == pytest.approx(0.3)
    assert table(s, "bloated", "size_bytes") > 0
    assert table(s, "dupes", "dead_tuple_ratio") == 0
    assert table(s, "empty", "dead_tuple_ratio") == 0  # no rows at all: 0, not NaN
    assert s.value("runbook_pg_unused_index_size_bytes", target="app") > 0
    assert s.value("runbook_pg_invalid_indexes", target="app") == 1
    # never vacuumed nor analyzed (autovacuum is off for these tables): no age series
    assert table(s, "bloated", "last_vacuum_age_seconds") is None
    assert table(s, "bloated", "last_analyze_age_seconds") is None

    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("SET enable_seqscan = off")  # make the query use bloated_v_idx
        c.execute("SELECT count(*) FROM bloated WHERE v = 5")
        flush_stats(c)
    s = ex.wait_for(
        lambda s: s.value("runbook_pg_unused_indexes", target="app") == 0,
        what="the index counted as used once scanned",
    )
    assert s.value("runbook_pg_unused_index_size_bytes", target="app") == 0


def test_vacuum_and_analyze_ages(fresh_db, run_exporter):
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int) WITH (autovacuum_enabled = false)")
        c.execute("INSERT INTO t SELECT generate_series(1, 100)")
        c.execute("DELETE FROM t WHERE id <= 50")
        flush_stats(c)  # else the DELETE's pending counts land after VACUUM's and re-add 50
        c.execute("VACUUM t")  # vacuum only: the analyze age stays absent
        flush_stats(c)
    ex = run_exporter({"targets": [target(fresh_db)]})
    s = ex.wait_for(
        lambda s: table(s, "t", "last_vacuum_age_seconds") is not None,
        what="the vacuum age",
    )
    assert 0 <= table(s, "t", "last_vacuum_age_seconds") < 60
    assert table(s, "t", "last_analyze_age_seconds") is None
    assert table(s, "t", "dead_tuples") == 0  # vacuum removed them
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("ANALYZE t")
    s = ex.wait_for(
        lambda s: table(s, "t", "last_analyze_age_seconds") is not None,
        what="the analyze age",
    )
    assert 0 <= table(s, "t", "last_analyze_age_seconds") < 60


def test_only_top_n_tables_by_size(fresh_db, run_exporter):
    # names sort the other way round from sizes; big and small are ranked by their page counts
    # (analyzed), mid and tiny were never vacuumed nor analyzed and are sized directly
    with psycopg.connect(fresh_db, autocommit=True) as c:
        for name, rows in (("z_big", 20000), ("y_mid", 3000), ("b_small", 10), ("a_tiny", 1)):
            c.execute(f"CREATE TABLE {name} AS SELECT generate_series(1, {rows}) AS id")
        c.execute("ANALYZE z_big, b_small")
        flush_stats(c)
    ex = run_exporter({"targets": [target(fresh_db, top_n=2)]})

    def tables(s: Scrape, metric: str) -> set[str]:
        return {x["table"] for x in s.labelsets(metric) if x["target"] == "app"}

    s = ex.wait_for(
        lambda s: s.value("runbook_collector_success", target="app", collector="tables") == 1,
        what="tables collector",
    )
    # PostgreSQL 13 cannot tell a never-analyzed table (reltuples 0, not -1) from an empty
    # one, so mid ranks by its 0 pages there until autovacuum or ANALYZE visits it
    second = "y_mid" if server_version(fresh_db) >= 140000 else "b_small"
    for metric in (
        "runbook_pg_table_size_bytes",
        "runbook_pg_table_live_tuples",
        "runbook_pg_table_dead_tuples",
        "runbook_pg_table_dead_tuple_ratio",
    ):
        assert tables(s, metric) == {"z_big", second}, metric
    assert table(s, "z_big", "size_bytes") > table(s, second, "size_bytes")


def test_a_locked_table_loses_only_its_size(fresh_db, run_exporter):
    with psycopg.connect(fresh_db, autocommit=True) as c:
        for name in ("locked", "free"):
            c.execute(f"CREATE TABLE {name} AS SELECT generate_series(1, 1000) AS id")
        c.execute("CREATE INDEX free_id ON free (id)")
        flush_stats(c)
    holder = psycopg.connect(fresh_db)
    try:
        holder.execute("LOCK TABLE locked IN ACCESS EXCLUSIVE MODE")
        # REINDEX holds ACCESS EXCLUSIVE on the index until commit: its table is not sized
        holder.execute("REINDEX INDEX free_id")
        ex = run_exporter({"targets": [target(fresh_db, lock_timeout="200ms")]})
        s = ex.wait_for(
            lambda s: s.value("runbook_collector_success", target="app", collector="tables") == 1,
            what="tables collector",
        )
        assert s.value("runbook_pg_tables_size_skipped", target="app") == 2
        assert table(s, "locked", "size_bytes") is None and table(s, "free", "size_bytes") is None
        assert table(s, "locked", "live_tuples") == 1000
        assert s.value("runbook_pg_unused_index_size_bytes", target="app") > 0  # from relpages
    finally:
        holder.close()
    s = ex.wait_for(
        lambda s: s.value("runbook_pg_tables_size_skipped", target="app") == 0,
        what="sized again once released",
    )
    assert table(s, "locked", "size_bytes") > 0 and table(s, "free", "size_bytes") > 0
