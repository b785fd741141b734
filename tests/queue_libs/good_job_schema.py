"""GoodJob's tables, made from its documented install migration (good_job v4.19.2,
`create_good_jobs.rb`, which folds in the update migrations 01 to 14). GoodJob is a Ruby gem,
not installable here; nothing of its code is copied. What is created follows the documented
shapes, in the types Rails gives them on PostgreSQL (datetime: timestamp(6) without time zone
holding UTC):

- `good_jobs` (id uuid, queue_name, priority, serialized_params jsonb, scheduled_at,
  performed_at, finished_at, error, created_at, updated_at, active_job_id, concurrency_key,
  cron_key, retried_good_job_id, cron_at, batch_id, batch_callback_id, is_discrete,
  executions_count, job_class, error_event smallint, labels text[], locked_by_id uuid,
  locked_at, lock_type smallint) and the indexes the preset relies on: (queue_name,
  scheduled_at) and (priority, created_at) ... WHERE finished_at IS NULL (unfinished jobs),
  index_good_jobs_jobs_on_finished_at_only (finished_at) WHERE finished_at IS NOT NULL,
  index_good_jobs_on_discarded (finished_at DESC) WHERE finished_at IS NOT NULL AND error IS
  NOT NULL, index_good_jobs_on_queue_name (queue_name), index_good_jobs_on_locked_by_id;
- `good_job_processes` (id uuid, created_at, updated_at -- refreshed by each process as its
  heartbeat --, state jsonb, lock_type), `good_job_executions`, `good_job_settings`,
  `good_job_batches`.

error_event values: interrupted 0, unhandled 1, handled 2, retried 3, retry_stopped 4,
discarded 5. The functions below move jobs the way GoodJob 4 does: enqueue, perform start
(performed_at, executions_count + 1, locked_by_id/locked_at of the process, an execution row),
success (finished_at, error NULL, lock cleared), an error retried by Active Job (performed_at
and finished_at NULL again, error and error_event retried kept, scheduled_at at the retry),
an error that ends the job (finished_at with error: discarded).
"""

from __future__ import annotations

import psycopg
from psycopg import sql

UTC_NOW = "(now() AT TIME ZONE 'UTC')"
TS = "timestamp(6) without time zone"
RETRIED, RETRY_STOPPED, UNHANDLED = 3, 4, 1


