"""Measure the pgmq queue kind's queries against pgmq.metrics() on a big queue. Run by hand
(not in CI; about a minute):

    .venv/bin/python bench/pgmq_queries.py [--messages 100000] [--archive 1000000] [--runs 5]
                                           [--no-write]

Starts a throwaway PostgreSQL (exporter.demo.pgserver.LocalPostgres) and makes the pgmq objects
from pgmq's documented schema (tests/pgmq_schema.py, pgmq 1.13.1; pgmq itself is not
installable here): a queue of --messages messages (90 % waiting, 5 % being processed, 4 %
visible again after a read, 1 % sent with a delay, some read more than 3 times), an archive of
--archive rows archived evenly over 30 days, and a 20-message dead-letter queue. Then it runs
EXPLAIN (ANALYZE, BUFFERS) of every query the exporter runs for the queue and of
`pgmq.metrics('bench')` (written from its documented behaviour: a count of the whole queue
table and a read of its id sequence), takes the median of --runs warm runs and times one whole
collection of the queue. The results are printed and written to the "pgmq: measured" section
of docs/queues.md.
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

from bench.docblock import write_block  # noqa: E402
from exporter.config import parse_config  # noqa: E402
from exporter.demo.pgserver import LocalPostgres  # noqa: E402
from exporter.queuekinds import base  # noqa: E402
from exporter.queuekinds import pgmq as kind  # noqa: E402
from tests import pgmq_schema  # noqa: E402

DOC = ROOT / "docs" / "queues.md"
START, END = "<!-- pgmq-measured:start -->", "<!-- pgmq-measured:end -->"

# messages by role, in msg_id order: the states spread over the table as a live queue has them
FILL_QUEUE = """
INSERT INTO pgmq.q_bench (read_ct, enqueued_at, last_read_at, vt, message)
SELECT r.read_ct, now() - (%(n)s - g) * interval '10 ms', r.last_read, r.vt,
       jsonb_build_object('order', g, 'kind', 'email')
FROM generate_series(1, %(n)s) g
CROSS JOIN LATERAL (SELECT
    CASE WHEN g %% 20 = 1 THEN 1 WHEN g %% 25 = 2 THEN 2 + g %% 4 ELSE 0 END AS read_ct,
    CASE WHEN g %% 20 = 1 THEN now() - interval '10 s'
         WHEN g %% 25 = 2 THEN now() - interval '2 min' END AS last_read,
    CASE WHEN g %% 20 = 1 THEN now() + interval '30 s'
         WHEN g %% 25 = 2 THEN now() - interval '1 min'
         WHEN g %% 100 = 3 THEN now() + interval '1 hour'
         ELSE now() - (%(n)s - g) * interval '10 ms' END AS vt) r
"""
FILL_ARCHIVE = """
INSERT INTO pgmq.a_bench (msg_id, read_ct, enqueued_at, last_read_at, vt, message, archived_at)
SELECT g, 1, t - interval '3 s', t - interval '2 s', t + interval '28 s',
       jsonb_build_object('order', g, 'kind', 'email'), t
