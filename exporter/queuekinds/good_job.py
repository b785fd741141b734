"""GoodJob (Ruby, an Active Job backend): the `good_job:` preset.

GoodJob has no status column: a `good_jobs` row's state follows from its timestamps and error
(GoodJob's own scopes). Finished jobs are kept when preserve_job_records is on (the default;
cleaned after 14 days). Timestamps are Rails' datetime: `timestamp(6) without time zone`
holding UTC (timestamptz read as such). Schema followed: GoodJob 4.19.2 (its install migration,
which folds in update migrations 01 to 14); covered: GoodJob 4.0 to 4.19 -- the columns read
here (performed_at, finished_at, error, error_event, locked_by_id) are all in 4.0. GoodJob
records no version in the database: the doctor reports the schema it recognises.

    good_jobs row                                           our role
    unfinished, not performed, no error, scheduled_at due   pending (oldest: since scheduled_at)
    unfinished, not performed, no error, scheduled_at later scheduled
    unfinished, performed_at set                            processing
    unfinished, not performed, error set                    failed (Active Job retries it)
    finished_at and error set                               dead (retries exhausted: its
                                                            error_event is retry_stopped)
    finished_at set, no error                               completed (planner estimate)

Stuck: performing, and its process (locked_by_id -> good_job_processes) is gone or has not
refreshed its updated_at for GoodJob's process expiry (5 min) plus stuck_after; a job
performing without locked_by_id counts when performed_at is that old. Recent: finished_at
within recent_window (GoodJob's finished_at index), split by error, plus errors awaiting a
retry whose row changed within the window.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from exporter.config import GoodJobQueue
from exporter.queuekinds.base import Query, table_info
from exporter.queuekinds.library import Install, LibraryKind, LibraryQueries, one_row, quote_ident

# GoodJob's process expiry (GoodJob::Process::EXPIRED_INTERVAL, not configurable)
PROCESS_EXPIRY = 300.0
RETRY_STOPPED = 4  # good_jobs.error_event: interrupted 0, unhandled 1, handled 2, retried 3
COLUMNS = ("performed_at", "finished_at", "error", "error_event", "locked_by_id", "queue_name")
MAX_NAMES = 10000
QUEUE_INDEX_SQL = """
SELECT EXISTS (SELECT FROM pg_indexes WHERE schemaname = %s AND tablename = 'good_jobs'
               AND indexname = 'index_good_jobs_on_queue_name')