def _ddl(s: str) -> str:
    return f"""
    CREATE SCHEMA IF NOT EXISTS {s};
    CREATE TABLE {s}.good_jobs (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        queue_name text, priority integer, serialized_params jsonb,
        scheduled_at {TS}, performed_at {TS}, finished_at {TS}, error text,
        created_at {TS} NOT NULL, updated_at {TS} NOT NULL,
        active_job_id uuid, concurrency_key text, cron_key text, retried_good_job_id uuid,
        cron_at {TS}, batch_id uuid, batch_callback_id uuid, is_discrete boolean,
        executions_count integer, job_class text, error_event smallint, labels text[],
        locked_by_id uuid, locked_at {TS}, lock_type smallint
    );
    CREATE TABLE {s}.good_job_batches (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        created_at {TS} NOT NULL, updated_at {TS} NOT NULL, description text,
        serialized_properties jsonb, on_finish text, on_success text, on_discard text,
        callback_queue_name text, callback_priority integer, enqueued_at {TS},
        discarded_at {TS}, finished_at {TS}, jobs_finished_at {TS});
    CREATE TABLE {s}.good_job_executions (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        created_at {TS} NOT NULL, updated_at {TS} NOT NULL, active_job_id uuid NOT NULL,
        job_class text, queue_name text, serialized_params jsonb, scheduled_at {TS},
        finished_at {TS}, error text, error_event smallint, error_backtrace text[],
        process_id uuid, duration interval);
    CREATE TABLE {s}.good_job_processes (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        created_at {TS} NOT NULL, updated_at {TS} NOT NULL, state jsonb, lock_type smallint);
    CREATE TABLE {s}.good_job_settings (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        created_at {TS} NOT NULL, updated_at {TS} NOT NULL, key text, value jsonb);
    CREATE UNIQUE INDEX index_good_job_settings_on_key ON {s}.good_job_settings (key);

    CREATE INDEX index_good_jobs_on_scheduled_at ON {s}.good_jobs (scheduled_at)
        WHERE finished_at IS NULL;
    CREATE INDEX index_good_jobs_on_queue_name_and_scheduled_at
        ON {s}.good_jobs (queue_name, scheduled_at) WHERE finished_at IS NULL;
    CREATE INDEX index_good_jobs_on_active_job_id_and_created_at
        ON {s}.good_jobs (active_job_id, created_at);
    CREATE INDEX index_good_jobs_on_concurrency_key_when_unfinished
        ON {s}.good_jobs (concurrency_key) WHERE finished_at IS NULL;
    CREATE INDEX index_good_jobs_on_concurrency_key_and_created_at
        ON {s}.good_jobs (concurrency_key, created_at);
    CREATE INDEX index_good_jobs_on_cron_key_and_created_at_cond
        ON {s}.good_jobs (cron_key, created_at) WHERE cron_key IS NOT NULL;
    CREATE UNIQUE INDEX index_good_jobs_on_cron_key_and_cron_at_cond
        ON {s}.good_jobs (cron_key, cron_at) WHERE cron_key IS NOT NULL;
    CREATE INDEX index_good_jobs_jobs_on_finished_at_only ON {s}.good_jobs (finished_at)
        WHERE finished_at IS NOT NULL;
    CREATE INDEX index_good_jobs_jobs_on_priority_created_at_when_unfinished
        ON {s}.good_jobs (priority DESC NULLS LAST, created_at) WHERE finished_at IS NULL;
    CREATE INDEX index_good_job_jobs_for_candidate_lookup
        ON {s}.good_jobs (priority ASC NULLS LAST, created_at) WHERE finished_at IS NULL;
    CREATE INDEX index_good_jobs_on_batch_id ON {s}.good_jobs (batch_id)
        WHERE batch_id IS NOT NULL;
    CREATE INDEX index_good_jobs_on_job_class ON {s}.good_jobs (job_class);
    CREATE INDEX index_good_jobs_on_labels ON {s}.good_jobs USING gin (labels)
        WHERE labels IS NOT NULL;
    CREATE INDEX index_good_job_executions_on_active_job_id_and_created_at
        ON {s}.good_job_executions (active_job_id, created_at);
    CREATE INDEX index_good_jobs_on_priority_scheduled_at_unfinished_unlocked
        ON {s}.good_jobs (priority ASC NULLS LAST, scheduled_at)
        WHERE finished_at IS NULL AND locked_by_id IS NULL;
    CREATE INDEX index_good_jobs_on_locked_by_id ON {s}.good_jobs (locked_by_id)
        WHERE locked_by_id IS NOT NULL;
    CREATE INDEX index_good_job_executions_on_process_id_and_created_at
        ON {s}.good_job_executions (process_id, created_at);
    CREATE INDEX index_good_jobs_on_queue_name ON {s}.good_jobs (queue_name);
    CREATE INDEX index_good_jobs_on_created_at ON {s}.good_jobs (created_at);
    CREATE INDEX index_good_jobs_on_discarded ON {s}.good_jobs (finished_at DESC)
        WHERE finished_at IS NOT NULL AND error IS NOT NULL;
    CREATE INDEX index_good_jobs_on_scheduled_at_and_queue_name
        ON {s}.good_jobs (scheduled_at, queue_name);
    CREATE INDEX index_good_jobs_on_unfinished_or_errored ON {s}.good_jobs (id)
        WHERE finished_at IS NULL OR error IS NOT NULL;
    """


def install(conn: psycopg.Connection, schema: str = "public") -> None:
    """GoodJob's tables as `rails g good_job:install && rails db:migrate` leaves them."""
    conn.execute(_ddl(sql.Identifier(schema).as_string(None)))


def _t(schema: str, table: str = "good_jobs") -> sql.Identifier:
    return sql.Identifier(schema, table)


