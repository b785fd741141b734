"""Oban (Elixir, getoban.pro): the `oban:` preset.

Oban keeps every job in `oban_jobs` in its prefix (`schema:` here; `public` by default) with
an `oban_job_state` enum; its Pruner deletes finished jobs after `max_age` (60 s by default).
Timestamps are Ecto's utc_datetime_usec: `timestamp without time zone` holding UTC, so every
comparison here is with `timezone('UTC', now())`. Schema followed: Oban 2.23.0, migration 14;
covered: migrations 9 (Oban 2.3, which added `cancelled` and cancelled_at) to 14 (2.21+, which
added `suspended`). Oban's migrator records the version as the comment on `oban_jobs`
(`COMMENT ON TABLE oban_jobs IS '14'`); without one it is inferred from the catalog.

    Oban state             our role
    available              pending     (oldest pending: since scheduled_at)
    scheduled, suspended   scheduled
    executing              processing
    retryable              failed      (will be retried at scheduled_at)
    discarded              dead        (retries exhausted: attempt >= max_attempts)
    completed              completed   (estimated from planner statistics)
    cancelled              not counted (cancelled on purpose)

Stuck: executing with attempted_at older than Lifeline's `rescue_after` (60 min by default;
Lifeline rescues such orphans) plus stuck_after. Recent: completed with completed_at and
discarded with discarded_at within recent_window, and failed attempts (retryable, attempted
within the window).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from exporter.config import ObanQueue
from exporter.queuekinds.base import Query, table_info
from exporter.queuekinds.library import Install, LibraryKind, LibraryQueries, one_row, quote_ident

COVERED = range(9, 15)
RELEASES = {
    9: "Oban 2.3",
    10: "Oban 2.4 to 2.10",
    11: "Oban 2.11 to 2.16",
    12: "Oban 2.17 to 2.19",
    13: "Oban 2.20",
    14: "Oban 2.21 to 2.23",
}
COMMENT_SQL = """
SELECT obj_description(c.oid, 'pg_class') FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname = 'oban_jobs' AND n.nspname = %s
"""
INDEX_SQL = """
SELECT EXISTS (SELECT FROM pg_indexes WHERE schemaname = %s AND tablename = 'oban_jobs'
               AND indexdef LIKE '%%(state, discarded_at)%%')
