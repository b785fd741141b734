"""pg-boss (npm `pg-boss`), the `pg_boss:` preset. Covers pg-boss 10, 11 and 12: schema
versions 21 to 46 of its `<schema>.version` table (10.0.0 writes 21, 10.4.x 24, 11.0.x 25, 12.0.0
26, 12.38.0 46). pg-boss 9 and older (schema version 20 and below) are refused with "unsupported
version": their job table is not partitioned per queue and has no queue registry.

pg-boss keeps every queue in `<schema>.queue` (name, policy, retry_limit...) and its jobs in
`<schema>.job`, partitioned by LIST (name): one partition per queue (pg-boss 12: or a shared
`job_common` partition). Reading the parent with `name = <queue>` prunes to that partition.
Job states (enum `job_state`): created, retry, active, completed, cancelled, failed.

    pending      created, start_after <= now()      fetchable
    scheduled    created, start_after >  now()      sent with a delay
    processing   active
    failed       retry                              failed, will run again after retry_delay
    dead         failed                             retry_limit reached (pg-boss's terminal
                                                    failure): also the retries exhausted
    completed    completed                          planner estimate; pg-boss deletes them
                                                    after its retention (10: archives them)
    cancelled    not counted                        a person did it

Stuck: active past pg-boss's own expiry (started_on + expire_in, 11+: expire_seconds; 12 with a
heartbeat: heartbeat_on + heartbeat_seconds) by more than stuck_after -- pg-boss's maintenance
should have failed it by then, so it is not running. Oldest pending: now - start_after (the
time the job became fetchable). Recent: completed / failed jobs by completed_on within
recent_window, plus retry jobs started within it (a failure that will be retried).

Indexes: pg-boss 12 creates job_i14 (name, state, blocked, start_after) WHERE state IN
('created', 'retry', 'active', 'failed') and job_i16 (name, completed_on) WHERE completed_on IS
NOT NULL on every queue partition: both queries are O(unfinished jobs) and O(jobs finished in
the window). pg-boss 10 and 11 have neither (their job_i5 covers created and retry only): the
doctor says so and prints the two indexes (created on the partitioned parent, PostgreSQL
creates them on every partition, present and future).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from exporter.queuekinds.base import Query, QueueConfigError, table_info
from exporter.queuekinds.library import (
    Install,
    LibraryKind,
    LibraryQueries,
    one_row,
    quote_ident,
)

MIN_SCHEMA = 21  # pg-boss 10.0.0
KNOWN_SCHEMA = 46  # pg-boss 12.38.0, the newest this preset was checked against
UNFINISHED = ("created", "retry", "active", "failed")


def release(schema_version: int) -> str:
    """The pg-boss releases that write a schema version."""
    if schema_version <= 24:
        return "pg-boss 10"
    if schema_version == 25:
        return "pg-boss 11"
    return "pg-boss 12" if schema_version <= KNOWN_SCHEMA else "pg-boss newer than 12.38"


class PgBossKind(LibraryKind):
    key = "pg_boss"
    library = "pg-boss"
    covers = f"pg-boss 10 to 12 (schema versions {MIN_SCHEMA} to {KNOWN_SCHEMA})"
    detect_tables = ("job", "queue", "version")
    owned = ("job", "queue", "version", "archive", "schedule", "subscription", "job_common")

    async def detect(self, conn: psycopg.AsyncConnection) -> Install:
        await self.require_schema(conn)
        version_table = f"{self.schema}.version"
        info = await table_info(conn, version_table)
        if info is None:
            raise self.missing(f'table "{version_table}" does not exist')
        if not info.readable:
            raise QueueConfigError(
                f'{self.where()}: permission denied: cannot SELECT from "{version_table}"'
            )
        row = await one_row(
            conn,
            sql.SQL("SELECT max(version)::int FROM {}").format(
                sql.Identifier(self.schema, "version")
            ),
        )
        found = row[0] if row else None
        if found is None:
            raise self.missing(f'"{version_table}" is empty: pg-boss has not finished installing')
        if found < MIN_SCHEMA:
            raise self.unsupported(f"schema version {found} (pg-boss 9 or older)")
        job = await table_info(conn, f"{self.schema}.job")
        cols = set(job.columns) if job else set()
        facts = {
            "schema_version": found,
            "expire_seconds": "expire_seconds" in cols,  # 11+; 10 has expire_in (interval)
            "heartbeat": {"heartbeat_on", "heartbeat_seconds"} <= cols,  # 12
        }
        note = None
        if found > KNOWN_SCHEMA:
            note = (
                f"schema version {found} is newer than the newest this preset was checked "
                f"against ({KNOWN_SCHEMA}, pg-boss 12.38): the columns it reads are checked, "
                "report anything that looks wrong"
            )
        return Install(f"schema version {found} ({release(found)})", facts, note)

    def tables(self, install: Install) -> list[str]:
        return [f"{self.schema}.queue", f"{self.schema}.job"]

    async def queue_names(self, conn: psycopg.AsyncConnection, install: Install) -> list[str]:
        cur = await conn.execute(
            sql.SQL("SELECT name FROM {}").format(sql.Identifier(self.schema, "queue")),
            prepare=False,
        )
        return [r[0] for r in await cur.fetchall()]

    async def queue_problem(
        self, conn: psycopg.AsyncConnection, install: Install, queue: str
    ) -> str | None:
        row = await one_row(
            conn,
            sql.SQL("SELECT 1 FROM {} WHERE name = %s").format(
                sql.Identifier(self.schema, "queue")
            ),
            (queue,),
        )
        if row is None:
            return f'queue "{queue}" does not exist in {self.schema}.queue (createQueue makes it)'
        return None

    def queries(self, install: Install, queue: str) -> LibraryQueries:
        job = sql.Identifier(self.schema, "job")
        state = sql.Identifier(self.schema, "job_state")
        if install.facts["expire_seconds"]:
            expiry = sql.SQL("started_on + expire_seconds * interval '1 second'")
        else:
            expiry = sql.SQL("started_on + expire_in")
        stale = sql.SQL("{} < now() - make_interval(secs => %(stuck_after)s)").format(expiry)
        if install.facts["heartbeat"]:
            stale = sql.SQL(
                "({} OR (heartbeat_seconds IS NOT NULL AND heartbeat_on"
                " + heartbeat_seconds * interval '1 second'"
                " < now() - make_interval(secs => %(stuck_after)s)))"
            ).format(stale)
        params: dict[str, Any] = {
            "queue": queue,
            "stuck_after": float(self.item.stuck_after),
            "window": float(self.item.recent_window),
        }
        states = sql.SQL(", ").join(
            sql.SQL("{}::{}").format(sql.Literal(s), state) for s in UNFINISHED
        )
        state_sql = sql.SQL(
            "SELECT count(*) FILTER (WHERE state = 'created' AND start_after <= now()),"
            " count(*) FILTER (WHERE state = 'created' AND start_after > now()),"
            " count(*) FILTER (WHERE state = 'active'),"
            " count(*) FILTER (WHERE state = 'retry'),"
            " count(*) FILTER (WHERE state = 'failed'),"
            " COALESCE(GREATEST(EXTRACT(EPOCH FROM now() - min(start_after)"
            " FILTER (WHERE state = 'created' AND start_after <= now())), 0), 0)::float8,"
            " count(*) FILTER (WHERE state = 'active' AND {stale}),"
            " count(*) FILTER (WHERE state = 'failed'),"
            " count(*) FILTER (WHERE state = 'retry'"
            " AND started_on >= now() - make_interval(secs => %(window)s))"
            " FROM {job} WHERE name = %(queue)s AND state IN ({states})"
        ).format(stale=stale, job=job, states=states)
        recent_sql = sql.SQL(
            "SELECT count(*) FILTER (WHERE state = 'completed'),"
            " count(*) FILTER (WHERE state = 'failed')"
            " FROM {job} WHERE name = %(queue)s"
            " AND completed_on >= now() - make_interval(secs => %(window)s)"
        ).format(job=job)
        completed_sql = sql.SQL(
            "SELECT 1 FROM {job} WHERE name = %(queue)s AND state = 'completed'"
        ).format(job=job)
        return LibraryQueries(
            state=Query("state", state_sql, params, None, list(UNFINISHED)),
            recent=Query("recent", recent_sql, params, "completed_on"),
            completed=Query("completed", completed_sql, {"queue": queue}, None),
        )

    def index_fix(self, install: Install, query: Query) -> str | None:
        job = f"{quote_ident(self.schema)}.job"
        if query.name == "state":
            return (
                f"CREATE INDEX job_i14 ON {job} (name, state, start_after)"
                " WHERE state IN ('created', 'retry', 'active', 'failed');"
                "  -- what pg-boss 12 creates"
            )
        if query.name == "recent":
            return (
                f"CREATE INDEX job_i16 ON {job} (name, completed_on)"
                " WHERE completed_on IS NOT NULL;  -- what pg-boss 12 creates"
            )
        return None
