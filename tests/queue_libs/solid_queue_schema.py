"""Solid Queue's tables, made from its documented schema (solid_queue v1.5.0,
`db/queue_schema.rb`, unchanged in shape since the migrations of 0.6). Solid Queue is a Ruby
gem, not installable here; nothing of its code is copied. What is created follows the
documented shapes, in the types Rails gives them on PostgreSQL (string: character varying,
datetime: timestamp(6) without time zone holding UTC, bigint ids):

- `solid_queue_jobs` (queue_name, class_name, arguments, priority, active_job_id,
  scheduled_at, finished_at, concurrency_key, created_at, updated_at) with indexes on
  finished_at, (queue_name, finished_at) "for filtering", (scheduled_at, finished_at) "for
  alerting", active_job_id and class_name;
- one table per state of a job, each row pointing at a job (job_id unique, ON DELETE
  CASCADE): `solid_queue_ready_executions` (queue_name, priority; indexes "poll all" (priority,
  job_id) and "poll by queue" (queue_name, priority, job_id)), `..._scheduled_executions`
  (queue_name, priority, scheduled_at; "dispatch all" (scheduled_at, priority, job_id)),
  `..._claimed_executions` (process_id; (process_id, job_id)), `..._blocked_executions`
  (queue_name, priority, concurrency_key, expires_at), `..._failed_executions` (error);
- `solid_queue_processes` (kind, last_heartbeat_at, supervisor_id, pid, hostname, metadata,
  created_at, name) -- each worker's heartbeat --, pauses, semaphores, recurring tasks.

The functions below move jobs the way Solid Queue does: enqueue (a job and its ready, scheduled
or blocked execution), the dispatcher (due scheduled -> ready), a worker claiming (ready ->
claimed, by its process), finishing (claimed gone, finished_at set: preserve_finished_jobs),
failing (claimed -> failed execution), the heartbeat.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

UTC_NOW = "(now() AT TIME ZONE 'UTC')"
TS = "timestamp(6) without time zone"


def _ddl(s: str) -> str:
    def execution(name: str, cols: str) -> str:
        return (
            f"CREATE TABLE {s}.solid_queue_{name}_executions (id bigserial PRIMARY KEY,"
            f" job_id bigint NOT NULL REFERENCES {s}.solid_queue_jobs (id) ON DELETE CASCADE,"
            f" {cols} created_at {TS} NOT NULL);"
            f" CREATE UNIQUE INDEX index_solid_queue_{name}_executions_on_job_id"
            f" ON {s}.solid_queue_{name}_executions (job_id);"
        )

    queue_cols = "queue_name varchar NOT NULL, priority integer NOT NULL DEFAULT 0,"
    blocked_cols = queue_cols + f" concurrency_key varchar NOT NULL, expires_at {TS} NOT NULL,"
    return f"""
    CREATE SCHEMA IF NOT EXISTS {s};
    CREATE TABLE {s}.solid_queue_jobs (
        id bigserial PRIMARY KEY,
        queue_name varchar NOT NULL,
        class_name varchar NOT NULL,
        arguments text,
        priority integer NOT NULL DEFAULT 0,
        active_job_id varchar,
        scheduled_at {TS},
        finished_at {TS},
        concurrency_key varchar,
        created_at {TS} NOT NULL,
        updated_at {TS} NOT NULL
    );
    CREATE INDEX index_solid_queue_jobs_on_active_job_id ON {s}.solid_queue_jobs (active_job_id);
    CREATE INDEX index_solid_queue_jobs_on_class_name ON {s}.solid_queue_jobs (class_name);
    CREATE INDEX index_solid_queue_jobs_on_finished_at ON {s}.solid_queue_jobs (finished_at);
    CREATE INDEX index_solid_queue_jobs_for_filtering
        ON {s}.solid_queue_jobs (queue_name, finished_at);
    CREATE INDEX index_solid_queue_jobs_for_alerting
        ON {s}.solid_queue_jobs (scheduled_at, finished_at);
    {execution("ready", queue_cols)}
    CREATE INDEX index_solid_queue_poll_all ON {s}.solid_queue_ready_executions (priority, job_id);
    CREATE INDEX index_solid_queue_poll_by_queue
        ON {s}.solid_queue_ready_executions (queue_name, priority, job_id);
    {execution("scheduled", queue_cols + f" scheduled_at {TS} NOT NULL,")}
    CREATE INDEX index_solid_queue_dispatch_all
        ON {s}.solid_queue_scheduled_executions (scheduled_at, priority, job_id);
    {execution("claimed", "process_id bigint,")}
    CREATE INDEX index_solid_queue_claimed_executions_on_process_id_and_job_id
        ON {s}.solid_queue_claimed_executions (process_id, job_id);
    {execution("blocked", blocked_cols)}
    CREATE INDEX index_solid_queue_blocked_executions_for_release
        ON {s}.solid_queue_blocked_executions (concurrency_key, priority, job_id);
    CREATE INDEX index_solid_queue_blocked_executions_for_maintenance
        ON {s}.solid_queue_blocked_executions (expires_at, concurrency_key);
    {execution("failed", "error text,")}
    CREATE TABLE {s}.solid_queue_processes (
        id bigserial PRIMARY KEY,
        kind varchar NOT NULL,
        last_heartbeat_at {TS} NOT NULL,
        supervisor_id bigint,
        pid integer NOT NULL,
        hostname varchar,
        metadata text,
        created_at {TS} NOT NULL,
        name varchar NOT NULL
    );
    CREATE INDEX index_solid_queue_processes_on_last_heartbeat_at
        ON {s}.solid_queue_processes (last_heartbeat_at);
    CREATE UNIQUE INDEX index_solid_queue_processes_on_name_and_supervisor_id
        ON {s}.solid_queue_processes (name, supervisor_id);
    CREATE INDEX index_solid_queue_processes_on_supervisor_id
        ON {s}.solid_queue_processes (supervisor_id);
    CREATE TABLE {s}.solid_queue_pauses (id bigserial PRIMARY KEY, queue_name varchar NOT NULL,
        created_at {TS} NOT NULL);
    CREATE UNIQUE INDEX index_solid_queue_pauses_on_queue_name
        ON {s}.solid_queue_pauses (queue_name);
    CREATE TABLE {s}.solid_queue_semaphores (id bigserial PRIMARY KEY, key varchar NOT NULL,
        value integer NOT NULL DEFAULT 1, expires_at {TS} NOT NULL, created_at {TS} NOT NULL,
        updated_at {TS} NOT NULL);
    CREATE UNIQUE INDEX index_solid_queue_semaphores_on_key ON {s}.solid_queue_semaphores (key);
    CREATE TABLE {s}.solid_queue_recurring_tasks (id bigserial PRIMARY KEY,
        key varchar NOT NULL, schedule varchar NOT NULL, command varchar(2048),
        class_name varchar, arguments text, queue_name varchar, priority integer DEFAULT 0,
        static boolean NOT NULL DEFAULT true, description text, created_at {TS} NOT NULL,
        updated_at {TS} NOT NULL);
    CREATE UNIQUE INDEX index_solid_queue_recurring_tasks_on_key
        ON {s}.solid_queue_recurring_tasks (key);
    CREATE TABLE {s}.solid_queue_recurring_executions (id bigserial PRIMARY KEY,
        job_id bigint NOT NULL REFERENCES {s}.solid_queue_jobs (id) ON DELETE CASCADE,
        task_key varchar NOT NULL, run_at {TS} NOT NULL, created_at {TS} NOT NULL);
    """


def install(conn: psycopg.Connection, schema: str = "public") -> None:
    """Solid Queue's tables as `bin/rails db:schema:load` of its queue_schema.rb leaves them."""
    conn.execute(_ddl(sql.Identifier(schema).as_string(None)))