def enqueue(
    conn: psycopg.Connection, queue: str, n: int, *, delay: float = 0, schema: str = "public"
) -> list[str]:
    """n jobs as GoodJob's adapter writes them (id = the Active Job id, scheduled_at now or
    later); their ids."""
    rows = conn.execute(
        sql.SQL(
            "INSERT INTO {} (id, active_job_id, queue_name, priority, serialized_params,"
            " scheduled_at, job_class, executions_count, created_at, updated_at)"
            " SELECT u, u, %(queue)s, 0, jsonb_build_object('job_class', 'MailerJob',"
            " 'executions', 0, 'arguments', jsonb_build_array(i)),"
            f" {UTC_NOW} + make_interval(secs => %(delay)s), 'MailerJob', 0, {UTC_NOW},"
            f" {UTC_NOW} FROM (SELECT gen_random_uuid() u, i FROM generate_series(1, %(n)s) i) g"
            " RETURNING id::text"
        ).format(_t(schema)),
        {"queue": queue, "delay": delay, "n": n},
    ).fetchall()
    return [r[0] for r in rows]


def register_process(conn: psycopg.Connection, schema: str = "public") -> str:
    row = conn.execute(
        sql.SQL(
            "INSERT INTO {} (created_at, updated_at, state)"
            f" VALUES ({UTC_NOW}, {UTC_NOW}, %s) RETURNING id::text"
        ).format(_t(schema, "good_job_processes")),
        ('{"hostname": "web-1", "pid": 4242}',),
    ).fetchone()
    assert row is not None
    return row[0]


def heartbeat(
    conn: psycopg.Connection, process_id: str, *, ago: float = 0, schema: str = "public"
) -> None:
    """The process's refresh (updated_at), `ago` seconds in the past."""
    conn.execute(
        sql.SQL(
            f"UPDATE {{}} SET updated_at = {UTC_NOW} - make_interval(secs => %s) WHERE id = %s"
        ).format(_t(schema, "good_job_processes")),
        (ago, process_id),
    )


def perform(
    conn: psycopg.Connection, queue: str, n: int, process_id: str, schema: str = "public"
) -> list[str]:
    """A process picks n due unfinished unlocked jobs of the queue and starts them."""
    rows = conn.execute(
        sql.SQL(
            "UPDATE {t} SET performed_at = " + UTC_NOW + ","
            " executions_count = COALESCE(executions_count, 0) + 1,"
            " locked_by_id = %(p)s, locked_at = " + UTC_NOW + ", lock_type = 0,"
            " updated_at = " + UTC_NOW + ""
            " WHERE id IN (SELECT id FROM {t} WHERE finished_at IS NULL AND locked_by_id IS NULL"
            " AND queue_name = %(queue)s AND scheduled_at <= " + UTC_NOW + ""
            " ORDER BY priority ASC NULLS LAST, scheduled_at LIMIT %(n)s FOR UPDATE SKIP LOCKED)"
            " RETURNING id::text"
        ).format(t=_t(schema)),
        {"p": process_id, "queue": queue, "n": n},
    ).fetchall()
    ids = sorted(r[0] for r in rows)
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (created_at, updated_at, active_job_id, job_class, queue_name,"
            " serialized_params, scheduled_at, process_id)"
            " SELECT performed_at, performed_at, id, job_class, queue_name, serialized_params,"
            " scheduled_at, locked_by_id FROM {} WHERE id = ANY(%s::uuid[])"
        ).format(_t(schema, "good_job_executions"), _t(schema)),
        (ids,),
    )
    return ids


def succeed(conn: psycopg.Connection, ids: list[str], schema: str = "public") -> None:
    conn.execute(
        sql.SQL(
            f"UPDATE {{}} SET finished_at = {UTC_NOW}, error = NULL, error_event = NULL,"
            f" locked_by_id = NULL, locked_at = NULL, lock_type = NULL, updated_at = {UTC_NOW}"
            " WHERE id = ANY(%s::uuid[])"
        ).format(_t(schema)),
        (ids,),
    )


