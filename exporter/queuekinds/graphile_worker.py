"""graphile-worker (npm `graphile-worker`), the `graphile_worker:` preset. Covers graphile-worker
0.16, 0.17 and 0.18: migrations 17 to 20 of its `<schema>.migrations` table (0.16.x writes 18,
0.17.x 19, 0.18.x 20). Read only through the public view `<schema>.jobs` that 0.16 made its
API (migration 17): its tables are `_private_*` and change without notice, so the preset never
reads them. Before 0.16 `jobs` is a table and the version is refused as unsupported. Tested
with 0.16.6, 0.17.3 and 0.18.0 driving their own schema (tests/test_preset_graphile_worker.py).

The queue label is the job's task identifier (`task_identifier`), the one thing every job has
and what a worker is registered for. graphile-worker's `queue_name` is a serialisation key
(jobs of one named queue run one at a time), often one per user or record: as a label it would
be unbounded, so it is not one.

graphile-worker deletes a job when it completes; the view holds only jobs not yet done:

    pending      not locked, attempts = 0, run_at <= now()   due, never tried
    scheduled    not locked, attempts = 0, run_at >  now()   added with a later run_at
    processing   locked_at set                               a worker holds it
    failed       not locked, 0 < attempts < max_attempts     failed, will run again (backoff)
    dead         not locked, attempts >= max_attempts        failed for good: graphile-worker
                                                             keeps it until someone deletes it
                                                             -- also the retries exhausted

Stuck: locked for more than stuck_after (graphile-worker has no heartbeat: locked_at is when
the attempt began; after 4 hours it takes the lock to be stale and lets another worker retry).
Oldest pending: now - run_at (when the job became due).

Throughput: none. A completed job is deleted and leaves nothing in the view -- not a row, not
a counter per task -- so `runbook_queue_recent_jobs` is absent for these queues, and
QueueWorkerStalled / QueueFailureRatioHigh cannot judge them; a stalled worker shows as a
growing backlog and oldest pending age (QueueBacklogHigh, QueueOldestPendingTooOld).

Cost: the view joins the jobs table with the tasks table; the jobs table holds unfinished and
permanently failed jobs only, so reading it whole is O(active jobs) plus the failures nobody
cleared (`graphile-worker --cleanup DELETE_PERMAFAILED_JOBS` removes them). No index is needed
and none is suggested: the doctor reports the size of what a scrape reads instead.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from exporter.queuekinds._unfinished import UnfinishedOnlyKind
from exporter.queuekinds.base import Query, table_info
from exporter.queuekinds.library import Install, LibraryQueries, one_row

MIN_MIGRATION = 17  # 0.16.0: the jobs view
KNOWN_MIGRATION = 20  # 0.18.0, the newest this preset was checked against
# the view's columns the queries read
VIEW_COLUMNS = ("task_identifier", "run_at", "attempts", "max_attempts", "locked_at")


def release(migration: int) -> str:
    """The graphile-worker releases whose last migration is `migration`."""
    if migration <= 18:
        return "graphile-worker 0.16"
    if migration == 19:
        return "graphile-worker 0.17"
    if migration == 20:
        return "graphile-worker 0.18"
    return "graphile-worker newer than 0.18"


class GraphileWorkerKind(UnfinishedOnlyKind):
    key = "graphile_worker"
    library = "graphile-worker"
    covers = (
        f"graphile-worker 0.16 to 0.18 (migrations {MIN_MIGRATION} to {KNOWN_MIGRATION}), "
        "read through its public jobs view"
    )
    # the view, the migrations table and the private jobs table's name (found in the catalog,
    # never read): "jobs" and "migrations" alone are names many apps' own tables have
    detect_tables = ("jobs", "migrations", "_private_jobs")
    owned = (
        "jobs",
        "migrations",
        "_private_jobs",
        "_private_job_queues",
        "_private_tasks",
        "_private_known_crontabs",
    )

    @property
    def view(self) -> str:
        return f"{self.schema}.jobs"

    async def detect(self, conn: psycopg.AsyncConnection) -> Install:
        await self.require_schema(conn)
        info = await table_info(conn, self.view)
        if info is None:
            raise self.missing(f'view "{self.view}" does not exist')
        if info.relkind != "v":
            # before 0.16 the jobs table itself was the API
            raise self.unsupported(f'"{self.view}" is a table (graphile-worker 0.15 or older)')
        missing = [c for c in VIEW_COLUMNS if c not in info.columns]
        if missing:
            raise self.unsupported(f'the view "{self.view}" has no column {", ".join(missing)}')
        migrations = await table_info(conn, f"{self.schema}.migrations")
        if migrations is None or not migrations.readable:
            # the view is what the queries need; the version is only reported
            why = "missing" if migrations is None else "not readable"
            return Install(
                f"0.16 or later (the jobs view; {self.schema}.migrations is {why}, so the "
                "exact release is unknown)",
                {"migration": None},
            )
        row = await one_row(
            conn,
            sql.SQL("SELECT max(id)::int FROM {}").format(
                sql.Identifier(self.schema, "migrations")
            ),
        )
        found = row[0] if row else None
        if found is None:
            raise self.missing(f'"{self.schema}.migrations" is empty: migrations have not run')
        if found < MIN_MIGRATION:  # a view of that name made by someone else
            raise self.unsupported(f"migration {found} (graphile-worker 0.15 or older)")
        note = None
        if found > KNOWN_MIGRATION:
            note = (
                f"migration {found} is newer than the newest this preset was checked against "
                f"({KNOWN_MIGRATION}, graphile-worker 0.18): the jobs view is graphile-worker's "
                "public API and its columns are checked, report anything that looks wrong"
            )
        return Install(f"migration {found} ({release(found)})", {"migration": found}, note)

    def tables(self, install: Install) -> list[str]:
        return [self.view]

    async def queue_names(self, conn: psycopg.AsyncConnection, install: Install) -> list[str]:
        """The task identifiers of the jobs in the view (graphile-worker keeps no registry a
        monitoring role may read: its task table is private)."""
        cur = await conn.execute(
            sql.SQL("SELECT DISTINCT task_identifier FROM {}").format(
                sql.Identifier(self.schema, "jobs")
            ),
            prepare=False,
        )
        return [r[0] for r in await cur.fetchall()]

    def queries(self, install: Install, queue: str) -> LibraryQueries:
        view = sql.Identifier(self.schema, "jobs")
        params: dict[str, Any] = {"queue": queue, "stuck_after": float(self.item.stuck_after)}
        waiting = sql.SQL("locked_at IS NULL AND attempts = 0")
        state_sql = sql.SQL(
            "SELECT count(*) FILTER (WHERE {waiting} AND run_at <= now()),"
            " count(*) FILTER (WHERE {waiting} AND run_at > now()),"
            " count(*) FILTER (WHERE locked_at IS NOT NULL),"
            " count(*) FILTER (WHERE locked_at IS NULL AND attempts > 0"
            " AND attempts < max_attempts),"
            " count(*) FILTER (WHERE locked_at IS NULL AND attempts >= max_attempts),"
            " COALESCE(GREATEST(EXTRACT(EPOCH FROM now() - min(run_at)"
            " FILTER (WHERE {waiting} AND run_at <= now())), 0), 0)::float8,"
            " count(*) FILTER (WHERE locked_at < now() - make_interval(secs => %(stuck_after)s)),"
            " count(*) FILTER (WHERE locked_at IS NULL AND attempts >= max_attempts),"
            # no recent query (nothing finished is kept): failures in the window go unused
            " 0"
            " FROM {view} WHERE task_identifier = %(queue)s"
        ).format(waiting=waiting, view=view)
        return LibraryQueries(
            state=Query("state", state_sql, params, None),
            recent=None,
            completed=None,
        )

    async def unfinished_note(self, conn: psycopg.AsyncConnection) -> str:
        """What the state query reads: the whole view, which holds only the jobs
        graphile-worker has not finished."""
        row = await one_row(
            conn,
            sql.SQL(
                "SELECT count(*), count(*) FILTER (WHERE locked_at IS NULL"
                " AND attempts >= max_attempts) FROM {}"
            ).format(sql.Identifier(self.schema, "jobs")),
        )
        total, dead = row if row else (0, 0)
        text = (
            f"{self.view} holds {total} job(s), all unfinished (graphile-worker deletes a job "
            "when it completes): a scrape reads them all, O(active jobs), no index needed"
        )
        if dead:
            text += (
                f"; {dead} of them failed for good and stay until deleted "
                "(graphile-worker --cleanup DELETE_PERMAFAILED_JOBS)"
            )
        return text
