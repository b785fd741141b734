"""River's tables, made from its documented migrations (River v0.43.0, migration line `main`
version 7; versions 4 to 7 can be made for the version detection). River is a Go library, not
installable here; nothing of its code is copied. What is created follows the documented shapes:

- `river_migration (line text, version bigint, created_at timestamptz, PRIMARY KEY (line,
  version))` since migration 5 (before it: `id bigserial, created_at, version`);
- the enum `river_job_state` (available, cancelled, completed, discarded, pending -- added by
  migration 4 --, retryable, running, scheduled);
- `river_job` (id bigserial, state, attempt smallint, max_attempts smallint, attempted_at,
  created_at, finalized_at, scheduled_at -- all timestamptz --, priority smallint, args jsonb,
  attempted_by text[], errors jsonb[], kind text, metadata jsonb, queue text, tags
  varchar(255)[], unique_key bytea from 5, unique_states bit(8) from 6) with its check
  "finalized_at set exactly for cancelled / completed / discarded";
- its indexes: river_job_kind (kind), river_job_state_and_finalized_at_index (state,
  finalized_at) WHERE finalized_at IS NOT NULL, river_job_prioritized_fetching_index (state,
  queue, priority, scheduled_at, id), GIN on args and metadata;
- `river_queue` (name, created_at, metadata, paused_at, updated_at) from 4, `river_leader`,
  `river_notification` from 7.

The functions below change jobs with statements of the shapes River's client runs (insert,
fetch with FOR UPDATE SKIP LOCKED, complete, error -> retryable or discarded, cancel, the
scheduler making due jobs available, the rescuer's stuck-job horizon on attempted_at).
"""

from __future__ import annotations

import psycopg
from psycopg import sql

LATEST = 7


