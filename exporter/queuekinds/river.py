"""River (Go, riverqueue.com): the `river:` preset.

River keeps every job in `river_job` (schema `public` by default) with a `river_job_state`
enum; finished jobs stay until River's cleaner deletes them (completed and cancelled after
24 h, discarded after 7 days by default). Schema followed: River 0.43.0, migration line `main`
version 7; covered: versions 4 (River 0.5.0, which added the `pending` state and `river_queue`)
to 7. The version is read from `river_migration` (line `main`), or inferred from the catalog
when an app runs River's SQL through its own migration tool.

    River state            our role
    available              pending     (oldest pending: since scheduled_at)
    scheduled, pending     scheduled   (pending: held by a River Pro workflow / sequence)
    running                processing
    retryable              failed      (will be retried at scheduled_at)
    discarded              dead        (retries exhausted: attempt >= max_attempts)
    completed              completed   (estimated from planner statistics)
    cancelled              not counted (cancelled on purpose: neither done nor failed)

Stuck: running with attempted_at older than River's rescuer horizon (`rescue_after`, River's
RescueStuckJobsAfter, 1 h by default) plus stuck_after: the rescuer should have moved it.
Recent: completed / discarded with finalized_at within recent_window (River's index on (state,
finalized_at)), and failed attempts (retryable, attempted within the window).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from exporter.config import RiverQueue
from exporter.queuekinds.base import Query, table_info
from exporter.queuekinds.library import Install, LibraryKind, LibraryQueries, one_row, quote_ident

COVERED = range(4, 8)
# the River releases that brought each migration of line main
RELEASES = {
    4: "River 0.5 to 0.9",
    5: "River 0.10 to 0.11",
    6: "River 0.12 to 0.39",
    7: "River 0.40+",
}
ACTIVE = "('available', 'scheduled', 'pending', 'running', 'retryable', 'discarded')"
ALL_STATES = (
    "available",
    "cancelled",
    "completed",
    "discarded",
    "pending",
    "retryable",
    "running",
    "scheduled",
)


class RiverKind(LibraryKind):
    key = "river"
    library = "River"
    covers = "River 0.5 to 0.43 (migration line main, versions 4 to 7)"
    # for `discover`: the tables that mean River is in a schema, and River's own tables
    detect_tables = ("river_job", "river_queue")
    owned = (
        "river_job",
        "river_queue",
        "river_leader",
        "river_migration",
        "river_notification",
        "river_client",
        "river_client_queue",
    )
    item: RiverQueue

    def _rel(self, name: str) -> sql.Identifier:
        return sql.Identifier(self.schema, name)

    async def detect(self, conn: psycopg.AsyncConnection) -> Install:
        await self.require_schema(conn)
        job = await table_info(conn, f"{self.schema}.river_job")
        if job is None:
            raise self.missing('table "river_job" does not exist')
        state = job.columns.get("state")
        labels = set(state.enum_labels or ()) if state else set()
        migrations = await table_info(conn, f"{self.schema}.river_migration")
        version: int | None = None
        how = "river_migration"
        if migrations is not None and migrations.readable:
            line = "line" in migrations.columns
            row = await one_row(
                conn,
                sql.SQL("SELECT max(version) FROM {}{}").format(
                    self._rel("river_migration"),
                    sql.SQL(" WHERE line = 'main'") if line else sql.SQL(""),
                ),
            )
            version = int(row[0]) if row and row[0] is not None else None
        if version is None:  # River's SQL run by another migration tool: read the catalog
            how = "inferred from the catalog"
            notification = await table_info(conn, f"{self.schema}.river_notification")
            if "pending" not in labels:
                version = 3
            elif notification is not None:
                version = 7
            elif "unique_states" in job.columns:
                version = 6
            elif "unique_key" in job.columns:
                version = 5
            else:
                version = 4
        if version < COVERED.start or "pending" not in labels:
            raise self.unsupported(f"migration version {version} (before River 0.5)")
        note = None
        if version >= COVERED.stop:
            note = (
                f"River migration {version} is newer than this preset knows "
                f"(up to {COVERED.stop - 1}): read as {COVERED.stop - 1}"
            )
        release = RELEASES.get(min(version, COVERED.stop - 1), "")
        return Install(
            f"River migration {version} ({release}; {how})",
            {"version": version, "queue_table": version >= 4},
            note,
        )

    def tables(self, install: Install) -> list[str]:
        return [f"{self.schema}.river_job", f"{self.schema}.river_queue"]

    async def queue_names(self, conn: psycopg.AsyncConnection, install: Install) -> list[str]:
        """The queues River's clients registered (river_queue: kept while a client works them,
        purged after 24 h idle) and the queues of unfinished jobs (River's (state, queue, ...)
        index: O(active jobs))."""
        cur = await conn.execute(
            sql.SQL(
                "SELECT name FROM {q} UNION SELECT DISTINCT queue FROM {j} WHERE state IN " + ACTIVE
            ).format(q=self._rel("river_queue"), j=self._rel("river_job")),
            prepare=False,
        )
        return [r[0] for r in await cur.fetchall()]

    async def queue_problem(
        self, conn: psycopg.AsyncConnection, install: Install, queue: str
    ) -> str | None:
        """A queue no River client registered and no job names: most likely a typo."""
        states = sql.SQL(", ").join(sql.Literal(s) for s in ALL_STATES)
        row = await one_row(
            conn,
            sql.SQL(
                "SELECT EXISTS (SELECT FROM {q} WHERE name = %(n)s)"
                " OR EXISTS (SELECT FROM {j} WHERE state IN ({s}) AND queue = %(n)s)"
            ).format(q=self._rel("river_queue"), j=self._rel("river_job"), s=states),
            {"n": queue},
        )
        if row and row[0]:
            return None
        return f'queue "{queue}" is not in {self.schema}.river_queue and no job names it'

    def queries(self, install: Install, queue: str) -> LibraryQueries:
        q = self.item
        job = self._rel("river_job")
        params: dict[str, Any] = {
            "queue": queue,
            "horizon": float(q.rescue_after + q.stuck_after),
            "window": float(q.recent_window),
        }
        state = sql.SQL(
            "SELECT count(*) FILTER (WHERE state = 'available'),"
            " count(*) FILTER (WHERE state IN ('scheduled', 'pending')),"
            " count(*) FILTER (WHERE state = 'running'),"
            " count(*) FILTER (WHERE state = 'retryable'),"
            " count(*) FILTER (WHERE state = 'discarded'),"
            " COALESCE(GREATEST(EXTRACT(EPOCH FROM now() - min(scheduled_at)"
            " FILTER (WHERE state = 'available')), 0), 0)::float8,"
            " count(*) FILTER (WHERE state = 'running'"
            " AND attempted_at < now() - make_interval(secs => %(horizon)s)),"
            " count(*) FILTER (WHERE state = 'discarded' AND attempt >= max_attempts),"
            " count(*) FILTER (WHERE state = 'retryable'"
            " AND attempted_at >= now() - make_interval(secs => %(window)s))"
            " FROM {} WHERE state IN " + ACTIVE + " AND queue = %(queue)s"
        ).format(job)
        recent = sql.SQL(
            "SELECT count(*) FILTER (WHERE state = 'completed'),"
            " count(*) FILTER (WHERE state = 'discarded')"
            " FROM {} WHERE state IN ('completed', 'discarded')"
            " AND finalized_at >= now() - make_interval(secs => %(window)s) AND queue = %(queue)s"
        ).format(job)
        completed = sql.SQL(
            "SELECT 1 FROM {} WHERE state = 'completed' AND queue = %(queue)s"
        ).format(job)
        return LibraryQueries(
            Query("state", state, params, "state"),
            Query("recent", recent, params, "finalized_at"),
            Query("completed", completed, {"queue": queue}, None),
        )

    def index_fix(self, install: Install, query: Query) -> str | None:
        t = f"{quote_ident(self.schema)}.river_job"
        if query.name == "state":
            return (
                "CREATE INDEX CONCURRENTLY river_job_prioritized_fetching_index"
                f" ON {t} (state, queue, priority, scheduled_at, id);  -- River's own index"
            )
        if query.name == "recent":
            return (
                "CREATE INDEX CONCURRENTLY river_job_state_and_finalized_at_index"
                f" ON {t} (state, finalized_at) WHERE finalized_at IS NOT NULL;"
                "  -- River's own index"
            )
        return None
