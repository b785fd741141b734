"""Each collector's run time, timed in this process on the exporter's own kind of session
(exporter.db.open_connection and run_transaction, as the scheduler runs it), against the raw
SQL it sends replayed on a plain psycopg connection: the difference is our overhead (Python
work, savepoints, the transaction's settings). The queue statements are also EXPLAINed
(ANALYZE, BUFFERS) for the buffers they touch."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any, ClassVar

import psycopg
from psycopg import sql

from exporter import db, sources
from exporter.config import Target

# statements of the exporter's own transaction handling, replayed as a plain BEGIN/COMMIT
_FRAMING = ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE", "ROLLBACK")


class RecordingCursor(db.MarkedCursor):
    """The exporter's cursor, also noting every statement sent while `log` is set."""

    log: ClassVar[list[tuple[Any, Any]] | None] = None

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> RecordingCursor:
        if RecordingCursor.log is not None:
            RecordingCursor.log.append((query, params))
        return await super().execute(query, params, **kwargs)


def text_of(conn: psycopg.AsyncConnection, query: Any) -> str:
    raw = query.as_string(conn) if isinstance(query, sql.Composable) else str(query)
    return " ".join(raw.split())


async def _raw_run(conn: psycopg.AsyncConnection, statements: list[tuple[Any, Any]]) -> None:
    await conn.execute("BEGIN READ ONLY")
    for query, params in statements:
        cur = await conn.execute(query, params, prepare=False)
        if cur.description is not None:
            await cur.fetchall()
    await conn.execute("COMMIT")


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


async def time_collectors(target: Target, raw_dsn: str, runs: int) -> dict[str, dict]:
    """Per enabled collector: median and best ms of a whole run (ours) and of its statements
    replayed raw, alternating, after one warm-up run (catalog checks, caches)."""
    conn = await db.open_connection(target)
    conn.cursor_factory = RecordingCursor
    raw = await psycopg.AsyncConnection.connect(raw_dsn, autocommit=True, prepare_threshold=None)
    out: dict[str, dict] = {}
    try:
        for name, settings in target.enabled_collectors():
            collector = sources.collector(name)(target, settings)

            async def one(c=collector) -> None:
                async with db.run_transaction(conn, target):
                    await c.collect(conn)

            try:
                await one()
                RecordingCursor.log = log = []
                await one()
            except Exception as e:  # a failing collector is a result, not a crash
                out[name] = {"error": f"{type(e).__name__}: {e}"}
                continue
            finally:
                RecordingCursor.log = None
            statements = [
                (q, p) for q, p in log if not text_of(conn, q).upper().startswith(_FRAMING)
            ]
            ours, plain = [], []
            for _ in range(runs):
                started = time.perf_counter()
                await one()
                ours.append(_ms(started))
                started = time.perf_counter()
                await _raw_run(raw, statements)
                plain.append(_ms(started))
            o, r = statistics.median(ours), statistics.median(plain)
            # the overhead from the best runs: on a shared machine waiting only adds time, so
            # the minimum is each side's own cost and steadier than the median across runs
            o_min, r_min = min(ours), min(plain)
            out[name] = {
                "ms": round(o, 3),
                "raw_sql_ms": round(r, 3),
                "min_ms": round(o_min, 3),
                "raw_sql_min_ms": round(r_min, 3),
                "overhead": round(o_min / r_min - 1, 3) if r_min > 0 else None,
                "statements": len(statements),
                "framing_statements": len(log) - len(statements),
                "sql": [text_of(conn, q)[:160] for q, _ in statements],
            }
            if name == "queues":
                out[name]["explain"] = [await explain(raw, q, p) for q, p in statements]
    finally:
        await conn.close()
        await raw.close()
    return out


def _scan(node: dict) -> str:
    """The node that reads the table: its type and index, e.g. 'Index Scan (jobs_active_idx)'."""
    stack = [node]
    while stack:
        n = stack.pop(0)
        if "Scan" in n["Node Type"] and "Relation Name" in n:
            # a bitmap heap scan's indexes are on its Bitmap Index Scan children
            names = [x["Index Name"] for x in _walk(n) if "Index Name" in x]
            return f"{n['Node Type']} ({', '.join(names)})" if names else n["Node Type"]
        stack.extend(n.get("Plans", []))
    return node["Node Type"]


async def explain(conn: psycopg.AsyncConnection, query: Any, params: Any) -> dict:
    text = text_of(conn, query)
    if text.upper().startswith("EXPLAIN"):  # the completed estimate: planning only
        return {"sql": text[:160], "plan": "EXPLAIN only (planner estimate)", "buffers": 0}
    prefix = sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ")
    stmt = prefix + (query if isinstance(query, sql.Composable) else sql.SQL(query))
    cur = await conn.execute(stmt, params, prepare=False)
    (result,) = await cur.fetchone()
    plan = result[0]["Plan"]
    return {
        "sql": text[:160],
        "plan": _scan(plan),
        "buffers": plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0),
        "ms": round(result[0]["Planning Time"] + result[0]["Execution Time"], 3),
    }


def _walk(node: dict) -> list[dict]:
    out = [node]
    for child in node.get("Plans", []):
        out.extend(_walk(child))
    return out


def run(target: Target, raw_dsn: str, runs: int) -> dict[str, dict]:
    return asyncio.run(time_collectors(target, raw_dsn, runs))
