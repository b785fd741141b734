"""Procrastinate (PyPI `procrastinate`), the `procrastinate:` preset. Covers Procrastinate 3.0
to 3.10 (its schema through migration 03.04.00, what `procrastinate schema --apply` of 3.10
creates). Procrastinate keeps no version in the database, so the version is told by what its
migrations left: the `procrastinate_workers` table (heartbeats) is 3.1 or later; the `_v1`
indexes of migration 03.00.00 without it are 3.0; without those it is 2.x or older, refused as
unsupported (its statuses and indexes differ: `aborting`, no `_v1` indexes).

Tables (schema `public` by default): `procrastinate_jobs` (id, queue_name, task_name, status
enum procrastinate_job_status, scheduled_at, attempts, worker_id...), `procrastinate_events`
(job_id, type, at: the only timestamps Procrastinate keeps) and, from 3.1,
`procrastinate_workers` (id, last_heartbeat). There is no registry of queues: "*" lists the
queue names of the jobs kept (a loose scan of `procrastinate_jobs_queue_name_idx_v1`).

    pending      todo, attempts = 0, scheduled_at null or passed
    scheduled    todo, attempts = 0, scheduled_at in the future
    processing   doing
    failed       todo, attempts > 0        failed, and its retry strategy deferred it again
    dead         failed                    the retries are exhausted: also retries exhausted
    completed    succeeded                 planner estimate
    cancelled, aborted, aborting: not counted (a person or the app did it)

Oldest pending: since scheduled_at, else since the job's `deferred` event. Stuck: doing, and
(3.1+) its worker's heartbeat is older than Procrastinate's stalled-worker timeout (30 s) plus
stuck_after, or its worker row is gone (pruned as stalled); 3.0: its `started` event is older
than stuck_after (Procrastinate 3.0's own stalled-jobs query takes an age the same way).
Recent: the `succeeded`, `failed` and `deferred_for_retry` events of the queue's jobs within
recent_window.

Indexes: Procrastinate's own `procrastinate_jobs_id_lock_idx_v1 (id, lock) WHERE status IN
('todo', 'doing')` bounds the unfinished jobs; but the failed jobs (kept until
delete_old_jobs) and the events have no index that bounds what we read -- the doctor prints the
two to create.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from exporter.queuekinds.base import Query, table_info
from exporter.queuekinds.library import (
    Install,
    LibraryKind,
    LibraryQueries,
    distinct_values,
    one_row,
    quote_ident,
)

# Procrastinate's default stalled_worker_timeout: a worker silent for longer is stalled
STALLED_WORKER_TIMEOUT = 30.0

V1_INDEX_SQL = """
SELECT EXISTS (SELECT FROM pg_class c WHERE c.relname = 'procrastinate_jobs_id_lock_idx_v1'
               AND c.relnamespace = %s::regnamespace)
