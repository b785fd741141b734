"""The pgmq objects the exporter reads, made from pgmq's documented schema (pgmq 1.13.1):
pgmq is not installable here (it needs its extension files), and nothing of its code is
copied. What is created follows the documented shapes only:

- `pgmq.meta (queue_name varchar unique, is_partitioned bool, is_unlogged bool, created_at)`;
- per queue `pgmq.q_<name>` (msg_id bigint identity, read_ct int, enqueued_at timestamptz,
  last_read_at timestamptz -- pgmq >= 1.10 --, vt timestamptz, message jsonb, headers jsonb)
  with an index on vt, and the archive `pgmq.a_<name>` (the same + archived_at) with an index on
  archived_at; table names are the queue name lowercased;
- the functions an app calls, written here from their documented behaviour: send (a message,
  visible after an optional delay), read (up to qty visible messages, oldest first, made
  invisible for vt seconds, read_ct + 1, last_read_at set), archive (moved to the archive),
  delete (gone), and metrics (queue length, visible length, newest/oldest age, total sent from
  the id sequence -- computed with a full count, as documented).
"""

from __future__ import annotations

import psycopg
from psycopg import sql

SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS pgmq;
CREATE TABLE IF NOT EXISTS pgmq.meta (
    queue_name     varchar UNIQUE NOT NULL,
    is_partitioned boolean NOT NULL,
    is_unlogged    boolean NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE TYPE pgmq.metrics_result AS (
    queue_name text, queue_length bigint, newest_msg_age_sec int, oldest_msg_age_sec int,
    total_messages bigint, scrape_time timestamptz, queue_visible_length bigint
);

CREATE FUNCTION pgmq.send(queue_name text, msg jsonb, delay integer DEFAULT 0)
RETURNS SETOF bigint LANGUAGE plpgsql AS $body$
BEGIN
    RETURN QUERY EXECUTE format(
        'INSERT INTO pgmq.%I (vt, message) VALUES (clock_timestamp() + $1, $2) RETURNING msg_id',
        lower('q_' || queue_name))
    USING make_interval(secs => delay), msg;
END $body$;

CREATE FUNCTION pgmq.read(queue_name text, vt integer, qty integer)
RETURNS TABLE (msg_id bigint, read_ct integer, vt_after timestamptz)
LANGUAGE plpgsql AS $body$
DECLARE
    tbl text := lower('q_' || queue_name);
    -- queues made before pgmq 1.10 have no last_read_at
    stamp text := CASE WHEN EXISTS (
        SELECT FROM pg_attribute WHERE attrelid = format('pgmq.%I', tbl)::regclass
        AND attname = 'last_read_at') THEN ', last_read_at = clock_timestamp()' ELSE '' END;
BEGIN
    RETURN QUERY EXECUTE format(
        'UPDATE pgmq.%1$I AS m SET read_ct = m.read_ct + 1, vt = clock_timestamp() + $1 %2$s'
        ' WHERE m.msg_id IN (SELECT c.msg_id FROM pgmq.%1$I c WHERE c.vt <= clock_timestamp()'
        ' ORDER BY c.msg_id LIMIT $2 FOR UPDATE SKIP LOCKED)'
        ' RETURNING m.msg_id, m.read_ct, m.vt', tbl, stamp)
    USING make_interval(secs => vt), qty;
END $body$;

CREATE FUNCTION pgmq.archive(queue_name text, msg_id bigint)
RETURNS boolean LANGUAGE plpgsql AS $body$
DECLARE moved bigint;
BEGIN
    EXECUTE format(
        'WITH gone AS (DELETE FROM pgmq.%I WHERE msg_id = $1 RETURNING *)'
        ' INSERT INTO pgmq.%I (msg_id, read_ct, enqueued_at, vt, message, headers)'
        ' SELECT msg_id, read_ct, enqueued_at, vt, message, headers FROM gone RETURNING msg_id',
        lower('q_' || queue_name), lower('a_' || queue_name))
    INTO moved USING msg_id;
    RETURN moved IS NOT NULL;
END $body$;

CREATE FUNCTION pgmq.delete(queue_name text, msg_id bigint)
RETURNS boolean LANGUAGE plpgsql AS $body$
DECLARE gone bigint;
BEGIN
    EXECUTE format('DELETE FROM pgmq.%I WHERE msg_id = $1 RETURNING msg_id',
                   lower('q_' || queue_name))
    INTO gone USING msg_id;
    RETURN gone IS NOT NULL;
END $body$;

CREATE FUNCTION pgmq.metrics(queue_name text)
RETURNS pgmq.metrics_result LANGUAGE plpgsql AS $body$
DECLARE
    tbl text := lower('q_' || queue_name);
    out pgmq.metrics_result;
BEGIN
    EXECUTE format(
        'SELECT $1, count(*), EXTRACT(EPOCH FROM now() - max(enqueued_at))::int,'
        ' EXTRACT(EPOCH FROM now() - min(enqueued_at))::int,'
        ' (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM pgmq.%I),'
        ' now(), count(*) FILTER (WHERE vt <= now()) FROM pgmq.%I',
        tbl || '_msg_id_seq', tbl)
    INTO out USING queue_name;
    RETURN out;
END $body$;
"""


def install(conn: psycopg.Connection) -> None:
    """The pgmq schema, meta table and functions (no queue yet)."""
    conn.execute(SCHEMA_SQL)


def create_queue(
    conn: psycopg.Connection,
    name: str,
    *,
    partitioned: bool = False,
    unlogged: bool = False,
    last_read_at: bool = True,
) -> None:
    """A queue as pgmq.create / create_unlogged / create_partitioned leave it. A partitioned
    queue here is range-partitioned on msg_id with two fixed partitions (pg_partman, which
    pgmq uses to keep them coming, is not installed)."""
    q, a = f"q_{name}".lower(), f"a_{name}".lower()
    read_col = "last_read_at timestamptz," if last_read_at else ""
    cols = (
        "read_ct int NOT NULL DEFAULT 0, enqueued_at timestamptz NOT NULL DEFAULT now(), "
        f"{read_col} vt timestamptz NOT NULL, message jsonb, headers jsonb"
    )
    kind = "UNLOGGED TABLE" if unlogged else "TABLE"
    if partitioned:
        conn.execute(
            sql.SQL(
                "CREATE TABLE pgmq.{q} (msg_id bigint GENERATED ALWAYS AS IDENTITY, "
                + cols
                + ") PARTITION BY RANGE (msg_id);"
                "CREATE TABLE pgmq.{q1} PARTITION OF pgmq.{q} FOR VALUES FROM (1) TO (100000);"
                "CREATE TABLE pgmq.{q2} PARTITION OF pgmq.{q}"
                " FOR VALUES FROM (100000) TO (MAXVALUE);"
                "CREATE INDEX ON pgmq.{q} (msg_id);"
                "CREATE TABLE pgmq.{a} (msg_id bigint NOT NULL, "
                + cols
                + ", archived_at timestamptz NOT NULL DEFAULT now()) PARTITION BY RANGE (msg_id);"
                "CREATE TABLE pgmq.{a1} PARTITION OF pgmq.{a} FOR VALUES FROM (1) TO (MAXVALUE);"
            ).format(
                q=sql.Identifier(q),
                q1=sql.Identifier(f"{q}_p1"),
                q2=sql.Identifier(f"{q}_p2"),
                a=sql.Identifier(a),
                a1=sql.Identifier(f"{a}_p1"),
            )
        )
    else:
        conn.execute(
            sql.SQL(
                "CREATE " + kind + " pgmq.{q} (msg_id bigint PRIMARY KEY GENERATED ALWAYS AS "
                "IDENTITY, " + cols + ");"
                "CREATE INDEX {vt_idx} ON pgmq.{q} (vt ASC);"
                "CREATE TABLE pgmq.{a} (msg_id bigint PRIMARY KEY, "
                + cols
                + ", archived_at timestamptz NOT NULL DEFAULT now());"
            ).format(q=sql.Identifier(q), a=sql.Identifier(a), vt_idx=sql.Identifier(f"{q}_vt_idx"))
        )
    conn.execute(
        sql.SQL("CREATE INDEX {} ON pgmq.{} (archived_at)").format(
            sql.Identifier(f"archived_at_idx_{name}"), sql.Identifier(a)
        )
    )
    conn.execute(
        "INSERT INTO pgmq.meta (queue_name, is_partitioned, is_unlogged) VALUES (%s, %s, %s)",
        (name, partitioned, unlogged),
    )


def send(conn: psycopg.Connection, queue: str, n: int, delay: int = 0) -> list[int]:
    """n messages through pgmq.send; their ids."""
    ids = []
    for i in range(n):
        row = conn.execute(
            "SELECT * FROM pgmq.send(%s, %s::jsonb, %s)", (queue, f'{{"n": {i}}}', delay)
        ).fetchone()
        assert row is not None
        ids.append(row[0])
    return ids


def read(conn: psycopg.Connection, queue: str, vt: int, qty: int) -> list[int]:
    """pgmq.read: the ids of the messages read."""
    return [r[0] for r in conn.execute("SELECT * FROM pgmq.read(%s, %s, %s)", (queue, vt, qty))]
