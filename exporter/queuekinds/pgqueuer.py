"""pgqueuer (PyPI `pgqueuer`), the `pgqueuer:` preset. Covers pgqueuer 1.0 to 1.6: the schema
with the `attempts` column and the `failed` status (1.0 added both, for retries in the
database and held failures). Older schemas (0.x) are refused as unsupported: `pgqueuer upgrade`
brings them to the current one.

pgqueuer keeps unfinished jobs in `<prefix>pgqueuer` and moves every finished one to the log
`<prefix>pgqueuer_log` (which also records each queued and picked transition), from which its
workers fold per-second counts into `<prefix>pgqueuer_statistics`. The status enum
`<prefix>pgqueuer_status` has queued, picked, successful, exception, canceled, deleted, failed.
The queue label is the job's entrypoint, what pgqueuer's own `backlog` command groups by.

    pending      queued, attempts = 0, execute_after <= now()   due, never tried
    scheduled    queued, attempts = 0, execute_after >  now()   enqueued with a delay
    processing   picked
    failed       queued, attempts > 0                           re-queued by a retry
    dead         failed (in the queue table)                    failed for good and held for
                                                                a person (on_failure="hold")
                                                                -- also the retries exhausted
    completed    not estimated (below)

Stuck: picked with a heartbeat older than stuck_after (a worker beats every half
heartbeat_timeout, 30 s by default, so a silent job has lost its worker; pgqueuer re-picks it
only when a worker of that entrypoint asks for work). Oldest pending: now - execute_after
(when the job became due). Recent, from the log within recent_window: completed = successful;
failed = exception (failed, deleted), failed (failed, held) and queued with a traceback (a
failed attempt that will be retried). canceled and deleted jobs are neither.

No completed estimate: the log's rows of one entrypoint and status could only be estimated as
the product of two column statistics (off by a factor either way), and the statistics table's
exact counts grow by a row per second of activity; `runbook_queue_jobs_estimated` is absent.

Cost: the queue table holds unfinished and held jobs only (finished ones move to the log), so
the state query reading it whole is O(active jobs); the recent query is a range of the log's
`created` index (`<prefix>pgqueuer_log_created`), O(log rows in the window).
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg import sql

from exporter.queuekinds._unfinished import UnfinishedOnlyKind
from exporter.queuekinds.base import Query, table_info
from exporter.queuekinds.library import Install, LibraryQueries, one_row

QUEUE_COLUMNS = ("entrypoint", "status", "attempts", "execute_after", "heartbeat")
LOG_COLUMNS = ("entrypoint", "status", "created", "traceback")
# the status labels the queries name (an enum missing one would fail every query)
STATUSES = ("queued", "picked", "successful", "exception", "failed")


class PgqueuerKind(UnfinishedOnlyKind):
    key = "pgqueuer"
    library = "pgqueuer"
    covers = "pgqueuer 1.0 to 1.6 (the attempts column and the failed status)"
    # pgqueuer's tables without a PGQUEUER_PREFIX (discover finds the default names only)
    detect_tables = ("pgqueuer", "pgqueuer_log")
    owned = ("pgqueuer", "pgqueuer_log", "pgqueuer_statistics", "pgqueuer_schedules")

    @property
    def queue_table(self) -> str:
        return f"{self.schema}.{self.item.prefix}pgqueuer"

    @property
    def log_table(self) -> str:
        return f"{self.schema}.{self.item.prefix}pgqueuer_log"

    def _ident(self, table: str) -> sql.Identifier:
        return sql.Identifier(*table.split(".", 1))

    async def detect(self, conn: psycopg.AsyncConnection) -> Install:
        await self.require_schema(conn)
        queue = await table_info(conn, self.queue_table)
        if queue is None:
            raise self.missing(f'table "{self.queue_table}" does not exist')
        log = await table_info(conn, self.log_table)
        if log is None:
            raise self.missing(f'table "{self.log_table}" does not exist')
        missing = [c for c in QUEUE_COLUMNS if c not in queue.columns]
        missing += [f"log.{c}" for c in LOG_COLUMNS if c not in log.columns]
        status = queue.columns.get("status")
        labels = set(status.enum_labels or ()) if status else set()
        other = [c for c in missing if c != "attempts"]
        if other:
            raise self.unsupported(f"no column {', '.join(other)} in its tables")
        if missing or "failed" not in labels:  # 1.0 added both
            raise self.unsupported(
                "a schema without the attempts column or the failed status (pgqueuer 0.x; "
                "`pgqueuer upgrade` brings it to the current schema)"
            )
        if not set(STATUSES) <= labels:
            raise self.unsupported(
                f"status values {sorted(labels)} (expected {', '.join(STATUSES)})"
            )
        # 1.4 added the slot column (database-enforced concurrency limits)
        if "slot" in queue.columns:
            version = "pgqueuer 1.4 or later (slot column)"
        else:
            version = "pgqueuer 1.0 to 1.3 (attempts column, no slot column)"
        return Install(version, {"slot": "slot" in queue.columns})

    def tables(self, install: Install) -> list[str]:
        return [self.queue_table, self.log_table]

    async def queue_names(self, conn: psycopg.AsyncConnection, install: Install) -> list[str]:
        """The entrypoints with unfinished jobs, and those that finished a job within
        recent_window (a range of the log's created index): a queue that only ran quick
        jobs is still listed while it has throughput to show."""
        cur = await conn.execute(
            sql.SQL(
                "SELECT entrypoint FROM {queue} UNION SELECT entrypoint FROM {log}"
                " WHERE created >= now() - make_interval(secs => %(window)s)"
            ).format(queue=self._ident(self.queue_table), log=self._ident(self.log_table)),
            {"window": float(self.item.recent_window)},
            prepare=False,
        )
        return [r[0] for r in await cur.fetchall()]

    def queries(self, install: Install, queue: str) -> LibraryQueries:
        params: dict[str, Any] = {
            "queue": queue,
            "stuck_after": float(self.item.stuck_after),
            "window": float(self.item.recent_window),
        }
        waiting = sql.SQL("status = 'queued' AND attempts = 0")
        state_sql = sql.SQL(
            "SELECT count(*) FILTER (WHERE {waiting} AND execute_after <= now()),"
            " count(*) FILTER (WHERE {waiting} AND execute_after > now()),"
            " count(*) FILTER (WHERE status = 'picked'),"
            " count(*) FILTER (WHERE status = 'queued' AND attempts > 0),"
            " count(*) FILTER (WHERE status = 'failed'),"
            " COALESCE(GREATEST(EXTRACT(EPOCH FROM now() - min(execute_after)"
            " FILTER (WHERE {waiting} AND execute_after <= now())), 0), 0)::float8,"
            " count(*) FILTER (WHERE status = 'picked'"
            " AND heartbeat < now() - make_interval(secs => %(stuck_after)s)),"
            " count(*) FILTER (WHERE status = 'failed'),"
            # failures within the window are read from the log (the recent query)
            " 0"
            " FROM {queue} WHERE entrypoint = %(queue)s"
        ).format(waiting=waiting, queue=self._ident(self.queue_table))
        recent_sql = sql.SQL(
            "SELECT count(*) FILTER (WHERE status = 'successful'),"
            " count(*) FILTER (WHERE status IN ('exception', 'failed')"
            " OR (status = 'queued' AND traceback IS NOT NULL))"
            " FROM {log} WHERE entrypoint = %(queue)s"
            " AND created >= now() - make_interval(secs => %(window)s)"
        ).format(log=self._ident(self.log_table))
        return LibraryQueries(
            state=Query("state", state_sql, params, None),
            recent=Query("recent", recent_sql, params, "created"),
            completed=None,
        )

    def index_fix(self, install: Install, query: Query) -> str | None:
        if query.name != "recent":
            return None
        name = f"{self.item.prefix}pgqueuer_log_created"
        log = ".".join(_bare(p) for p in self.log_table.split(".", 1))
        return f"CREATE INDEX CONCURRENTLY {name} ON {log} (created);  -- what pgqueuer creates"

    async def unfinished_note(self, conn: psycopg.AsyncConnection) -> str:
        row = await one_row(
            conn,
            sql.SQL("SELECT count(*), count(*) FILTER (WHERE status = 'failed') FROM {}").format(
                self._ident(self.queue_table)
            ),
        )
        total, held = row if row else (0, 0)
        text = (
            f"{self.queue_table} holds {total} job(s), all unfinished (pgqueuer moves finished "
            "jobs to its log): a scrape reads them all, O(active jobs), no index needed"
        )
        if held:
            text += f"; {held} failed job(s) held for a person (requeue or delete them)"
        return text


def _bare(name: str) -> str:
    """An identifier as PostgreSQL prints it: unquoted when it can be (for the doctor)."""
    if re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'
