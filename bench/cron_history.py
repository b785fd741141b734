"""Measure the cron collector's query on a pg_cron history of a million runs, before and after
the index the doctor prints. Run by hand (not in CI; filling the history takes about a minute):

    .venv/bin/python bench/cron_history.py [--rows 1000000] [--runs 5] [--no-write]

Starts a throwaway Debian PostgreSQL 15 with pg_cron (tests/pg.py's settings), schedules 20
jobs and fills cron.job_run_details directly, in runid order as pg_cron writes it: 10 jobs every
minute, 7 hourly, 2 daily, and one daily job that stopped running after its first ten days (its
newest runs sit at the far end of the history: the worst case without an index). About 3 % of
the runs failed. Then, with pg_cron's runid primary key only and again with the doctor's
(jobid, runid) index, it runs EXPLAIN (ANALYZE, BUFFERS) of the collector's query (max_jobs
100, lookback 50) -- read directly and through the role script's SECURITY DEFINER function --
takes the median of --runs warm runs, times whole collector runs, and compares with a naive
"newest run per job" query (DISTINCT ON over the whole history). The results are printed and
written to the "Measured" section of docs/cron.md.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.docblock import write_block  # noqa: E402
from exporter.collectors import cron  # noqa: E402
from exporter.config import parse_config  # noqa: E402
from exporter.db import open_connection  # noqa: E402
from exporter.demo.pgserver import LocalPostgres  # noqa: E402

DOC = ROOT / "docs" / "cron.md"
START, END = "<!-- measured:start -->", "<!-- measured:end -->"
BIN = "/usr/lib/postgresql/15/bin"
SCRIPT = ROOT / "deploy" / "sql" / "supabase-monitoring-role.sql"

# (name, every N minutes, runs only up to minute M or None); schedules that will not fire
# during the bench, so pg_cron adds nothing while we measure
JOBS = (
    [(f"every-minute-{i}", 1, None) for i in range(10)]
    + [(f"hourly-{i}", 60, None) for i in range(7)]
    + [(f"daily-{i}", 1440, None) for i in range(2)]
    + [("stopped-daily", 1440, 14400)]
)
FILL = """
INSERT INTO cron.job_run_details (jobid, job_pid, database, username, command, status,
                                  return_message, start_time, end_time)
SELECT p.jobid, 10000 + g %% 30000, 'postgres', 'postgres', 'SELECT 1', s.status,
       CASE s.status WHEN 'failed' THEN 'ERROR:  canceling statement due to statement timeout'
                     ELSE 'SELECT 1' END,
       t.start_time, t.start_time + interval '40 milliseconds'
FROM generate_series(1, %(minutes)s) g
JOIN bench_plan p ON g %% p.every = p.jobid %% p.every AND (p.until IS NULL OR g <= p.until)
CROSS JOIN LATERAL (SELECT now() - make_interval(mins => %(minutes)s - g) AS start_time) t
CROSS JOIN LATERAL (
  SELECT CASE WHEN random() < 0.03 THEN 'failed' ELSE 'succeeded' END AS status
  WHERE g > 0) s
