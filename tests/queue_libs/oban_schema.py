"""Oban's tables, made from its documented migrations (Oban v2.23.0, migration version 14;
versions 12 and 13 can be made for the version detection). Oban is an Elixir library, not
installable here; nothing of its code is copied. What is created follows the documented shapes:

- the enum `oban_job_state` (available, suspended -- added by migration 14 --, scheduled,
  executing, retryable, completed, discarded, cancelled -- added by 9);
- `oban_jobs` (id bigserial, state, queue text, worker text, args jsonb, errors jsonb[],
  attempt int, max_attempts int, inserted_at / scheduled_at / attempted_at / completed_at /
  discarded_at / cancelled_at -- Ecto's utc_datetime_usec: `timestamp without time zone`
  holding UTC --, attempted_by text[], priority int, tags text[], meta jsonb) with its checks;
- its indexes: oban_jobs_state_queue_priority_scheduled_at_id_index (state, queue, priority,
  scheduled_at, id), GIN on args and meta, and from migration 13 (state, cancelled_at) and
  (state, discarded_at);
- `oban_peers` (migration 11), and the migrated version recorded the way Oban's migrator
  records it: as the comment on the oban_jobs table (`COMMENT ON TABLE oban_jobs IS '14'`).

The functions below change jobs with statements of the shapes Oban's Basic engine runs
(insert, fetch -> executing, complete, error -> retryable, discard, cancel, staging, and
Lifeline's rescue horizon on attempted_at).
"""

from __future__ import annotations

import psycopg
from psycopg import sql

LATEST = 14
UTC_NOW = "timezone('UTC', now())"


def _ddl(s: str, version: int) -> str:
    suspended = "'suspended', " if version >= 14 else ""
    out = f"""
    CREATE SCHEMA IF NOT EXISTS {s};
    CREATE TYPE {s}.oban_job_state AS ENUM ('available', {suspended}'scheduled', 'executing',
        'retryable', 'completed', 'discarded', 'cancelled');
    CREATE TABLE {s}.oban_jobs (
        id bigserial PRIMARY KEY,
        state {s}.oban_job_state NOT NULL DEFAULT 'available',
        queue text NOT NULL DEFAULT 'default',
        worker text NOT NULL,
        args jsonb NOT NULL DEFAULT '{{}}',
        errors jsonb[] NOT NULL DEFAULT ARRAY[]::jsonb[],
        attempt integer NOT NULL DEFAULT 0,
        max_attempts integer NOT NULL DEFAULT 20,
        inserted_at timestamp without time zone NOT NULL DEFAULT {UTC_NOW},
        scheduled_at timestamp without time zone NOT NULL DEFAULT {UTC_NOW},
        attempted_at timestamp without time zone,
        completed_at timestamp without time zone,
        attempted_by text[],
        discarded_at timestamp without time zone,
        priority integer NOT NULL DEFAULT 0,
        tags text[] DEFAULT ARRAY[]::text[],
        meta jsonb DEFAULT '{{}}',
        cancelled_at timestamp without time zone,
        CONSTRAINT worker_length CHECK (char_length(worker) > 0 AND char_length(worker) < 128),
        CONSTRAINT queue_length CHECK (char_length(queue) > 0 AND char_length(queue) < 128),
        CONSTRAINT positive_max_attempts CHECK (max_attempts > 0),
        CONSTRAINT attempt_range CHECK (attempt BETWEEN 0 AND max_attempts),
        CONSTRAINT non_negative_priority CHECK (priority >= 0)
    );
    CREATE INDEX oban_jobs_state_queue_priority_scheduled_at_id_index
        ON {s}.oban_jobs (state, queue, priority, scheduled_at, id);
    CREATE INDEX oban_jobs_args_index ON {s}.oban_jobs USING GIN (args);
    CREATE INDEX oban_jobs_meta_index ON {s}.oban_jobs USING GIN (meta);
    CREATE UNLOGGED TABLE {s}.oban_peers (name text PRIMARY KEY, node text NOT NULL,
        started_at timestamp without time zone NOT NULL,
        expires_at timestamp without time zone NOT NULL);
    """
    if version >= 13:
        out += f"""
        CREATE INDEX oban_jobs_state_cancelled_at_index ON {s}.oban_jobs (state, cancelled_at);
        CREATE INDEX oban_jobs_state_discarded_at_index ON {s}.oban_jobs (state, discarded_at);
        """
    return out + f"COMMENT ON TABLE {s}.oban_jobs IS '{int(version)}';"