def _t(schema: str, table: str) -> sql.Identifier:
    return sql.Identifier(schema, f"solid_queue_{table}")


def enqueue(
    conn: psycopg.Connection,
    queue: str,
    n: int,
    *,
    delay: float = 0,
    concurrency_key: str | None = None,
    schema: str = "public",
) -> list[int]:
    """n jobs as Active Job's enqueue through Solid Queue writes them: the job row, then a
    ready execution -- a scheduled one when scheduled_at is in the future, a blocked one when
    the job's concurrency key has no free semaphore (here: whenever a key is given)."""
    ids = [
        r[0]
        for r in conn.execute(
            sql.SQL(
                "INSERT INTO {} (queue_name, class_name, arguments, active_job_id,"
                " scheduled_at, concurrency_key, created_at, updated_at)"
                " SELECT %(queue)s, 'MailerJob', jsonb_build_object('n', i)::text,"
                f" gen_random_uuid()::text, {UTC_NOW} + make_interval(secs => %(delay)s),"
                f" %(key)s, {UTC_NOW}, {UTC_NOW} FROM generate_series(1, %(n)s) i RETURNING id"
            ).format(_t(schema, "jobs")),
            {"queue": queue, "delay": delay, "key": concurrency_key, "n": n},
        ).fetchall()
    ]
    if delay > 0:
        table, extra, value = "scheduled_executions", ", scheduled_at", ", j.scheduled_at"
    elif concurrency_key is not None:
        table = "blocked_executions"
        extra = ", concurrency_key, expires_at"
        value = f", j.concurrency_key, {UTC_NOW} + interval '3 minutes'"
    else:
        table, extra, value = "ready_executions", "", ""
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (job_id, queue_name, priority" + extra + ", created_at)"
            " SELECT j.id, j.queue_name, j.priority" + value + f", {UTC_NOW}"
            " FROM {} j WHERE j.id = ANY(%s) ORDER BY j.id"
        ).format(_t(schema, table), _t(schema, "jobs")),
        (ids,),
    )
    return ids


