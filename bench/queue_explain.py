"""Measure the queues collector's queries on big tables, with and without the indexes the doctor
recommends. Run by hand (not in CI; 5M rows take a few minutes):

    .venv/bin/python bench/queue_explain.py [--sizes 100000,5000000] [--runs 5] [--no-write]

Starts a throwaway PostgreSQL (exporter.demo.pgserver.LocalPostgres), builds a runbook-000-style
processing_jobs table per size -- mostly completed jobs spread over 30 days, 300 pending, 50
processing (10 of them stuck), 0.1 % failed (half out of retries), active rows scattered over
the heap as updates leave them -- plus a 20-row dead-letter table. For three index setups (the
primary key only; runbook 000's `(status) WHERE status IN ('pending', 'processing')`; the
doctor's recommendation) it runs EXPLAIN (ANALYZE, BUFFERS) of every collector query, takes the
median of --runs warm runs, times one whole collector run of the queue, and compares the
completed estimate with the true count. The results are printed and written to the "Measured"
section of docs/queues.md.
"""

from __future__ import annotations

import argparse
import asyncio
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
from exporter import doctor  # noqa: E402
from exporter.collectors import queues as qc  # noqa: E402
from exporter.config import parse_config  # noqa: E402
from exporter.demo.pgserver import LocalPostgres  # noqa: E402

DOC = ROOT / "docs" / "queues.md"
START, END = "<!-- measured:start -->", "<!-- measured:end -->"

# rows in id order, finished over the last 30 days; active rows scattered (step apart), the
# way updates leave them: the worst case for heap fetches
FILL = """
INSERT INTO {t} (status, payload, error_message, retry_count, created_at, updated_at)
SELECT s.status, jsonb_build_object('file', 'doc-' || g || '.pdf', 'pages', g %% 40),
       CASE WHEN s.status = 'failed' THEN 'OCR provider timed out' END,
       CASE WHEN s.status = 'failed' THEN g %% 4 ELSE 0 END,
       s.at - interval '2 minutes', s.at
FROM generate_series(1, %(n)s) g
CROSS JOIN LATERAL (SELECT
    CASE WHEN g %% %(pstep)s = 1 AND g / %(pstep)s < 300 THEN 'pending'
         WHEN g %% %(qstep)s = 2 AND g / %(qstep)s < 50 THEN 'processing'
         WHEN g %% 1000 = 3 THEN 'failed'
         ELSE 'completed' END AS status) s0
CROSS JOIN LATERAL (SELECT s0.status,
    CASE WHEN s0.status = 'pending' THEN now() - (g %% 600) * interval '1 second'
         WHEN s0.status = 'processing' AND g / %(qstep)s < 10 THEN now() - interval '45 minutes'
         WHEN s0.status = 'processing' THEN now() - interval '20 seconds'
         ELSE now() - (%(n)s - g) * (interval '30 days' / %(n)s) END AS at) s
"""
RUNBOOK_000_INDEX = (
    "CREATE INDEX {t}_runbook000_idx ON {t} (status) WHERE status IN ('pending', 'processing')"
)
SETUPS = ("primary key only", "runbook 000 index", "recommended indexes")


@dataclass
class Row:
    rows: int
    setup: str
    query: str
    plan: str
    ms: float
    buffers: int


def plan_summary(plan: dict) -> str:
    """The scan that reads the table: node type and index, e.g. 'Index Scan (jobs_active_idx)'."""
    for node in doctor._plan_nodes(plan):
        if node["Node Type"] in ("Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan"):
            if node["Node Type"] == "Bitmap Heap Scan":
                names = [n["Index Name"] for n in doctor._plan_nodes(node) if "Index Name" in n]
                return f"Bitmap Heap Scan ({', '.join(names)})"
            if "Index Name" in node:
                return f"{node['Node Type']} ({node['Index Name']})"
            workers = node.get("Workers Planned") or plan.get("Workers Planned")
            return "Parallel Seq Scan" if node.get("Parallel Aware") or workers else "Seq Scan"
    return plan["Node Type"]


async def explain_analyze(conn: psycopg.AsyncConnection, query: qc.Query, runs: int) -> Row:
    times, plan = [], {}
    for _ in range(runs + 1):  # the first run warms the cache and is not counted
        cur = await conn.execute(
            sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ") + query.text,
            query.params,
            prepare=False,
        )
        (result,) = await cur.fetchone()
        times.append(result[0]["Planning Time"] + result[0]["Execution Time"])
        plan = result[0]["Plan"]
    buffers = plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)
    return Row(0, "", query.name, plan_summary(plan), statistics.median(times[1:]), buffers)


async def timed(coro_fn, runs: int) -> float:
    times = []
    for _ in range(runs + 1):
        started = time.perf_counter()
        await coro_fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times[1:])


