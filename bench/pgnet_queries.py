"""Measure the pg_net collector's two queries on a large response table. Run by hand:

    .venv/bin/python -m bench.pgnet_queries [--old 1000000] [--recent 40] [--queued 1000]

Starts a throwaway PostgreSQL, creates pg_net's tables (tests/pgnet_schema.py: pg_net 0.20.4's
schema, written by us), fills `net._http_response` with `--old` responses from 3 hours ago (what
pg_net keeps until pg_net.ttl, 6 hours by default) and `--recent` within the window, queues
`--queued` requests, and prints EXPLAIN (ANALYZE, BUFFERS) of the window count and the queue
count: buffers read and execution time against the table's size. Figures: docs/supabase.md.
"""

from __future__ import annotations

import argparse

import psycopg

from exporter.collectors import pgnet
from exporter.demo.pgserver import LocalPostgres
from tests import pgnet_schema


def explain(conn: psycopg.Connection, query: str, params: dict) -> tuple[int, float, str]:
    (plan,) = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query, params).fetchone()
    top = plan[0]["Plan"]
    text = "\n".join(
        row[0]
        for row in conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF) " + query, params
        ).fetchall()
    )
    return top["Shared Hit Blocks"] + top["Shared Read Blocks"], plan[0]["Execution Time"], text


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", type=int, default=1_000_000)
    ap.add_argument("--recent", type=int, default=40)
    ap.add_argument("--queued", type=int, default=1000)
    args = ap.parse_args()
    with LocalPostgres() as pg, psycopg.connect(pg.dsn, autocommit=True) as c:
        pgnet_schema.create(c)
        pgnet_schema.respond(c, 200, args.old, ago="3 hours")
        pgnet_schema.respond(c, 500, args.recent)
        pgnet_schema.queue_request(c, args.queued)
        c.execute("ANALYZE net._http_response")
        (pages,) = c.execute(
            "SELECT relpages FROM pg_class WHERE oid = 'net._http_response'::regclass"
        ).fetchone()
        print(f"net._http_response: {args.old + args.recent} rows, {pages} pages")
        for name, query, params in (
            ("window count (10 min)", pgnet.RESPONSES_SQL, {"window": 600.0}),
            ("request queue count", pgnet.QUEUE_SQL, {"cap": 100_000}),
        ):
            buffers, ms, text = explain(c, query, params)
            print(f"\n{name}: {buffers} buffers, {ms:.3f} ms\n{text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