"""


class ObanKind(LibraryKind):
    key = "oban"
    library = "Oban"
    covers = "Oban 2.3 to 2.23 (migrations 9 to 14)"
    # for `discover`: the table that means Oban is in a schema (its prefix), and Oban's own
    detect_tables = ("oban_jobs",)
    owned = ("oban_jobs", "oban_peers", "oban_producers")
    item: ObanQueue

    def _jobs(self) -> sql.Identifier:
        return sql.Identifier(self.schema, "oban_jobs")

    async def detect(self, conn: psycopg.AsyncConnection) -> Install:
        await self.require_schema(conn)
        info = await table_info(conn, f"{self.schema}.oban_jobs")
        if info is None:
            raise self.missing('table "oban_jobs" does not exist')
        state = info.columns.get("state")
        labels = set(state.enum_labels or ()) if state else set()
        row = await one_row(conn, COMMENT_SQL, (self.schema,))
        comment = (row[0] or "").strip() if row else ""
        if comment.isdigit():
            version, how = int(comment), "oban_jobs comment"
        else:  # Oban's SQL run by hand: read the catalog
            how = "inferred from the catalog"
            if "suspended" in labels:
                version = 14
            elif (await one_row(conn, INDEX_SQL, (self.schema,)) or (False,))[0]:
                version = 13
            elif "cancelled" in labels and "cancelled_at" in info.columns:
                version = 12
            else:
                version = 8
        if version < COVERED.start or "cancelled" not in labels:
            raise self.unsupported(f"migration {version} (before Oban 2.3)")
        note = None
        if version >= COVERED.stop:
            note = (
                f"Oban migration {version} is newer than this preset knows "
                f"(up to {COVERED.stop - 1}): read as {COVERED.stop - 1}"
            )
        scheduled = info.columns.get("scheduled_at")
        naive = scheduled is None or scheduled.type != "timestamp with time zone"
        release = RELEASES.get(min(version, COVERED.stop - 1), "")
        return Install(
            f"Oban migration {version} ({release}; {how})",
            {"version": version, "suspended": "suspended" in labels, "naive": naive},
            note,
        )

    def tables(self, install: Install) -> list[str]:
        return [f"{self.schema}.oban_jobs"]

    def _active(self, install: Install) -> str:
        held = ", 'suspended'" if install.facts["suspended"] else ""
        return f"('available', 'scheduled'{held}, 'executing', 'retryable', 'discarded')"

    async def queue_names(self, conn: psycopg.AsyncConnection, install: Install) -> list[str]:
        """Oban has no table of queues: the queues of its unfinished and discarded jobs,
        through its (state, queue, ...) index."""
        cur = await conn.execute(
            sql.SQL("SELECT DISTINCT queue FROM {} WHERE state IN " + self._active(install)).format(
                self._jobs()
            ),
            prepare=False,
        )
        return [r[0] for r in await cur.fetchall()]

    def queries(self, install: Install, queue: str) -> LibraryQueries:
        q = self.item
        now = sql.SQL("timezone('UTC', now())" if install.facts["naive"] else "now()")
        held = ", 'suspended'" if install.facts["suspended"] else ""
        params: dict[str, Any] = {
            "queue": queue,
            "horizon": float(q.rescue_after + q.stuck_after),
            "window": float(q.recent_window),
        }
        state = sql.SQL(
            "SELECT count(*) FILTER (WHERE state = 'available'),"
            " count(*) FILTER (WHERE state IN ('scheduled'" + held + ")),"
            " count(*) FILTER (WHERE state = 'executing'),"
            " count(*) FILTER (WHERE state = 'retryable'),"
            " count(*) FILTER (WHERE state = 'discarded'),"
            " COALESCE(GREATEST(EXTRACT(EPOCH FROM {now} - min(scheduled_at)"
            " FILTER (WHERE state = 'available')), 0), 0)::float8,"
            " count(*) FILTER (WHERE state = 'executing'"
            " AND attempted_at < {now} - make_interval(secs => %(horizon)s)),"
            " count(*) FILTER (WHERE state = 'discarded' AND attempt >= max_attempts),"
            " count(*) FILTER (WHERE state = 'retryable'"
            " AND attempted_at >= {now} - make_interval(secs => %(window)s))"
            " FROM {jobs} WHERE state IN " + self._active(install) + " AND queue = %(queue)s"
        ).format(now=now, jobs=self._jobs())
        recent = sql.SQL(
            "SELECT (SELECT count(*) FROM {jobs} WHERE state = 'completed' AND queue = %(queue)s"
            " AND completed_at >= {now} - make_interval(secs => %(window)s)),"
            " (SELECT count(*) FROM {jobs} WHERE state = 'discarded' AND queue = %(queue)s"
            " AND discarded_at >= {now} - make_interval(secs => %(window)s))"
        ).format(now=now, jobs=self._jobs())
        completed = sql.SQL(
            "SELECT 1 FROM {} WHERE state = 'completed' AND queue = %(queue)s"
        ).format(self._jobs())
        return LibraryQueries(
            Query("state", state, params, "state"),
            # each half ranges over its own finish time
            Query("recent", recent, params, "completed_at|discarded_at"),
            Query("completed", completed, {"queue": queue}, None),
        )

    def index_fix(self, install: Install, query: Query) -> str | None:
        t = f"{quote_ident(self.schema)}.oban_jobs"
        if query.name == "state":
            return (
                "CREATE INDEX CONCURRENTLY oban_jobs_state_queue_priority_scheduled_at_id_index"
                f" ON {t} (state, queue, priority, scheduled_at, id);  -- Oban's own index"
            )
        if query.name == "recent":
            fix = (
                f"CREATE INDEX CONCURRENTLY ON {t} (state, completed_at);"
                "  -- not Oban's: needed when the Pruner keeps completed jobs for long"
            )
            if install.facts["version"] < 13:
                fix += f"\nCREATE INDEX CONCURRENTLY ON {t} (state, discarded_at);  -- Oban 2.20+"
            return fix
        return None