ORDER BY t.start_time, p.jobid
"""
NAIVE = """
SELECT DISTINCT ON (jobid) jobid, runid, status, start_time, end_time
FROM cron.job_run_details ORDER BY jobid, runid DESC
"""


def minutes_for(rows: int) -> int:
    per_minute = sum(1 / every for _, every, until in JOBS if until is None)
    return int(rows / per_minute)


def setup(dsn: str, rows: int) -> int:
    minutes = minutes_for(rows)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE EXTENSION pg_cron")
        c.execute("CREATE TABLE bench_plan (jobid bigint, every int, until int)")
        for name, every, until in JOBS:
            (jobid,) = c.execute(
                "SELECT cron.schedule(%s, '17 3 1 1 *', 'SELECT 1')", (name,)
            ).fetchone()
            c.execute("INSERT INTO bench_plan VALUES (%s, %s, %s)", (jobid, every, until))
        # the role script's SECURITY DEFINER functions, for the "through the functions" rows
        subprocess.run(
            [f"{BIN}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", str(SCRIPT)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        started = time.monotonic()
        c.execute(FILL, {"minutes": minutes})
        c.execute("VACUUM ANALYZE cron.job_run_details")
        (n,) = c.execute("SELECT count(*) FROM cron.job_run_details").fetchone()
        print(f"filled {n} runs over {minutes} minutes in {time.monotonic() - started:.0f}s")
        return n


def explain(c: psycopg.Connection, query: str, params: dict, runs: int) -> tuple[float, int]:
    """Median execution time (ms) and shared buffers (hit + read) of `runs` warm runs."""
    cur = psycopg.ClientCursor(c)
    text = cur.mogrify(query, params)
    times, buffers = [], 0
    for _ in range(runs + 1):  # the first run warms the cache
        (plan,) = cur.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {text}").fetchone()
        top = plan[0]
        times.append(top["Execution Time"])
        buffers = top["Plan"].get("Shared Hit Blocks", 0) + top["Plan"].get("Shared Read Blocks", 0)
    return statistics.median(times[1:]), buffers


def collector_run_ms(dsn: str, runs: int) -> float:
    cfg = parse_config(f"targets:\n  - name: bench\n    dsn: '{dsn}'\n")
    target = cfg.targets[0]

    async def main() -> float:
        conn = await open_connection(target)
        try:
            collector = cron.Cron(target, target.collectors.cron)
            times = []
            for _ in range(runs + 1):
                started = time.perf_counter()
                await collector.collect(conn)
                times.append((time.perf_counter() - started) * 1000)
            return statistics.median(times[1:])
        finally:
            await conn.close()

    return asyncio.run(main())


def measure(dsn: str, runs: int) -> list[tuple[str, str, float, int]]:
    params = {"max_jobs": 100, "lookback": 50, "window": 3600.0}
    out = []
    with psycopg.connect(dsn, autocommit=True) as c:
        for setup_name in ("runid primary key only", "doctor's (jobid, runid) index"):
            indexed = setup_name.startswith("doctor")
            queries = [
                ("collector query, direct", cron.jobs_sql(False, indexed)),
                ("collector query, through the functions", cron.jobs_sql(True, indexed)),
                ("naive newest run per job (DISTINCT ON)", NAIVE),
            ]
            if indexed:
                c.execute(cron.INDEX_STATEMENT)
                c.execute("ANALYZE cron.job_run_details")
                # what the index alone does not fix: ordered by runid only, the planner still
                # walks the primary key (it assumes each job's runs are spread evenly)
                queries.insert(
                    1, ("direct, ordered by runid only", cron.jobs_sql(False, indexed=False))
                )
            for what, query in queries:
                ms, buffers = explain(c, query, params, runs)
                out.append((setup_name, what, ms, buffers))
                print(f"{setup_name:32} {what:42} {ms:9.2f} ms {buffers:8d} buffers")
            ms = collector_run_ms(dsn, runs)
            out.append((setup_name, "whole collector run (probe + query + Python)", ms, -1))
            print(f"{setup_name:32} {'whole collector run':42} {ms:9.2f} ms")
    return out


def render(rows: int, results: list[tuple[str, str, float, int]], runs: int, server: str) -> str:
    lines = [
        START,
        f"`.venv/bin/python bench/cron_history.py` on {platform.machine()}, {server}: "
        f"{rows:,} runs of 20 jobs in cron.job_run_details, max_jobs 100, lookback 50; median "
        f"of {runs} warm runs (EXPLAIN (ANALYZE, BUFFERS) execution time, shared buffers hit "
        "+ read).",
        "",
        "| indexes | query | time (ms) | buffers |",
        "|---|---|---:|---:|",
    ]
    for setup_name, what, ms, buffers in results:
        shown = "" if buffers < 0 else f"{buffers:,}"
        lines.append(f"| {setup_name} | {what} | {ms:,.2f} | {shown} |")
    lines.append(END)
    return "\n".join(lines)


def write_doc(block: str) -> None:
    write_block(DOC, START, END, block, "## Measured")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/cron.md")
    args = ap.parse_args()
    settings = {
        "shared_preload_libraries": "pg_cron",
        "cron.database_name": "postgres",
        "shared_buffers": "256MB",
    }
    with LocalPostgres(settings=settings, bin_dir=BIN) as pg:
        rows = setup(pg.dsn, args.rows)
        results = measure(pg.dsn, args.runs)
        version = subprocess.run(
            [f"{BIN}/postgres", "--version"], capture_output=True, text=True
        ).stdout.strip()
    block = render(rows, results, args.runs, version)
    print(block)
    if not args.no_write:
        write_doc(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