def retry(
    conn: psycopg.Connection, ids: list[str], *, wait: float = 60, schema: str = "public"
) -> None:
    """An error Active Job's retry_on retries: the job runs again at scheduled_at, its error
    and error_event (retried) kept until then."""
    conn.execute(
        sql.SQL(
            "UPDATE {} SET error = 'RuntimeError: boom', error_event = %s,"
            " performed_at = NULL, finished_at = NULL, locked_by_id = NULL, locked_at = NULL,"
            f" lock_type = NULL, scheduled_at = {UTC_NOW} + make_interval(secs => %s),"
            f" updated_at = {UTC_NOW} WHERE id = ANY(%s::uuid[])"
        ).format(_t(schema)),
        (RETRIED, wait, ids),
    )


def discard(
    conn: psycopg.Connection, ids: list[str], *, event: int = RETRY_STOPPED, schema: str = "public"
) -> None:
    """An error that ends the job: finished with its error (retry_stopped once retry_on's
    attempts are spent, unhandled without retry_on)."""
    conn.execute(
        sql.SQL(
            f"UPDATE {{}} SET error = 'RuntimeError: boom', error_event = %s,"
            f" finished_at = {UTC_NOW}, locked_by_id = NULL, locked_at = NULL, lock_type = NULL,"
            f" updated_at = {UTC_NOW} WHERE id = ANY(%s::uuid[])"
        ).format(_t(schema)),
        (event, ids),
    )


def backdate(
    conn: psycopg.Connection, ids: list[str], seconds: float, schema: str = "public"
) -> None:
    """Move every timestamp of the jobs `seconds` into the past."""
    cols = ("created_at", "scheduled_at", "performed_at", "finished_at", "locked_at")
    sets = sql.SQL(", ").join(
        sql.SQL("{c} = {c} - make_interval(secs => %(s)s)").format(c=sql.Identifier(c))
        for c in cols
    )
    conn.execute(
        sql.SQL("UPDATE {} SET {} WHERE id = ANY(%(ids)s::uuid[])").format(_t(schema), sets),
        {"s": seconds, "ids": ids},
    )


def bulk(
    conn: psycopg.Connection, finished: int, active: int, queues: int = 3, schema: str = "public"
) -> None:
    """Many jobs at once, for the benchmark: `finished` over the last day (99 % succeeded,
    1 % discarded) and `active` unfinished ones (half queued, a fifth performing by a live
    process, a fifth scheduled, a tenth errored awaiting a retry), spread over `queues` queues
    q0, q1...; then ANALYZE, as autovacuum would."""
    t = _t(schema)
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (queue_name, priority, scheduled_at, performed_at, finished_at,"
            " error, error_event, created_at, updated_at, job_class, executions_count)"
            " SELECT 'q' || (i %% %(queues)s), 0, f, f, f,"
            " CASE WHEN i %% 100 = 0 THEN 'RuntimeError: boom' END,"
            " CASE WHEN i %% 100 = 0 THEN 4 END, f, f, 'BenchJob', 1"
            f" FROM generate_series(1, %(n)s) i, LATERAL (SELECT {UTC_NOW}"
            " - make_interval(secs => (i %% 86400)) AS f) x"
        ).format(t),
        {"n": finished, "queues": queues},
    )
    process = register_process(conn, schema=schema)
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (queue_name, priority, scheduled_at, performed_at, error,"
            " error_event, locked_by_id, created_at, updated_at, job_class, executions_count)"
            " SELECT 'q' || (i %% %(queues)s), 0,"
            f" CASE WHEN i %% 10 >= 7 THEN {UTC_NOW} + interval '1 hour' ELSE {UTC_NOW} END,"
            f" CASE WHEN i %% 10 IN (5, 6) THEN {UTC_NOW} END,"
            " CASE WHEN i %% 10 = 9 THEN 'RuntimeError: boom' END,"
            " CASE WHEN i %% 10 = 9 THEN 3 END,"
            " CASE WHEN i %% 10 IN (5, 6) THEN %(p)s::uuid END,"
            f" {UTC_NOW}, {UTC_NOW}, 'BenchJob', 0 FROM generate_series(1, %(n)s) i"
        ).format(t),
        {"n": active, "queues": queues, "p": process},
    )
    conn.execute(sql.SQL("VACUUM ANALYZE {}").format(t))