def register_process(
    conn: psycopg.Connection, name: str, *, kind: str = "Worker", schema: str = "public"
) -> int:
    row = conn.execute(
        sql.SQL(
            "INSERT INTO {} (kind, last_heartbeat_at, pid, hostname, created_at, name)"
            f" VALUES (%s, {UTC_NOW}, 4242, 'web-1', {UTC_NOW}, %s) RETURNING id"
        ).format(_t(schema, "processes")),
        (kind, name),
    ).fetchone()
    assert row is not None
    return row[0]


def heartbeat(
    conn: psycopg.Connection, process_id: int, *, ago: float = 0, schema: str = "public"
) -> None:
    """The process's heartbeat, `ago` seconds in the past (a worker that stopped beating)."""
    conn.execute(
        sql.SQL(
            f"UPDATE {{}} SET last_heartbeat_at = {UTC_NOW} - make_interval(secs => %s)"
            " WHERE id = %s"
        ).format(_t(schema, "processes")),
        (ago, process_id),
    )


def dispatch(conn: psycopg.Connection, schema: str = "public") -> int:
    """The dispatcher: due scheduled executions become ready ones."""
    cur = conn.execute(
        sql.SQL(
            "WITH due AS (DELETE FROM {} WHERE scheduled_at <= " + UTC_NOW + " RETURNING *)"
            f" INSERT INTO {{}} (job_id, queue_name, priority, created_at)"
            f" SELECT job_id, queue_name, priority, {UTC_NOW} FROM due"
        ).format(_t(schema, "scheduled_executions"), _t(schema, "ready_executions")),
    )
    return cur.rowcount


def claim(
    conn: psycopg.Connection, queue: str, n: int, process_id: int, schema: str = "public"
) -> list[int]:
    """A worker's poll: ready executions of the queue by priority, job_id (SKIP LOCKED) turned
    into claimed executions of its process."""
    rows = conn.execute(
        sql.SQL(
            "WITH picked AS (DELETE FROM {r} WHERE id IN (SELECT id FROM {r}"
            " WHERE queue_name = %(queue)s ORDER BY priority, job_id LIMIT %(n)s"
            " FOR UPDATE SKIP LOCKED) RETURNING job_id)"
            f" INSERT INTO {{c}} (job_id, process_id, created_at)"
            f" SELECT job_id, %(process)s, {UTC_NOW} FROM picked RETURNING job_id"
        ).format(r=_t(schema, "ready_executions"), c=_t(schema, "claimed_executions")),
        {"queue": queue, "n": n, "process": process_id},
    ).fetchall()
    return sorted(r[0] for r in rows)


def finish(conn: psycopg.Connection, ids: list[int], schema: str = "public") -> None:
    """Jobs performed: their claimed executions gone, finished_at set (preserve_finished_jobs)."""
    conn.execute(
        sql.SQL("DELETE FROM {} WHERE job_id = ANY(%s)").format(_t(schema, "claimed_executions")),
        (ids,),
    )
    conn.execute(
        sql.SQL(
            f"UPDATE {{}} SET finished_at = {UTC_NOW}, updated_at = {UTC_NOW} WHERE id = ANY(%s)"
        ).format(_t(schema, "jobs")),
        (ids,),
    )