"""


class ProcrastinateKind(LibraryKind):
    key = "procrastinate"
    library = "Procrastinate"
    covers = "Procrastinate 3.0 to 3.10"
    detect_tables = ("procrastinate_jobs", "procrastinate_events")
    owned = (
        "procrastinate_jobs",
        "procrastinate_events",
        "procrastinate_workers",
        "procrastinate_periodic_defers",
    )

    def rel(self, name: str) -> sql.Identifier:
        return sql.Identifier(self.schema, name)

    async def detect(self, conn: psycopg.AsyncConnection) -> Install:
        await self.require_schema(conn)
        jobs = await table_info(conn, f"{self.schema}.procrastinate_jobs")
        if jobs is None:
            raise self.missing(f'table "{self.schema}.procrastinate_jobs" does not exist')
        workers = await table_info(conn, f"{self.schema}.procrastinate_workers")
        if workers is not None and "worker_id" in jobs.columns:
            return Install("3.1 or later (worker heartbeats)", {"heartbeat": True})
        row = await one_row(conn, V1_INDEX_SQL, (self.schema,))
        if row and row[0]:
            return Install("3.0 (no worker heartbeats)", {"heartbeat": False})
        raise self.unsupported(
            "2.x or older (no procrastinate_jobs_id_lock_idx_v1, which 3.0's migration creates)"
        )

    def tables(self, install: Install) -> list[str]:
        out = [f"{self.schema}.procrastinate_jobs", f"{self.schema}.procrastinate_events"]
        if install.facts["heartbeat"]:
            out.append(f"{self.schema}.procrastinate_workers")
        return out

    async def queue_names(self, conn: psycopg.AsyncConnection, install: Install) -> list[str]:
        return await distinct_values(
            conn, self.rel("procrastinate_jobs"), "queue_name", self.names_limit()
        )

    def queries(self, install: Install, queue: str) -> LibraryQueries:
        jobs, events = self.rel("procrastinate_jobs"), self.rel("procrastinate_events")
        if install.facts["heartbeat"]:
            stale = sql.SQL(
                "(j.worker_id IS NULL OR NOT EXISTS (SELECT FROM {workers} w"
                " WHERE w.id = j.worker_id AND w.last_heartbeat"
                " >= now() - make_interval(secs => %(stalled)s + %(stuck_after)s)))"
            ).format(workers=self.rel("procrastinate_workers"))
        else:
            stale = sql.SQL(
                "(SELECT max(e.at) FROM {events} e WHERE e.job_id = j.id AND e.type = 'started')"
                " < now() - make_interval(secs => %(stuck_after)s)"
            ).format(events=events)
        due = sql.SQL("(j.scheduled_at IS NULL OR j.scheduled_at <= now())")
        pending = sql.SQL("j.status = 'todo' AND j.attempts = 0 AND {}").format(due)
        state_sql = sql.SQL(
            "SELECT count(*) FILTER (WHERE {pending}),"
            " count(*) FILTER (WHERE j.status = 'todo' AND j.attempts = 0"
            " AND j.scheduled_at > now()),"
            " count(*) FILTER (WHERE j.status = 'doing'),"
            " count(*) FILTER (WHERE j.status = 'todo' AND j.attempts > 0),"
            " count(*) FILTER (WHERE j.status = 'failed'),"
            " COALESCE(GREATEST(EXTRACT(EPOCH FROM now() - min(COALESCE(j.scheduled_at,"
            " (SELECT min(e.at) FROM {events} e WHERE e.job_id = j.id AND e.type = 'deferred')))"
            " FILTER (WHERE {pending})), 0), 0)::float8,"
            " count(*) FILTER (WHERE j.status = 'doing' AND {stale}),"
            " count(*) FILTER (WHERE j.status = 'failed'),"
            " 0"
            " FROM {jobs} j WHERE j.queue_name = %(queue)s"
            " AND j.status IN ('todo', 'doing', 'failed')"
        ).format(pending=pending, events=events, stale=stale, jobs=jobs)
        # the events of the window first, each looked up in the jobs by id (a scalar subquery
        # is never turned into a join): O(jobs finished in the window), where a join may read
        # every job of the queue
        recent_sql = sql.SQL(
            "SELECT count(*) FILTER (WHERE e.type = 'succeeded'),"
            " count(*) FILTER (WHERE e.type IN ('failed', 'deferred_for_retry'))"
            " FROM {events} e"
            " WHERE e.type IN ('succeeded', 'failed', 'deferred_for_retry')"
            " AND e.at >= now() - make_interval(secs => %(window)s)"
            " AND (SELECT j.queue_name FROM {jobs} j WHERE j.id = e.job_id) = %(queue)s"
        ).format(events=events, jobs=jobs)
        completed_sql = sql.SQL(
            "SELECT 1 FROM {jobs} WHERE queue_name = %(queue)s AND status = 'succeeded'"
        ).format(jobs=jobs)
        params: dict[str, Any] = {
            "queue": queue,
            "stuck_after": float(self.item.stuck_after),
            "stalled": STALLED_WORKER_TIMEOUT,
            "window": float(self.item.recent_window),
        }
        return LibraryQueries(
            state=Query("state", state_sql, params, None, ["todo", "doing", "failed"]),
            recent=Query("recent", recent_sql, params, "at"),
            completed=Query("completed", completed_sql, {"queue": queue}, None),
        )

    def index_fix(self, install: Install, query: Query) -> str | None:
        schema = quote_ident(self.schema)
        if query.name == "state":
            return (
                "CREATE INDEX CONCURRENTLY procrastinate_jobs_queue_unfinished ON "
                f"{schema}.procrastinate_jobs (queue_name, status)"
                " WHERE status IN ('todo', 'doing', 'failed');"
            )
        if query.name == "recent":
            return (
                "CREATE INDEX CONCURRENTLY procrastinate_events_finished_at ON "
                f"{schema}.procrastinate_events (at)"
                " WHERE type IN ('succeeded', 'failed', 'deferred_for_retry');"
            )
        return None
