"""Measure `runbook-exporter discover` where it could get expensive. Run by hand:

    .venv/bin/python bench/discover_catalog.py [--tables 2000] [--rows 1000000]

On a throwaway PostgreSQL (exporter/demo/pgserver.py) it creates `--tables` tables with a
status column of non-job values (users-like: active/inactive), plus one jobs table of `--rows`
rows that has no planner statistics (autovacuum off, never analyzed), so discover must sample
it. It runs discover (the real CLI, a subprocess) three times and reports the wall time, the
statements it sent with their total and largest execution time, and the rows it read from the
big table (pg_stat_user_tables.seq_tup_read + idx_tup_fetch before and after): the catalog
reads grow with the number of tables, the sample stays at its LIMIT whatever the table's size.
Figures: docs/configuration.md ("Writing a configuration").
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import psycopg

from exporter.demo.pgserver import LocalPostgres

READ = (
    "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) FROM pg_stat_user_tables"
    " WHERE relname = 'big_jobs'"
)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tables", type=int, default=2000)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with LocalPostgres() as pg, psycopg.connect(pg.dsn, autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        for i in range(args.tables):
            c.execute(
                f"CREATE TABLE account_{i} (id int, status text, created_at timestamptz,"
                " updated_at timestamptz)"
            )
            c.execute(f"INSERT INTO account_{i} VALUES (1, 'active', now(), now())")
        c.execute("ANALYZE")
        c.execute(
            "CREATE TABLE big_jobs (id bigserial, status text, created_at timestamptz,"
            " updated_at timestamptz) WITH (autovacuum_enabled = false)"
        )
        c.execute(
            "INSERT INTO big_jobs (status, created_at, updated_at)"
            " SELECT (ARRAY['pending','running','done','failed'])[i %% 4 + 1], now(), now()"
            " FROM generate_series(1, %s) i",
            (args.rows,),
        )
        print(f"{args.tables} non-queue tables, big_jobs with {args.rows} rows, no statistics")
        for run in range(args.runs):
            c.execute("SELECT pg_stat_statements_reset(), pg_stat_force_next_flush()")
            (before,) = c.execute(READ).fetchone()
            start = time.perf_counter()
            r = subprocess.run(
                [sys.executable, "-m", "exporter", "discover", "--dsn", pg.dsn],
                capture_output=True,
                text=True,
                timeout=300,
            )
            wall = time.perf_counter() - start
            c.execute("SELECT pg_stat_force_next_flush()")
            (after,) = c.execute(READ).fetchone()
            calls, total, largest = c.execute(
                "SELECT sum(calls), sum(total_exec_time), max(max_exec_time)"
                " FROM pg_stat_statements WHERE query LIKE '%%runbook-exporter */%%'"
            ).fetchone()
            found = r.stdout.count("- table: ")
            print(
                f"run {run + 1}: exit {r.returncode}, {wall:.2f} s wall, {calls} statements "
                f"{total:.0f} ms in all (largest {largest:.1f} ms), {found} queue(s) found, "
                f"big_jobs rows read: {after - before}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