def fail(conn: psycopg.Connection, ids: list[int], schema: str = "public") -> None:
    """Jobs that raised: their claimed executions replaced by failed ones (kept until retried
    or discarded by hand; Active Job's own retries enqueue new jobs instead)."""
    conn.execute(
        sql.SQL(
            "WITH gone AS (DELETE FROM {} WHERE job_id = ANY(%s) RETURNING job_id)"
            f" INSERT INTO {{}} (job_id, error, created_at)"
            f" SELECT job_id, %s, {UTC_NOW} FROM gone"
        ).format(_t(schema, "claimed_executions"), _t(schema, "failed_executions")),
        (ids, '{"exception_class": "RuntimeError", "message": "boom"}'),
    )


def backdate(
    conn: psycopg.Connection, ids: list[int], seconds: float, schema: str = "public"
) -> None:
    """Move the jobs' timestamps and those of their executions `seconds` into the past."""
    shift = "make_interval(secs => %(s)s)"
    conn.execute(
        sql.SQL(
            f"UPDATE {{}} SET created_at = created_at - {shift},"
            f" scheduled_at = scheduled_at - {shift}, finished_at = finished_at - {shift}"
            " WHERE id = ANY(%(ids)s)"
        ).format(_t(schema, "jobs")),
        {"s": seconds, "ids": ids},
    )
    for table in ("ready", "claimed", "blocked", "failed", "scheduled"):
        conn.execute(
            sql.SQL(
                f"UPDATE {{}} SET created_at = created_at - {shift} WHERE job_id = ANY(%(ids)s)"
            ).format(_t(schema, f"{table}_executions")),
            {"s": seconds, "ids": ids},
        )


def bulk(
    conn: psycopg.Connection, finished: int, active: int, queues: int = 3, schema: str = "public"
) -> None:
    """Many jobs at once, for the benchmark: `finished` jobs finished over the last day
    (preserve_finished_jobs) and `active` unfinished ones (half ready, a fifth claimed by a
    live worker, a fifth scheduled, a tenth failed), spread over `queues` queues q0, q1...;
    then ANALYZE, as autovacuum would."""
    jobs = _t(schema, "jobs")
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (queue_name, class_name, scheduled_at, finished_at, created_at,"
            " updated_at) SELECT 'q' || (i %% %(queues)s), 'BenchJob', f, f, f, f"
            f" FROM generate_series(1, %(n)s) i, LATERAL (SELECT {UTC_NOW}"
            " - make_interval(secs => (i %% 86400)) AS f) x"
        ).format(jobs),
        {"n": finished, "queues": queues},
    )
    process = register_process(conn, "bench-worker", schema=schema)
    ids = [
        r[0]
        for r in conn.execute(
            sql.SQL(
                "INSERT INTO {} (queue_name, class_name, scheduled_at, created_at, updated_at)"
                f" SELECT 'q' || (i %% %(queues)s), 'BenchJob', {UTC_NOW}, {UTC_NOW}, {UTC_NOW}"
                " FROM generate_series(1, %(n)s) i RETURNING id"
            ).format(jobs),
            {"n": active, "queues": queues},
        )
    ]
    split = {
        "ready": ids[: active // 2],
        "claimed": ids[active // 2 : active * 7 // 10],
        "scheduled": ids[active * 7 // 10 : active * 9 // 10],
        "failed": ids[active * 9 // 10 :],
    }
    cols = {
        "ready": ("queue_name, priority", "j.queue_name, 0"),
        "scheduled": (
            "queue_name, priority, scheduled_at",
            f"j.queue_name, 0, {UTC_NOW} + interval '1 hour'",
        ),
        "claimed": ("process_id", str(int(process))),
        "failed": ("error", "'boom'"),
    }
    for name, part in split.items():
        names, values = cols[name]
        conn.execute(
            sql.SQL(
                f"INSERT INTO {{}} (job_id, {names}, created_at)"
                f" SELECT j.id, {values}, {UTC_NOW} FROM {{}} j WHERE j.id = ANY(%s)"
            ).format(_t(schema, f"{name}_executions"), jobs),
            (part,),
        )
    for table in TABLES_FOR_ANALYZE:
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(_t(schema, table)))


TABLES_FOR_ANALYZE = (
    "jobs",
    "ready_executions",
    "scheduled_executions",
    "claimed_executions",
    "failed_executions",
    "processes",
)