async def bench_size(dsn: str, n: int, runs: int) -> tuple[list[Row], list[str]]:
    t = f"jobs_{n}"
    cfg = parse_config(
        f"targets: [{{name: bench, dsn: 'host=x',"
        f" queues: [{{table: {t}, dead_letter_table: {t}_dlq}}]}}]"
    )
    target = cfg.targets[0]
    queue = target.queues[0]
    exact = queue.model_copy(update={"count_terminal": "exact"})
    out: list[Row] = []
    notes: list[str] = []
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        # VACUUM marks pages all-visible (index-only scans) only once their rows' commits are
        # flushed: the bench server commits asynchronously, this session as a default one does
        await conn.execute("SET synchronous_commit = on")
        started = time.perf_counter()
        await conn.execute(jobs_table.create_sql(t))
        await conn.execute(
            FILL.format(t=t),
            {"n": n, "pstep": n // 300, "qstep": n // 50},
            prepare=False,
        )
        await conn.execute(f"CREATE TABLE {t}_dlq (id bigserial PRIMARY KEY, job_id bigint)")
        await conn.execute(f"INSERT INTO {t}_dlq (job_id) SELECT generate_series(1, 20)")
        await conn.execute(f"VACUUM ANALYZE {t}")
        await conn.execute(f"VACUUM ANALYZE {t}_dlq")
        cur = await conn.execute(
            f"SELECT status, count(*) FROM {t} GROUP BY status ORDER BY status"
        )
        counts = dict(await cur.fetchall())
        cur = await conn.execute(
            f"SELECT pg_size_pretty(pg_table_size('{t}')), pg_table_size('{t}') / 8192"
        )
        size, pages = await cur.fetchone()
        notes.append(
            f"{n:,} rows ({size}, {pages:,} pages; built in {time.perf_counter() - started:.0f}"
            f" s): " + ", ".join(f"{k} {v:,}" for k, v in counts.items())
        )
        for setup in SETUPS:
            if setup == "runbook 000 index":
                await conn.execute(RUNBOOK_000_INDEX.format(t=t))
            elif setup == "recommended indexes":
                await conn.execute(f"DROP INDEX {t}_runbook000_idx")
                indexes: set[str] = set()
                for query in qc.queries(queue):
                    if query.index_column is None:
                        continue
                    stmt = await doctor.create_index_statement(conn, queue, "r", query, indexes)
                    notes.append(f"`{stmt}`")
                    await conn.execute(stmt)
                cur = await conn.execute(
                    "SELECT c.relname, pg_size_pretty(pg_relation_size(c.oid))"
                    " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                    " WHERE i.indrelid = %s::regclass ORDER BY 1",
                    (t,),
                )
                notes.append(
                    f"index sizes at {n:,} rows: "
                    + ", ".join(f"{name} {sz}" for name, sz in await cur.fetchall())
                )
            await conn.execute(f"ANALYZE {t}")
            for query in qc.queries(queue):
                if query.name == "completed":  # count_terminal: estimate runs EXPLAIN only
                    ms = await timed(lambda q=query: qc.estimate_rows(conn, q), runs)
                    est = await qc.estimate_rows(conn, query)
                    out.append(Row(n, setup, "completed (estimate)", "EXPLAIN only", ms, 0))
                    continue
                row = await explain_analyze(conn, query, runs)
                row.rows, row.setup = n, setup
                out.append(row)
            row = await explain_analyze(conn, qc.completed_query(exact), runs)
            row.rows, row.setup, row.query = n, setup, "completed (exact)"
            out.append(row)
            kept = qc.Estimates()  # kept between runs, as the collector's TableKind does
            ms = await timed(lambda kept=kept: qc.collect_queue(conn, target, queue, kept), runs)
            how = f"{len(qc.queries(queue))} queries"
            out.append(Row(n, setup, "whole collector run", how, ms, 0))
        actual = counts.get("completed", 0)
        notes.append(
            f"completed estimate at {n:,} rows: {est:,.0f} vs {actual:,} counted"
            f" ({(est - actual) / actual:+.2%})"
        )
        await conn.execute(f"DROP TABLE {t}, {t}_dlq")
    return out, notes


def render(rows: list[Row], notes: list[str], runs: int, server: str) -> str:
    lines = [
        START,
        "",
        f"Measured with `bench/queue_explain.py` on {time.strftime('%Y-%m-%d')}: PostgreSQL"
        f" {server}, {platform.machine()}, shared_buffers 1GB, warm cache; each figure is the"
        f" median of {runs} runs of EXPLAIN (ANALYZE, BUFFERS) (planning + execution), and"
        " buffers are the shared blocks the statement touched. The whole collector run is"
        " measured from the client (one round trip per query, over loopback).",
        "",
    ]
    for note in notes:
        lines.append(f"- {note}")
    lines += ["", "| rows | indexes | query | plan | ms | buffers |", "|---|---|---|---|---:|---:|"]
    for r in rows:
        buffers = f"{r.buffers:,}" if r.buffers else ""
        lines.append(f"| {r.rows:,} | {r.setup} | {r.query} | {r.plan} | {r.ms:.2f} | {buffers} |")
    lines += ["", END]
    return "\n".join(lines)


def write_doc(block: str) -> None:
    write_block(DOC, START, END, block, "## Measured")


async def amain(args: argparse.Namespace) -> int:
    sizes = [int(s) for s in args.sizes.split(",")]
    settings = {
        "shared_buffers": "1GB",
        "maintenance_work_mem": "512MB",
        "max_wal_size": "8GB",
        "autovacuum": "off",  # the bench analyzes explicitly, so plans do not shift mid-run
    }
    with LocalPostgres(settings=settings) as pg:
        rows, notes = [], []
        server = ""
        for n in sizes:
            print(f"building and measuring {n:,} rows ...", flush=True)
            r, nt = await bench_size(pg.dsn, n, args.runs)
            rows += r
            notes += nt
        async with await psycopg.AsyncConnection.connect(pg.dsn) as conn:
            server = conn.info.parameter_status("server_version") or "?"
    block = render(rows, notes, args.runs, server)
    print(block)
    if not args.no_write:
        write_doc(block)
        print(f"written to {DOC}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,5000000")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs alone")
    return asyncio.run(amain(ap.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