"""


class GoodJobKind(LibraryKind):
    key = "good_job"
    library = "GoodJob"
    covers = "GoodJob 4.0 to 4.19"
    # for `discover`: the tables that mean GoodJob is in a schema, and all of its own
    detect_tables = ("good_jobs", "good_job_processes")
    owned = (
        "good_jobs",
        "good_job_processes",
        "good_job_executions",
        "good_job_settings",
        "good_job_batches",
    )
    active_tables = ("good_job_processes",)
    item: GoodJobQueue

    def _t(self, name: str = "good_jobs") -> sql.Identifier:
        return sql.Identifier(self.schema, name)

    async def detect(self, conn: psycopg.AsyncConnection) -> Install:
        await self.require_schema(conn)
        info = await table_info(conn, f"{self.schema}.good_jobs")
        if info is None:
            raise self.missing('table "good_jobs" does not exist')
        absent = [c for c in COLUMNS if c not in info.columns]
        if absent:
            raise self.unsupported(f"good_jobs has no column {', '.join(absent)} (before 4.0)")
        if await table_info(conn, f"{self.schema}.good_job_processes") is None:
            raise self.unsupported("no table good_job_processes (before 4.0)")
        finished = info.columns["finished_at"]
        naive = finished.type != "timestamp with time zone"
        queue_index = bool((await one_row(conn, QUEUE_INDEX_SQL, (self.schema,)) or (False,))[0])
        version = (
            "GoodJob 4.18+ schema (update migrations up to 10 or later)"
            if queue_index
            else "GoodJob 4.0 to 4.17 schema"
        )
        return Install(version, {"naive": naive, "queue_index": queue_index})

    def tables(self, install: Install) -> list[str]:
        return [f"{self.schema}.good_jobs", f"{self.schema}.good_job_processes"]

    async def queue_names(self, conn: psycopg.AsyncConnection, install: Install) -> list[str]:
        """Every queue_name, by a skip scan (one index probe per name): of the whole table
        through index_good_jobs_on_queue_name (GoodJob 4.18+), else of the unfinished jobs
        through the partial (queue_name, scheduled_at) index every 4.x install has."""
        unfinished = sql.SQL("" if install.facts["queue_index"] else " AND finished_at IS NULL")
        cur = await conn.execute(
            sql.SQL(
                "WITH RECURSIVE q(name) AS ("
                " (SELECT queue_name FROM {j} WHERE queue_name IS NOT NULL{u}"
                " ORDER BY queue_name LIMIT 1)"
                " UNION ALL SELECT (SELECT queue_name FROM {j} WHERE queue_name > q.name{u}"
                " ORDER BY queue_name LIMIT 1) FROM q WHERE q.name IS NOT NULL)"
                " SELECT name FROM q WHERE name IS NOT NULL LIMIT %(max)s"
            ).format(j=self._t(), u=unfinished),
            {"max": MAX_NAMES},
            prepare=False,
        )
        return [r[0] for r in await cur.fetchall()]

    def queries(self, install: Install, queue: str) -> LibraryQueries:
        q = self.item
        now = sql.SQL("(now() AT TIME ZONE 'UTC')" if install.facts["naive"] else "now()")
        params: dict[str, Any] = {
            "queue": queue,
            "horizon": PROCESS_EXPIRY + float(q.stuck_after),
            "window": float(q.recent_window),
            "stopped": RETRY_STOPPED,
        }
        due = sql.SQL("COALESCE(scheduled_at, created_at) <= {now}").format(now=now)
        # the unfinished jobs (GoodJob's partial indexes WHERE finished_at IS NULL) and, in one
        # pass, the discarded ones it keeps (its partial index on discarded jobs)
        state = sql.SQL(
            "SELECT u.pending, u.scheduled, u.processing, u.failed, d.dead, u.oldest, u.stuck,"
            " d.exhausted, u.failed_recent FROM"
            " (SELECT count(*) FILTER (WHERE performed_at IS NULL AND error IS NULL AND {due})"
            " AS pending,"
            " count(*) FILTER (WHERE performed_at IS NULL AND error IS NULL AND NOT {due})"
            " AS scheduled,"
            " count(*) FILTER (WHERE performed_at IS NOT NULL) AS processing,"
            " count(*) FILTER (WHERE performed_at IS NULL AND error IS NOT NULL) AS failed,"
            " COALESCE(GREATEST(EXTRACT(EPOCH FROM {now} - min(COALESCE(scheduled_at,"
            " created_at)) FILTER (WHERE performed_at IS NULL AND error IS NULL AND {due})),"
            " 0), 0)::float8 AS oldest,"
            " count(*) FILTER (WHERE performed_at IS NOT NULL AND CASE"
            " WHEN locked_by_id IS NULL THEN"
            " performed_at < {now} - make_interval(secs => %(horizon)s)"
            " ELSE NOT EXISTS (SELECT FROM {processes} p WHERE p.id = locked_by_id"
            " AND p.updated_at >= {now} - make_interval(secs => %(horizon)s)) END) AS stuck,"
            " count(*) FILTER (WHERE performed_at IS NULL AND error IS NOT NULL"
            " AND updated_at >= {now} - make_interval(secs => %(window)s)) AS failed_recent"
            " FROM {jobs} WHERE finished_at IS NULL AND queue_name = %(queue)s) u,"
            " (SELECT count(*) AS dead, count(*) FILTER (WHERE error_event = %(stopped)s)"
            " AS exhausted FROM {jobs} WHERE finished_at IS NOT NULL AND error IS NOT NULL"
            " AND queue_name = %(queue)s) d"
        ).format(due=due, now=now, jobs=self._t(), processes=self._t("good_job_processes"))
        recent = sql.SQL(
            "SELECT count(*) FILTER (WHERE error IS NULL), count(*) FILTER (WHERE error IS NOT"
            " NULL) FROM {jobs} WHERE finished_at >= {now} - make_interval(secs => %(window)s)"
            " AND queue_name = %(queue)s"
        ).format(jobs=self._t(), now=now)
        completed = sql.SQL(
            "SELECT 1 FROM {} WHERE finished_at IS NOT NULL AND error IS NULL"
            " AND queue_name = %(queue)s"
        ).format(self._t())
        return LibraryQueries(
            Query("state", state, params, "queue_name"),
            Query("recent", recent, params, "finished_at"),
            Query("completed", completed, {"queue": queue}, None),
        )

    def index_fix(self, install: Install, query: Query) -> str | None:
        t = f"{quote_ident(self.schema)}.good_jobs"
        if query.name == "recent":
            return (
                "CREATE INDEX CONCURRENTLY index_good_jobs_jobs_on_finished_at_only"
                f" ON {t} (finished_at) WHERE finished_at IS NOT NULL;  -- GoodJob's own index"
            )
        if query.name == "state":
            return (
                "CREATE INDEX CONCURRENTLY index_good_jobs_on_queue_name_and_scheduled_at"
                f" ON {t} (queue_name, scheduled_at) WHERE finished_at IS NULL;\n"
                "CREATE INDEX CONCURRENTLY index_good_jobs_on_discarded"
                f" ON {t} (finished_at DESC) WHERE finished_at IS NOT NULL AND error IS NOT NULL;"
                "  -- GoodJob's own indexes"
            )
        return None