FROM generate_series(1, %(n)s) g
CROSS JOIN LATERAL (SELECT now() - (%(n)s - g) * (interval '30 days' / %(n)s) AS t) a
"""


@dataclass
class Row:
    what: str
    plan: str
    ms: float
    buffers: int | None


def plan_summary(plan: dict) -> str:
    nodes = [plan]
    while nodes:
        node = nodes.pop(0)
        nt = node["Node Type"]
        if nt in ("Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan", "Function Scan"):
            if nt == "Bitmap Heap Scan":
                inner = [n.get("Index Name") for n in node.get("Plans", [])]
                return f"Bitmap Heap Scan ({', '.join(filter(None, inner))})"
            if "Index Name" in node:
                return f"{nt} ({node['Index Name']})"
            return "Parallel Seq Scan" if node.get("Parallel Aware") else nt
        nodes += node.get("Plans", [])
    return plan["Node Type"]


async def explain_analyze(
    conn: psycopg.AsyncConnection, what: str, text: sql.Composable, params: dict, runs: int
) -> Row:
    times, plan = [], {}
    for _ in range(runs + 1):  # the first run warms the cache and is not counted
        cur = await conn.execute(
            sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ") + text, params, prepare=False
        )
        (result,) = await cur.fetchone()  # type: ignore[misc]
        times.append(result[0]["Planning Time"] + result[0]["Execution Time"])
        plan = result[0]["Plan"]
    buffers = plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)
    return Row(what, plan_summary(plan), statistics.median(times[1:]), buffers)


async def timed(coro_fn, runs: int) -> float:
    times = []
    for _ in range(runs + 1):
        started = time.perf_counter()
        await coro_fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times[1:])


async def bench(dsn: str, n: int, archived: int, runs: int) -> tuple[list[Row], list[str]]:
    notes: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as c:
        pgmq_schema.install(c)
        pgmq_schema.create_queue(c, "bench")
        pgmq_schema.create_queue(c, "bench_dlq")
        started = time.perf_counter()
        c.execute(FILL_QUEUE, {"n": n}, prepare=False)
        c.execute(FILL_ARCHIVE, {"n": archived}, prepare=False)
        pgmq_schema.send(c, "bench_dlq", 20)
        for t in ("q_bench", "a_bench", "q_bench_dlq"):
            c.execute(f"VACUUM ANALYZE pgmq.{t}")
        built = time.perf_counter() - started
        sizes = c.execute(
            "SELECT c.relname, pg_size_pretty(pg_table_size(c.oid)),"
            " pg_table_size(c.oid) / 8192 FROM pg_class c"
            " WHERE c.relname IN ('q_bench', 'a_bench') ORDER BY 1 DESC"
        ).fetchall()
        roles = c.execute(
            "SELECT count(*) FILTER (WHERE vt <= now() AND read_ct = 0),"
            " count(*) FILTER (WHERE vt > now() AND read_ct > 0),"
            " count(*) FILTER (WHERE vt <= now() AND read_ct > 0),"
            " count(*) FILTER (WHERE vt > now() AND read_ct = 0),"
            " count(*) FILTER (WHERE read_ct > 3) FROM pgmq.q_bench"
        ).fetchone()
        assert roles is not None
        metrics = c.execute("SELECT * FROM pgmq.metrics('bench')").fetchone()
    notes.append(
        f"queue: {n:,} messages, archive: {archived:,} rows (built in {built:.0f} s); "
        + ", ".join(f"{name} {size} ({pages:,} pages)" for name, size, pages in sizes)
    )
    notes.append(
        "roles: pending {:,}, processing {:,}, failed {:,}, scheduled {:,}; "
        "read more than 3 times {:,}".format(*roles)
    )
    assert metrics is not None
    notes.append(
        f"pgmq.metrics('bench'): queue_length {metrics[1]:,}, queue_visible_length"
        f" {metrics[6]:,}, oldest_msg_age_sec {metrics[3]}, total_messages {metrics[4]:,}"
    )

    cfg = parse_config(
        "targets: [{name: bench, dsn: host=x,"
        " queues: [{pgmq: bench, dead_letter_queue: bench_dlq}]}]"
    )
    target = cfg.targets[0]
    q = target.queues[0]
    rows: list[Row] = []
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        pk = kind.PgmqKind(target, q)
        (member,) = await pk.members(conn)
        assert not await pk.check(conn, member)
        t, dlq = pk.tables["bench"]
        assert dlq is not None
        for query in [*kind.queries(t, q, dlq), kind.deletes_query(t)]:
            if query.name == "archive_estimate":  # only EXPLAINed, never run
                ms = await timed(lambda qq=query: base.estimate_rows(conn, qq), runs)
                est = await base.estimate_rows(conn, query)
                rows.append(Row("archive_estimate (EXPLAIN, not run)", "planner", ms, None))
                notes.append(f"archive estimate {est:,.0f} vs {archived:,} rows")
                continue
            rows.append(await explain_analyze(conn, query.name, query.text, query.params, runs))
        ms = await timed(lambda: pk.measure(conn, member), runs)
        rows.append(Row("whole collection of the queue (ours)", "4 queries + 1 EXPLAIN", ms, None))
        call = sql.SQL("SELECT * FROM pgmq.metrics('bench')")
        rows.append(await explain_analyze(conn, "pgmq.metrics('bench')", call, {}, runs))
        inner = kind.metrics_query(t)
        rows.append(await explain_analyze(conn, "pgmq.metrics' inner query", inner.text, {}, runs))
        exact = sql.SQL("SELECT count(*) FROM pgmq.a_bench")
        rows.append(await explain_analyze(conn, "archive count(*) (not used)", exact, {}, runs))
    return rows, notes


def render(rows: list[Row], notes: list[str], runs: int, server: str) -> str:
    lines = [
        START,
        "",
        f"Measured with `bench/pgmq_queries.py` on {time.strftime('%Y-%m-%d')}: PostgreSQL"
        f" {server}, {platform.machine()}, shared_buffers 1GB, warm cache; each figure is the"
        f" median of {runs} runs of EXPLAIN (ANALYZE, BUFFERS) (planning + execution); buffers"
        " are the shared blocks the statement touched (for the pgmq.metrics() call, those its"
        " function body touched too).",
        "",
        *[f"- {note}" for note in notes],
        "",
        "| query | plan | ms | buffers |",
        "|---|---|---:|---:|",
    ]
    for r in rows:
        buffers = f"{r.buffers:,}" if r.buffers is not None else ""
        lines.append(f"| {r.what} | {r.plan} | {r.ms:.2f} | {buffers} |")
    lines += ["", END]
    return "\n".join(lines)


def write_doc(block: str) -> None:
    write_block(DOC, START, END, block, "### pgmq: measured")


async def amain(args: argparse.Namespace) -> int:
    settings = {"shared_buffers": "1GB", "max_wal_size": "8GB", "autovacuum": "off"}
    with LocalPostgres(settings=settings) as pg:
        rows, notes = await bench(pg.dsn, args.messages, args.archive, args.runs)
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
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--archive", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs alone")
    return asyncio.run(amain(ap.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
