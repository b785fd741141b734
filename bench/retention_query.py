"""Measure the retention collector's query (collectors/retention.py) on a large table, without
and with the index `runbook-exporter doctor` prints. Run by hand (not in CI):

    .venv/bin/python bench/retention_query.py [--rows 1000000] [--expired 0.25] [--runs 5]

Starts a throwaway PostgreSQL (tests/pg.py), fills public.error_logs with --rows rows whose
created_at spreads evenly over 120 days, of which the oldest --expired share lie past a
period chosen for it, then for max_count 1,000 and 100,000 times whole collector runs (median of
--runs warm runs) and prints the buffers EXPLAIN (ANALYZE, BUFFERS) reads. docs/retention.md
("Measured") quotes the output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import psycopg
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter.collectors import retention  # noqa: E402
from exporter.config import parse_config  # noqa: E402
from exporter.db import open_connection, run_transaction  # noqa: E402
from tests.pg import postgres_server  # noqa: E402

SPAN_DAYS = 120


def fill(dsn: str, rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(
            "CREATE TABLE public.error_logs (id bigserial PRIMARY KEY, error_type text,"
            " created_at timestamptz NOT NULL)"
        )
        c.execute(
            "INSERT INTO public.error_logs (error_type, created_at) SELECT 'e' || (g %% 7),"
            " now() - make_interval(secs => %s * g / %s) FROM generate_series(1, %s) g",
            (SPAN_DAYS * 86400.0, rows, rows),
        )
        c.execute("VACUUM ANALYZE public.error_logs")


def buffers(plan: dict) -> int:
    return plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)


async def measure(dsn: str, period_days: float, max_count: int, runs: int) -> dict:
    text = yaml.safe_dump(
        {
            "targets": [
                {
                    "name": "bench",
                    "dsn": dsn,
                    "statement_timeout": "10s",
                    "collect_timeout": "10s",
                    "retention": [
                        {
                            "table": "public.error_logs",
                            "period": f"{period_days}d",
                            "max_count": max_count,
                        }
                    ],
                }
            ]
        }
    )
    target = parse_config(text).targets[0]
    item = target.retention[0]
    collector = retention.Retention(target, target.collectors.retention)
    conn = await open_connection(target)
    try:
        times, fams = [], []
        for _ in range(runs + 1):  # the first run warms the cache
            start = time.perf_counter()
            async with run_transaction(conn, target):
                fams = await collector.collect(conn)
            times.append(time.perf_counter() - start)
        async with run_transaction(conn, target):
            explain = psycopg.sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ")
            cur = await conn.execute(
                explain + retention.retention_query(item), retention.query_params(item)
            )
            plan = (await cur.fetchone())[0]
            plan = json.loads(plan) if isinstance(plan, str) else plan
    finally:
        await conn.close()
    expired = next(s.value for f in fams for s in f.samples if s.name.endswith("expired_rows"))
    return {
        "median_ms": round(statistics.median(times[1:]) * 1000, 2),
        "buffers": buffers(plan[0]["Plan"]),
        "expired_rows": expired,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--expired", type=float, default=0.25)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    period = SPAN_DAYS * (1 - args.expired)
    with postgres_server() as dsn:
        t0 = time.perf_counter()
        fill(dsn, args.rows)
        print(f"filled {args.rows} rows in {time.perf_counter() - t0:.1f}s; period {period:g}d")
        for label in ("no index", "index on created_at"):
            if label != "no index":
                with psycopg.connect(dsn, autocommit=True) as c:
                    c.execute(
                        "CREATE INDEX CONCURRENTLY error_logs_created_at_retention_idx"
                        " ON public.error_logs (created_at)"
                    )
            for cap in (1_000, 100_000):
                r = asyncio.run(measure(dsn, period, cap, args.runs))
                print(f"{label:>20} max_count {cap:>7}: {r}")


if __name__ == "__main__":
    main()