def _ddl(schema: str, version: int) -> str:
    s = sql.Identifier(schema).as_string(None)
    states = ", ".join(
        f"'{v}'"
        for v in ("available", "cancelled", "completed", "discarded", "retryable", "running")
    )
    states += ", 'scheduled'"
    out = [
        f"CREATE SCHEMA IF NOT EXISTS {s};",
        f"CREATE TYPE {s}.river_job_state AS ENUM ({states});",
    ]
    if version >= 5:
        out.append(
            f"CREATE TABLE {s}.river_migration (line text NOT NULL, version bigint NOT NULL,"
            " created_at timestamptz NOT NULL DEFAULT now(),"
            " CONSTRAINT line_length CHECK (char_length(line) > 0 AND char_length(line) < 128),"
            " CONSTRAINT version_gte_1 CHECK (version >= 1), PRIMARY KEY (line, version));"
        )
    else:
        out.append(
            f"CREATE TABLE {s}.river_migration (id bigserial PRIMARY KEY,"
            " created_at timestamptz NOT NULL DEFAULT now(), version bigint NOT NULL"
            " CHECK (version >= 1));"
            f"CREATE UNIQUE INDEX ON {s}.river_migration (version);"
        )
    out.append(
        f"""CREATE TABLE {s}.river_job (
            id bigserial PRIMARY KEY,
            state {s}.river_job_state NOT NULL DEFAULT 'available',
            attempt smallint NOT NULL DEFAULT 0,
            max_attempts smallint NOT NULL DEFAULT 25,
            attempted_at timestamptz,
            created_at timestamptz NOT NULL DEFAULT now(),
            finalized_at timestamptz,
            scheduled_at timestamptz NOT NULL DEFAULT now(),
            priority smallint NOT NULL DEFAULT 1,
            args jsonb NOT NULL,
            attempted_by text[],
            errors jsonb[],
            kind text NOT NULL,
            metadata jsonb NOT NULL DEFAULT '{{}}',
            queue text NOT NULL DEFAULT 'default',
            tags varchar(255)[] NOT NULL DEFAULT '{{}}',
            CONSTRAINT max_attempts_is_positive CHECK (max_attempts > 0),
            CONSTRAINT priority_in_range CHECK (priority >= 1 AND priority <= 4),
            CONSTRAINT queue_length CHECK (char_length(queue) > 0 AND char_length(queue) < 128),
            CONSTRAINT kind_length CHECK (char_length(kind) > 0 AND char_length(kind) < 128)
        );
        CREATE INDEX river_job_kind ON {s}.river_job (kind);
        CREATE INDEX river_job_state_and_finalized_at_index ON {s}.river_job (state, finalized_at)
            WHERE finalized_at IS NOT NULL;
        CREATE INDEX river_job_prioritized_fetching_index
            ON {s}.river_job (state, queue, priority, scheduled_at, id);
        CREATE INDEX river_job_args_index ON {s}.river_job USING GIN (args);
        CREATE INDEX river_job_metadata_index ON {s}.river_job USING GIN (metadata);
        CREATE UNLOGGED TABLE {s}.river_leader (elected_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL, leader_id text NOT NULL,
            name text PRIMARY KEY DEFAULT 'default');"""
    )
    if version >= 4:
        out.append(
            f"ALTER TYPE {s}.river_job_state ADD VALUE 'pending' AFTER 'discarded';"
            f"ALTER TABLE {s}.river_job ADD CONSTRAINT finalized_or_finalized_at_null CHECK ("
            " (finalized_at IS NULL AND state NOT IN ('cancelled', 'completed', 'discarded')) OR"
            " (finalized_at IS NOT NULL AND state IN ('cancelled', 'completed', 'discarded')));"
            f"CREATE TABLE {s}.river_queue (name text PRIMARY KEY,"
            " created_at timestamptz NOT NULL DEFAULT now(),"
            " metadata jsonb NOT NULL DEFAULT '{}', paused_at timestamptz,"
            " updated_at timestamptz NOT NULL DEFAULT now());"
        )
    if version >= 5:
        out.append(f"ALTER TABLE {s}.river_job ADD COLUMN unique_key bytea;")
    if version >= 6:
        out.append(
            f"ALTER TABLE {s}.river_job ADD COLUMN unique_states bit(8);"
            # whether the job's state is one of the bits of unique_states (bit 7: available
            # ... bit 0: scheduled, in the enum's alphabetical order)
            f"CREATE FUNCTION {s}.river_job_state_in_bitmask(bitmask bit(8),"
            f" state {s}.river_job_state) RETURNS boolean LANGUAGE sql IMMUTABLE AS"
            " $$ SELECT get_bit(bitmask, 7 - array_position(ARRAY['available', 'cancelled',"
            " 'completed', 'discarded', 'pending', 'retryable', 'running', 'scheduled'],"
            " state::text) + 1) = 1 $$;"
            f"CREATE UNIQUE INDEX river_job_unique_idx ON {s}.river_job (unique_key)"
            " WHERE unique_key IS NOT NULL AND unique_states IS NOT NULL"
            f" AND {s}.river_job_state_in_bitmask(unique_states, state);"
        )
    if version >= 7:
        out.append(
            f"CREATE TABLE {s}.river_notification (id bigserial PRIMARY KEY,"
            " created_at timestamptz NOT NULL DEFAULT now(), payload text NOT NULL,"
            " topic text NOT NULL);"
        )
    return "\n".join(out)


def install(conn: psycopg.Connection, schema: str = "public", version: int = LATEST) -> None:
    """River's schema as `river migrate-up --target-version <version>` leaves it (4 to 7; 3
    for a database too old for the preset), with its migrations recorded."""
    conn.execute(_ddl(schema, version))
    table = sql.Identifier(schema, "river_migration")
    for v in range(1, version + 1):
        if version >= 5:
            conn.execute(
                sql.SQL("INSERT INTO {} (line, version) VALUES ('main', %s)").format(table), (v,)
            )
        else:
            conn.execute(sql.SQL("INSERT INTO {} (version) VALUES (%s)").format(table), (v,))


