"""Solid Queue (Ruby on Rails' default Active Job backend): the `solid_queue:` preset.

Solid Queue has no status column: a job (`solid_queue_jobs`) is in a state by having a row in
one execution table, and finished when finished_at is set (kept for clear_finished_jobs_after,
1 day by default, when preserve_finished_jobs is on -- the default). Timestamps are Rails'
datetime: `timestamp(6) without time zone` holding UTC (timestamptz read as such). Schema
followed: Solid Queue 1.5.0 (`db/queue_schema.rb`); covered: 0.6 (which made
solid_queue_processes.name required) to 1.5 -- the tables have kept their shape since. Solid
Queue records no version in the database: the doctor reports the schema it recognises.

    execution table                 our role
    solid_queue_ready_executions    pending     (oldest pending: since the row was made)
    solid_queue_blocked_executions  pending     (waiting for a concurrency-limit semaphore)
    solid_queue_scheduled_executions scheduled
    solid_queue_claimed_executions  processing
    solid_queue_failed_executions   dead        (also retries exhausted: Active Job's own
                                                 retries enqueue new jobs, so a failed
                                                 execution is a job whose retries are spent)
    finished_at set                 completed   (estimated from planner statistics)
    (failed: will be retried)       always 0: Solid Queue never retries a failed execution

Stuck: a claimed execution whose worker process is gone from solid_queue_processes or has not
sent a heartbeat for Solid Queue's `process_alive_threshold` (5 min by default, after which
its supervisor should prune the process and fail its jobs) plus stuck_after. Recent:
completed = finished_at within recent_window (Solid Queue's (queue_name, finished_at) index),
failed = failed executions made within it.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from exporter.config import SolidQueueQueue
from exporter.queuekinds.base import Query, table_info
from exporter.queuekinds.library import Install, LibraryKind, LibraryQueries, quote_ident

TABLES = (
    "jobs",
    "ready_executions",
    "scheduled_executions",
    "claimed_executions",
    "blocked_executions",
    "failed_executions",
    "processes",
)
# the execution tables hold only unfinished jobs, processes the live workers: reading one
# whole is O(active jobs)
ACTIVE_TABLES = tuple(
    f"solid_queue_{t}" for t in TABLES if t.endswith("_executions") or t == "processes"
)
# the longest queue name list "*" reads (a skip scan of the queue index, one probe per name)
MAX_NAMES = 10000


class SolidQueueKind(LibraryKind):
    key = "solid_queue"
    library = "Solid Queue"
    covers = "Solid Queue 0.6 to 1.5"
    # for `discover`: the tables that mean Solid Queue is in a schema, and all of its own
    detect_tables = ("solid_queue_jobs", "solid_queue_ready_executions")
    owned = (
        *(f"solid_queue_{t}" for t in TABLES),
        "solid_queue_pauses",
        "solid_queue_semaphores",
        "solid_queue_recurring_tasks",
        "solid_queue_recurring_executions",
    )
    item: SolidQueueQueue
    active_tables = ACTIVE_TABLES

    def _t(self, name: str) -> sql.Identifier:
        return sql.Identifier(self.schema, f"solid_queue_{name}")

    async def detect(self, conn: psycopg.AsyncConnection) -> Install:
        await self.require_schema(conn)
        infos = {t: await table_info(conn, f"{self.schema}.solid_queue_{t}") for t in TABLES}
        if infos["jobs"] is None:
            raise self.missing('table "solid_queue_jobs" does not exist')
        absent = [f"solid_queue_{t}" for t, i in infos.items() if i is None]
        if absent:
            raise self.unsupported(f"no table {', '.join(absent)}")
        processes = infos["processes"]
        if processes is not None and "name" not in processes.columns:
            raise self.unsupported("solid_queue_processes has no name column (before 0.6)")
        jobs = infos["jobs"]
        finished = jobs.columns.get("finished_at")
        naive = finished is None or finished.type != "timestamp with time zone"
        recurring = await table_info(conn, f"{self.schema}.solid_queue_recurring_tasks")
        version = (
            "Solid Queue 0.6 to 1.5 schema (recurring tasks table: 0.8+)"
            if recurring is not None
            else "Solid Queue 0.6 to 0.7 schema"
        )
        return Install(version, {"naive": naive})

    def tables(self, install: Install) -> list[str]:
        return [f"{self.schema}.solid_queue_{t}" for t in TABLES]

    async def queue_names(self, conn: psycopg.AsyncConnection, install: Install) -> list[str]:
        """Every queue_name of solid_queue_jobs, by a skip scan of Solid Queue's (queue_name,
        finished_at) index: one index probe per queue, never the whole table."""
        cur = await conn.execute(
            sql.SQL(
                "WITH RECURSIVE q(name) AS ("
                " (SELECT queue_name FROM {j} ORDER BY queue_name LIMIT 1)"
                " UNION ALL SELECT (SELECT queue_name FROM {j} WHERE queue_name > q.name"
                " ORDER BY queue_name LIMIT 1) FROM q WHERE q.name IS NOT NULL)"
                " SELECT name FROM q WHERE name IS NOT NULL LIMIT %(max)s"
            ).format(j=self._t("jobs")),
            {"max": MAX_NAMES},
            prepare=False,
        )
        return [r[0] for r in await cur.fetchall()]

    def queries(self, install: Install, queue: str) -> LibraryQueries:
        q = self.item
        now = sql.SQL("(now() AT TIME ZONE 'UTC')" if install.facts["naive"] else "now()")
        params: dict[str, Any] = {
            "queue": queue,
            "horizon": float(q.process_alive_threshold + q.stuck_after),
            "window": float(q.recent_window),
        }
        state = sql.SQL(
            "WITH r AS (SELECT count(*) AS n, min(created_at) AS oldest FROM {ready}"
            " WHERE queue_name = %(queue)s),"
            " b AS (SELECT count(*) AS n, min(created_at) AS oldest FROM {blocked}"
            " WHERE queue_name = %(queue)s),"
            " s AS (SELECT count(*) AS n FROM {scheduled} WHERE queue_name = %(queue)s),"
            " c AS (SELECT count(*) AS n, count(*) FILTER (WHERE p.id IS NULL"
            " OR p.last_heartbeat_at < {now} - make_interval(secs => %(horizon)s)) AS stuck"
            " FROM {claimed} c JOIN {jobs} j ON j.id = c.job_id"
            " LEFT JOIN {processes} p ON p.id = c.process_id WHERE j.queue_name = %(queue)s),"
            " f AS (SELECT count(*) AS n, count(*) FILTER (WHERE f.created_at >="
            " {now} - make_interval(secs => %(window)s)) AS recent"
            " FROM {failed} f JOIN {jobs} j ON j.id = f.job_id WHERE j.queue_name = %(queue)s)"
            " SELECT r.n + b.n, s.n, c.n, 0, f.n,"
            " COALESCE(GREATEST(EXTRACT(EPOCH FROM {now} - LEAST(r.oldest, b.oldest)), 0),"
            " 0)::float8, c.stuck, f.n, f.recent FROM r, b, s, c, f"
        ).format(
            now=now,
            ready=self._t("ready_executions"),
            blocked=self._t("blocked_executions"),
            scheduled=self._t("scheduled_executions"),
            claimed=self._t("claimed_executions"),
            failed=self._t("failed_executions"),
            jobs=self._t("jobs"),
            processes=self._t("processes"),
        )
        # failed executions are counted by the state query (failed_recent): 0 here
        recent = sql.SQL(
            "SELECT count(*), 0 FROM {} WHERE queue_name = %(queue)s"
            " AND finished_at >= {now} - make_interval(secs => %(window)s)"
        ).format(self._t("jobs"), now=now)
        completed = sql.SQL(
            "SELECT 1 FROM {} WHERE queue_name = %(queue)s AND finished_at IS NOT NULL"
        ).format(self._t("jobs"))
        return LibraryQueries(
            Query("state", state, params, "queue_name"),
            Query("recent", recent, params, "finished_at"),
            Query("completed", completed, {"queue": queue}, None),
        )

    def index_fix(self, install: Install, query: Query) -> str | None:
        s = quote_ident(self.schema)
        if query.name == "recent":
            return (
                "CREATE INDEX CONCURRENTLY index_solid_queue_jobs_for_filtering"
                f" ON {s}.solid_queue_jobs (queue_name, finished_at);  -- Solid Queue's own index"
            )
        if query.name == "state":
            return (
                "CREATE INDEX CONCURRENTLY index_solid_queue_poll_by_queue"
                f" ON {s}.solid_queue_ready_executions (queue_name, priority, job_id);"
                "  -- Solid Queue's own index"
            )
        return None