def install(conn: psycopg.Connection, prefix: str = "public", version: int = LATEST) -> None:
    """Oban's schema as `Oban.Migration.up(version: <version>, prefix: <prefix>)` leaves it
    (12 to 14; lower numbers give the same tables with that comment, for the "unsupported
    version" check)."""
    conn.execute(_ddl(sql.Identifier(prefix).as_string(None), version))


def _t(prefix: str) -> sql.Identifier:
    return sql.Identifier(prefix, "oban_jobs")


def insert(
    conn: psycopg.Connection,
    queue: str,
    n: int,
    *,
    worker: str = "MyApp.Mailer",
    delay: float = 0,
    max_attempts: int = 20,
    prefix: str = "public",
) -> list[int]:
    """n jobs as Oban.insert writes them: `available`, or `scheduled` with a future
    scheduled_at (timestamps in UTC without a time zone)."""
    rows = conn.execute(
        sql.SQL(
            "INSERT INTO {t} (state, queue, worker, args, max_attempts, scheduled_at)"
            " SELECT CASE WHEN %(delay)s > 0 THEN 'scheduled' ELSE 'available' END::{e},"
            " %(queue)s, %(worker)s, jsonb_build_object('n', i), %(max)s,"
            f" {UTC_NOW} + make_interval(secs => %(delay)s)"
            " FROM generate_series(1, %(n)s) i RETURNING id"
        ).format(t=_t(prefix), e=sql.Identifier(prefix, "oban_job_state")),
        {"delay": delay, "queue": queue, "worker": worker, "max": max_attempts, "n": n},
    ).fetchall()
    return [r[0] for r in rows]


def fetch(
    conn: psycopg.Connection, queue: str, n: int, *, node: str = "web.1", prefix: str = "public"
) -> list[int]:
    """The Basic engine's fetch: available jobs of the queue by priority, scheduled_at, id,
    locked SKIP LOCKED, made executing with attempt + 1, attempted_at and attempted_by."""
    rows = conn.execute(
        sql.SQL(
            "UPDATE {t} SET state = 'executing', attempt = attempt + 1,"
            f" attempted_at = {UTC_NOW}, attempted_by = ARRAY[%(node)s, 'uuid']"
            " WHERE id IN (SELECT id FROM {t} WHERE state = 'available' AND queue = %(queue)s"
            " ORDER BY priority, scheduled_at, id LIMIT %(n)s FOR UPDATE SKIP LOCKED)"
            " RETURNING id"
        ).format(t=_t(prefix)),
        {"node": node, "queue": queue, "n": n},
    ).fetchall()
    return sorted(r[0] for r in rows)


def complete(conn: psycopg.Connection, ids: list[int], prefix: str = "public") -> None:
    conn.execute(
        sql.SQL(
            f"UPDATE {{}} SET state = 'completed', completed_at = {UTC_NOW} WHERE id = ANY(%s)"
        ).format(_t(prefix)),
        (ids,),
    )


def error(
    conn: psycopg.Connection, ids: list[int], *, backoff: float = 60, prefix: str = "public"
) -> None:
    """A failed attempt as the executor records it: with attempts left `retryable` at now +
    backoff with the error appended; without, `discarded` with discarded_at."""
    conn.execute(
        sql.SQL(
            "UPDATE {} SET errors = array_append(errors, jsonb_build_object('attempt', attempt,"
            f" 'at', {UTC_NOW}, 'error', 'boom')),"
            " state = CASE WHEN attempt >= max_attempts THEN 'discarded' ELSE 'retryable' END::{},"
            f" discarded_at = CASE WHEN attempt >= max_attempts THEN {UTC_NOW} END,"
            " scheduled_at = CASE WHEN attempt >= max_attempts THEN scheduled_at"
            f" ELSE {UTC_NOW} + make_interval(secs => %s) END"
            " WHERE id = ANY(%s)"
        ).format(_t(prefix), sql.Identifier(prefix, "oban_job_state")),
        (backoff, ids),
    )