def _t(schema: str) -> sql.Identifier:
    return sql.Identifier(schema, "river_job")


def insert(
    conn: psycopg.Connection,
    queue: str,
    n: int,
    *,
    kind: str = "email",
    delay: float = 0,
    max_attempts: int = 25,
    schema: str = "public",
) -> list[int]:
    """n jobs as River's insert writes them: `available`, or `scheduled` when scheduled_at is in
    the future; the queue registered in river_queue as a producer does."""
    rows = conn.execute(
        sql.SQL(
            "INSERT INTO {} (args, kind, max_attempts, queue, scheduled_at, state)"
            " SELECT jsonb_build_object('n', i), %(kind)s, %(max)s, %(queue)s,"
            " now() + make_interval(secs => %(delay)s),"
            " CASE WHEN %(delay)s > 0 THEN 'scheduled' ELSE 'available' END::{}"
            " FROM generate_series(1, %(n)s) i RETURNING id"
        ).format(_t(schema), sql.Identifier(schema, "river_job_state")),
        {"kind": kind, "max": max_attempts, "queue": queue, "delay": delay, "n": n},
    ).fetchall()
    register_queue(conn, queue, schema)
    return [r[0] for r in rows]


def register_queue(conn: psycopg.Connection, queue: str, schema: str = "public") -> None:
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (name, updated_at) VALUES (%s, now())"
            " ON CONFLICT (name) DO UPDATE SET updated_at = now()"
        ).format(sql.Identifier(schema, "river_queue")),
        (queue,),
    )


def fetch(
    conn: psycopg.Connection, queue: str, n: int, *, worker: str = "w1", schema: str = "public"
) -> list[int]:
    """River's fetch: the n first available jobs by priority, scheduled_at, id, locked with
    SKIP LOCKED, made running with attempt + 1, attempted_at and attempted_by."""
    rows = conn.execute(
        sql.SQL(
            "UPDATE {t} SET state = 'running', attempt = attempt + 1, attempted_at = now(),"
            " attempted_by = array_append(attempted_by, %(worker)s)"
            " WHERE id IN (SELECT id FROM {t} WHERE state = 'available' AND queue = %(queue)s"
            " AND scheduled_at <= now() ORDER BY priority, scheduled_at, id LIMIT %(n)s"
            " FOR UPDATE SKIP LOCKED) RETURNING id"
        ).format(t=_t(schema)),
        {"worker": worker, "queue": queue, "n": n},
    ).fetchall()
    return sorted(r[0] for r in rows)


def complete(conn: psycopg.Connection, ids: list[int], schema: str = "public") -> None:
    conn.execute(
        sql.SQL(
            "UPDATE {} SET state = 'completed', finalized_at = now() WHERE id = ANY(%s)"
        ).format(_t(schema)),
        (ids,),
    )


def error(
    conn: psycopg.Connection, ids: list[int], *, retry_in: float = 60, schema: str = "public"
) -> None:
    """A failed attempt, as River's completer records it: the error appended; `discarded` with
    finalized_at when attempt has reached max_attempts, else `retryable` at the next retry."""
    conn.execute(
        sql.SQL(
            "UPDATE {} SET errors = array_append(errors, jsonb_build_object('at', now(),"
            " 'attempt', attempt, 'error', 'boom')),"
            " state = CASE WHEN attempt >= max_attempts THEN 'discarded' ELSE 'retryable' END"
            "::{},"
            " finalized_at = CASE WHEN attempt >= max_attempts THEN now() END,"
            " scheduled_at = CASE WHEN attempt >= max_attempts THEN scheduled_at"
            " ELSE now() + make_interval(secs => %s) END"
            " WHERE id = ANY(%s)"
        ).format(_t(schema), sql.Identifier(schema, "river_job_state")),
        (retry_in, ids),
    )


