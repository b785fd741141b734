"""Does queue collection stay flat as failed and dead jobs pile up? EXPLAIN (ANALYZE, BUFFERS)
of every statement of a `table:` queue at 100k and 5M rows, before and after issue 18, and
the whole collector run. Run by hand (not in CI; about five minutes, most of it building the
5M-row table):

    .venv/bin/python bench/queue_scale.py [--sizes 100000,5000000] [--runs 7] [--no-write]

Starts a throwaway PostgreSQL (exporter.demo.pgserver.LocalPostgres) and builds, per size, a
jobs table with issue 18's shape: 1 % failed (a quarter of them out of retries), 0.1 % dead,
300 pending, 60 processing, the rest completed over 30 days, active rows scattered over the
heap (the worst case for fetching them); one INSERT ... SELECT generate_series, then VACUUM
ANALYZE. Three setups per size:

- before: the statements and indexes of the previous release (one active query over pending,
  processing, failed and dead, served by `(status) WHERE status IN (all four)`);
- upgraded, old indexes: this release's statements on the previous release's indexes (what
  a user has until they create what `runbook-exporter doctor` now prints);
- after: this release's statements with the indexes the doctor now recommends.

For each it prints and writes (docs/queues.md, "Measured at scale") the plan, median time and
shared buffers of every statement, the heap fetches of index-only scans, and the median time of
a whole collector run (this release's collector code, `collect_queue`, on one session; for
`before` the previous release's statements in one transaction). The ratio 5M / 100k of that
run is issue 18's target (at most 1.5).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import jobs_table  # noqa: E402
from bench.docblock import write_block  # noqa: E402
from bench.queue_explain import plan_summary  # noqa: E402
from exporter import doctor  # noqa: E402
from exporter.collectors import queues as qc  # noqa: E402
from exporter.config import parse_config  # noqa: E402
from exporter.demo.pgserver import LocalPostgres  # noqa: E402

DOC = ROOT / "docs" / "queues.md"
START, END = "<!-- measured-scale:start -->", "<!-- measured-scale:end -->"

# the previous release: its recommended indexes and its one active query
OLD_INDEXES = (
    "CREATE INDEX {t}_old_active_idx ON {t} (status)"
    " WHERE status IN ('pending', 'processing', 'failed', 'dead')",
    "CREATE INDEX {t}_old_recent_idx ON {t} (updated_at) WHERE status IN ('completed', 'failed')",
)
OLD_ACTIVE = """
SELECT status::text, count(*),
       GREATEST(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8,
       count(*) FILTER (WHERE updated_at < now() - make_interval(secs => 1800)),
       count(*) FILTER (WHERE retry_count >= 3)
FROM {t} WHERE status IN ('pending', 'processing', 'failed', 'dead') GROUP BY status
"""
SETUPS = ("before", "upgraded, old indexes", "after")
ROUNDS = 9  # alternating rounds of the 100k / 5M comparison


@dataclass
class Row:
    rows: int
    setup: str
    query: str
    plan: str
    ms: float
    buffers: int
    heap_fetches: int | None = None


def queue_config(t: str):
    item = {"table": t, "statuses": {"dead": "dead"}}
    cfg = parse_config(
        json.dumps({"targets": [{"name": "bench", "dsn": "host=x", "queues": [item]}]})
    )
    return cfg.targets[0], cfg.targets[0].queues[0]


async def explain_analyze(conn: psycopg.AsyncConnection, name: str, text, params, runs: int) -> Row:
    times, plan = [], {}
    for _ in range(runs + 1):  # the first run warms the cache and is not counted
        cur = await conn.execute(
            sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ") + text, params, prepare=False
        )
        (result,) = await cur.fetchone()
        times.append(result[0]["Planning Time"] + result[0]["Execution Time"])
        plan = result[0]["Plan"]
    buffers = plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)
    fetches = [n["Heap Fetches"] for n in doctor._plan_nodes(plan) if "Heap Fetches" in n]
    return Row(
        0,
        "",
        name,
        plan_summary(plan),
        statistics.median(times[1:]),
        buffers,
        sum(fetches) if fetches else None,
    )


async def timed(fn, runs: int) -> float:
    times = []
    for _ in range(runs + 1):
        started = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times[1:])


async def build(conn: psycopg.AsyncConnection, t: str, n: int) -> str:
    started = time.perf_counter()
    await conn.execute(jobs_table.create_sql(t))
    await conn.execute(jobs_table.fill_sql(t), jobs_table.fill_params(n), prepare=False)
    await conn.execute(f"VACUUM ANALYZE {t}")
    cur = await conn.execute(f"SELECT status, count(*) FROM {t} GROUP BY status ORDER BY status")
    counts = dict(await cur.fetchall())
    cur = await conn.execute(
        f"SELECT pg_size_pretty(pg_table_size('{t}')), relpages, relallvisible"
        f" FROM pg_class WHERE relname = '{t}'"
    )
    size, pages, visible = await cur.fetchone()
    return (
        f"{n:,} rows ({size}, {pages:,} pages, {visible:,} all-visible; built in"
        f" {time.perf_counter() - started:.0f} s): "
        + ", ".join(f"{k} {v:,}" for k, v in counts.items())
    )


async def index_sizes(conn: psycopg.AsyncConnection, t: str) -> str:
    cur = await conn.execute(
        "SELECT c.relname, pg_size_pretty(pg_relation_size(c.oid))"
        " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE i.indrelid = %s::regclass AND NOT i.indisprimary ORDER BY 1",
        (t,),
    )
    return ", ".join(f"{name} {sz}" for name, sz in await cur.fetchall())


async def bench_size(dsn: str, n: int, runs: int) -> tuple[list[Row], list[str], float]:
    t = f"jobs_{n}"
    target, queue = queue_config(t)
    out: list[Row] = []
    notes: list[str] = []
    after_ms = 0.0
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        # VACUUM marks a page all-visible only once its rows' commits are flushed: the bench
        # server commits asynchronously, so this session commits as a default server does
        await conn.execute("SET synchronous_commit = on")
        notes.append(await build(conn, t, n))
        for stmt in OLD_INDEXES:
            await conn.execute(stmt.format(t=t))
        await conn.execute(f"VACUUM ANALYZE {t}")
        for setup in SETUPS:
            if setup == "after":
                for stmt in OLD_INDEXES:  # the doctor's advice replaces them
                    await conn.execute(f"DROP INDEX {stmt.split()[2]}".format(t=t))
                existing: set[str] = set()
                for query in qc.queries(queue):
                    if query.index_column is None:
                        continue
                    stmt = await doctor.create_index_statement(conn, queue, "r", query, existing)
                    if n == 100000:
                        notes.append(f"`{stmt.replace(t, 'jobs')}`")
                    await conn.execute(stmt)
                await conn.execute(f"VACUUM ANALYZE {t}")
            if setup != "upgraded, old indexes":
                notes.append(f"index sizes at {n:,} rows, {setup}: {await index_sizes(conn, t)}")
            if setup == "before":
                statements = [("active (old)", sql.SQL(OLD_ACTIVE.format(t=t)), {})]
                recent = qc.recent_query(queue)
                statements.append(("recent", recent.text, recent.params))
            else:
                statements = [
                    (q.name, q.text, q.params)
                    for q in qc.queries(queue)
                    if q.name not in ("completed", "dead_letter")
                ]
            for name, text, params in statements:
                row = await explain_analyze(conn, name, text, params, runs)
                row.rows, row.setup = n, setup
                out.append(row)

            if setup == "before":

                async def old_run(statements=statements) -> None:
                    # the previous release's statements in one read-only transaction, plus
                    # the completed estimate (EXPLAIN only) it ran too
                    async with conn.transaction():
                        for _, text, params in statements:
                            await (await conn.execute(text, params, prepare=False)).fetchall()
                        await qc.estimate_rows(conn, qc.completed_query(queue))

                ms = await timed(old_run, runs)
                out.append(Row(n, setup, "whole run (its statements)", "3", ms, 0))
                continue

            kept = qc.Estimates()  # kept between runs, as the collector's TableKind does

            async def collector_run(kept=kept) -> None:
                async with conn.transaction():
                    await qc.collect_queue(conn, target, queue, kept)

            ms = await timed(collector_run, runs)
            out.append(Row(n, setup, "whole collector run", "collect_queue", ms, 0))
            if setup == "after":
                after_ms = ms
    return out, notes, after_ms  # the table stays for the interleaved comparison


async def interleaved_ratio(dsn: str, small: int, big: int, runs: int) -> tuple[float, str]:
    """The 5M / 100k ratio of a whole collector run with the recommended indexes, timed in
    alternating rounds on both tables (left built), so that other work on the shared machine
    weighs on both sides alike: the median of the rounds' ratios."""
    ratios, times = [], {small: [], big: []}
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for _ in range(ROUNDS):
            round_ms = {}
            for n in (small, big):
                target, queue = queue_config(f"jobs_{n}")
                kept = qc.Estimates()

                async def collector_run(target=target, queue=queue, kept=kept) -> None:
                    async with conn.transaction():
                        await qc.collect_queue(conn, target, queue, kept)

                round_ms[n] = await timed(collector_run, runs)
                times[n].append(round_ms[n])
            ratios.append(round_ms[big] / round_ms[small])
    ratio = statistics.median(ratios)
    small_ms, big_ms = statistics.median(times[small]), statistics.median(times[big])
    detail = (
        f"whole collector run, recommended indexes, {ROUNDS} alternating rounds of {runs} runs:"
        f" {small:,} rows {small_ms:.2f} ms, {big:,} rows {big_ms:.2f} ms (medians; their"
        f" ratio {big_ms / small_ms:.2f}x); ratio per round {min(ratios):.2f}-{max(ratios):.2f}x"
    )
    return ratio, detail


def server_ms(rows: list[Row], n: int) -> float:
    """The server's time for the statements of one run with the recommended indexes (the sum
    of their EXPLAIN ANALYZE medians): the part of a run the table's size can change."""
    return sum(r.ms for r in rows if r.rows == n and r.setup == "after" and r.buffers)


def render(rows: list[Row], notes: list[str], runs: int, server: str, ratio: float | None) -> str:
    lines = [
        START,
        "",
        f"Measured with `bench/queue_scale.py` on {time.strftime('%Y-%m-%d')}: PostgreSQL"
        f" {server}, {platform.machine()}, {_cores()} cores shared with other work,"
        " shared_buffers 1GB, warm cache; each figure is the median of"
        f" {runs} runs of EXPLAIN (ANALYZE, BUFFERS) (planning + execution); buffers are the"
        " shared blocks the statement touched; heap fetches are the rows an index-only scan"
        " still read from the table. Runs are timed from the client over loopback.",
        "",
    ]
    lines += [f"- {note}" for note in notes]
    if ratio is not None:
        lines.append(
            f"- whole collector run with the recommended indexes, largest / smallest size:"
            f" **{ratio:.2f}x**"
            " (median of the rounds' ratios; issue 18's target: at most 1.5x)"
        )
    lines += [
        "",
        "| rows | setup | statement | plan | ms | buffers | heap fetches |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        buffers = f"{r.buffers:,}" if r.buffers else ""
        fetches = f"{r.heap_fetches:,}" if r.heap_fetches is not None else ""
        lines.append(
            f"| {r.rows:,} | {r.setup} | {r.query} | {r.plan} | {r.ms:.2f} | {buffers} |"
            f" {fetches} |"
        )
    lines += ["", END]
    return "\n".join(lines)


def _cores() -> int:
    import os

    return os.cpu_count() or 1


async def amain(args: argparse.Namespace) -> int:
    sizes = [int(s) for s in args.sizes.split(",")]
    settings = {
        "shared_buffers": "1GB",
        "maintenance_work_mem": "512MB",
        "max_wal_size": "8GB",
        "autovacuum": "off",  # the bench vacuums explicitly, so plans do not shift mid-run
    }
    with LocalPostgres(settings=settings) as pg:
        pg_dsn = pg.dsn
        rows, notes, runs_ms = [], [], {}
        for n in sizes:
            print(f"building and measuring {n:,} rows ...", flush=True)
            r, nt, ms = await bench_size(pg.dsn, n, args.runs)
            rows += r
            notes += nt
            runs_ms[n] = ms
        async with await psycopg.AsyncConnection.connect(pg.dsn) as conn:
            server = conn.info.parameter_status("server_version") or "?"
        ratio = None
        if len(sizes) >= 2:
            ratio, detail = await interleaved_ratio(pg_dsn, sizes[0], sizes[-1], args.runs)
            notes.append(detail)
            small, big = server_ms(rows, sizes[0]), server_ms(rows, sizes[-1])
            notes.append(
                f"server time of a run's statements with the recommended indexes (sum of the"
                f" EXPLAIN ANALYZE medians): {sizes[0]:,} rows {small:.2f} ms, {sizes[-1]:,}"
                f" rows {big:.2f} ms ({big / small:.2f}x); the rest of a run is round trips"
                " and Python, the same at both sizes"
            )
    block = render(rows, notes, args.runs, server, ratio)
    print(block)
    if not args.no_write:
        write_block(DOC, START, END, block, "## Measured at scale (issue 18)")
        print(f"written to {DOC}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,5000000")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs alone")
    return asyncio.run(amain(ap.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