def cancel(conn: psycopg.Connection, ids: list[int], prefix: str = "public") -> None:
    conn.execute(
        sql.SQL(
            f"UPDATE {{}} SET state = 'cancelled', cancelled_at = {UTC_NOW}"
            " WHERE id = ANY(%s) AND state NOT IN ('cancelled', 'completed', 'discarded')"
        ).format(_t(prefix)),
        (ids,),
    )


def stage(conn: psycopg.Connection, prefix: str = "public") -> int:
    """The stager: scheduled and retryable jobs whose scheduled_at has come become available."""
    cur = conn.execute(
        sql.SQL(
            "UPDATE {} SET state = 'available' WHERE state IN ('scheduled', 'retryable')"
            f" AND scheduled_at <= {UTC_NOW}"
        ).format(_t(prefix))
    )
    return cur.rowcount


def backdate(
    conn: psycopg.Connection, ids: list[int], seconds: float, prefix: str = "public"
) -> None:
    """Move every timestamp of the jobs `seconds` into the past."""
    cols = ("inserted_at", "scheduled_at", "attempted_at", "completed_at", "discarded_at")
    sets = sql.SQL(", ").join(
        sql.SQL("{c} = {c} - make_interval(secs => %(s)s)").format(c=sql.Identifier(c))
        for c in (*cols, "cancelled_at")
    )
    conn.execute(
        sql.SQL("UPDATE {} SET {} WHERE id = ANY(%(ids)s)").format(_t(prefix), sets),
        {"s": seconds, "ids": ids},
    )


def bulk(
    conn: psycopg.Connection, finished: int, active: int, queues: int = 3, prefix: str = "public"
) -> None:
    """Many jobs at once, for the benchmark: `finished` over the last day (98 % completed,
    1 % discarded, 1 % cancelled -- a Pruner keeping a day) and `active` unfinished ones (half
    available, a fifth executing, a fifth scheduled, a tenth retryable), spread over `queues`
    queues q0, q1...; then ANALYZE, as autovacuum would."""
    t, e = _t(prefix), sql.Identifier(prefix, "oban_job_state")
    conn.execute(
        sql.SQL(
            "INSERT INTO {t} (state, queue, worker, attempt, inserted_at, scheduled_at,"
            " attempted_at, completed_at, discarded_at, cancelled_at)"
            " SELECT s::{e}, 'q' || (i %% %(queues)s), 'Bench', 1, f - interval '2 seconds',"
            " f - interval '2 seconds', f - interval '1 second',"
            " CASE WHEN s = 'completed' THEN f END, CASE WHEN s = 'discarded' THEN f END,"
            " CASE WHEN s = 'cancelled' THEN f END FROM generate_series(1, %(n)s) i,"
            f" LATERAL (SELECT {UTC_NOW} - make_interval(secs => (i %% 86400)) AS f,"
            " CASE WHEN i %% 100 = 0 THEN 'discarded' WHEN i %% 100 = 1 THEN 'cancelled'"
            " ELSE 'completed' END AS s) x"
        ).format(t=t, e=e),
        {"n": finished, "queues": queues},
    )
    conn.execute(
        sql.SQL(
            "INSERT INTO {t} (state, queue, worker, attempt, scheduled_at, attempted_at)"
            " SELECT s::{e}, 'q' || (i %% %(queues)s), 'Bench',"
            " CASE WHEN s IN ('executing', 'retryable') THEN 1 ELSE 0 END,"
            f" CASE WHEN s IN ('scheduled', 'retryable') THEN {UTC_NOW} + interval '1 hour'"
            f" ELSE {UTC_NOW} END,"
            f" CASE WHEN s IN ('executing', 'retryable') THEN {UTC_NOW} END"
            " FROM generate_series(1, %(n)s) i, LATERAL (SELECT CASE WHEN i %% 10 < 5"
            " THEN 'available' WHEN i %% 10 < 7 THEN 'executing' WHEN i %% 10 < 9"
            " THEN 'scheduled' ELSE 'retryable' END AS s) x"
        ).format(t=t, e=e),
        {"n": active, "queues": queues},
    )
    conn.execute(sql.SQL("VACUUM ANALYZE {}").format(t))