def cancel(conn: psycopg.Connection, ids: list[int], schema: str = "public") -> None:
    conn.execute(
        sql.SQL(
            "UPDATE {} SET state = 'cancelled', finalized_at = now() WHERE id = ANY(%s)"
        ).format(_t(schema)),
        (ids,),
    )


def schedule(conn: psycopg.Connection, schema: str = "public") -> int:
    """River's scheduler: scheduled and retryable jobs whose time has come become available."""
    cur = conn.execute(
        sql.SQL(
            "UPDATE {} SET state = 'available' WHERE state IN ('retryable', 'scheduled')"
            " AND scheduled_at <= now()"
        ).format(_t(schema))
    )
    return cur.rowcount


def backdate(
    conn: psycopg.Connection, ids: list[int], seconds: float, schema: str = "public"
) -> None:
    """Move every timestamp of the jobs `seconds` into the past (as if it all happened then)."""
    conn.execute(
        sql.SQL(
            "UPDATE {} SET created_at = created_at - make_interval(secs => %(s)s),"
            " scheduled_at = scheduled_at - make_interval(secs => %(s)s),"
            " attempted_at = attempted_at - make_interval(secs => %(s)s),"
            " finalized_at = finalized_at - make_interval(secs => %(s)s)"
            " WHERE id = ANY(%(ids)s)"
        ).format(_t(schema)),
        {"s": seconds, "ids": ids},
    )


def bulk(
    conn: psycopg.Connection, finished: int, active: int, queues: int = 3, schema: str = "public"
) -> None:
    """Many jobs at once, for the benchmark: `finished` finalized over the last day (98 %
    completed, 1 % discarded, 1 % cancelled) and `active` unfinished ones (half available,
    a fifth running, a fifth scheduled, a tenth retryable), spread over `queues` queues
    named q0, q1...; then ANALYZE, as autovacuum would."""
    t, e = _t(schema), sql.Identifier(schema, "river_job_state")
    conn.execute(
        sql.SQL(
            "INSERT INTO {t} (state, attempt, max_attempts, attempted_at, created_at,"
            " finalized_at, scheduled_at, args, kind, queue)"
            " SELECT (CASE WHEN i %% 100 = 0 THEN 'discarded' WHEN i %% 100 = 1 THEN 'cancelled'"
            " ELSE 'completed' END)::{e}, 1, 25, f - interval '1 second',"
            " f - interval '2 seconds', f, f - interval '2 seconds', '{{}}', 'bench',"
            " 'q' || (i %% %(queues)s) FROM generate_series(1, %(n)s) i,"
            " LATERAL (SELECT now() - make_interval(secs => (i %% 86400)) AS f) x"
        ).format(t=t, e=e),
        {"n": finished, "queues": queues},
    )
    conn.execute(
        sql.SQL(
            "INSERT INTO {t} (state, attempt, attempted_at, scheduled_at, args, kind, queue)"
            " SELECT s::{e}, CASE WHEN s IN ('running', 'retryable') THEN 1 ELSE 0 END,"
            " CASE WHEN s IN ('running', 'retryable') THEN now() END,"
            " CASE WHEN s IN ('scheduled', 'retryable') THEN now() + interval '1 hour'"
            " ELSE now() END, '{{}}', 'bench', 'q' || (i %% %(queues)s)"
            " FROM generate_series(1, %(n)s) i, LATERAL (SELECT CASE WHEN i %% 10 < 5"
            " THEN 'available' WHEN i %% 10 < 7 THEN 'running' WHEN i %% 10 < 9 THEN 'scheduled'"
            " ELSE 'retryable' END AS s) x"
        ).format(t=t, e=e),
        {"n": active, "queues": queues},
    )
    conn.execute(sql.SQL("VACUUM ANALYZE {}").format(t))
    for q in range(queues):
        register_queue(conn, f"q{q}", schema)
