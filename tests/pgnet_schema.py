"""pg_net's two tables, for tests: pg_net cannot be installed here (it is a C extension with a
background worker, not packaged for Debian 12), so the tests create the tables the exporter
reads and write the rows pg_net's worker would write.

The DDL is ours, written from the schema pg_net 0.20.4 documents and creates (supabase/pg_net,
sql/pg_net.sql: both tables UNLOGGED and without keys since 0.5, an index on
`_http_response (created)`, `http_request_queue.headers` nullable since 0.19.3, a `net.http_method`
domain). The response shapes follow what its worker inserts (src/core.c, insert_response): a
completed request has a status code, headers and `timed_out` false; a timed-out one has no
status, `timed_out` true and a "Timeout of N ms reached" message; any other failure has no
status, `timed_out` false and curl's error text. No HTTP request is made: nothing here needs a
real server, since the exporter only reads what pg_net wrote.
"""

from __future__ import annotations

import psycopg

PGNET_VERSION = "0.20.4"

SCHEMA = """
CREATE SCHEMA net;
CREATE DOMAIN net.http_method AS text
  CHECK (value ILIKE 'get' OR value ILIKE 'post' OR value ILIKE 'delete');
CREATE UNLOGGED TABLE net.http_request_queue (
  id                   bigserial,
  method               net.http_method NOT NULL,
  url                  text NOT NULL,
  headers              jsonb,
  body                 bytea,
  timeout_milliseconds integer NOT NULL
);
CREATE UNLOGGED TABLE net._http_response (
  id           bigint,
  status_code  integer,
  content_type text,
  headers      jsonb,
  content      text,
  timed_out    boolean,
  error_msg    text,
  created      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON net._http_response (created);
"""

# what a caller's secrets look like in pg_net's rows: none may reach a scrape or a log line
SECRET_URL = "https://abcdefghijklmnop.supabase.co/functions/v1/send-invoice?token=url-secret-7"
SECRET_KEY = "Bearer eyJhbGciOiJIUzI1NiJ9.service-role-secret-7"
SECRET_BODY = '{"customer_email": "body-secret-7@example.com"}'


def create(conn: psycopg.Connection) -> None:
    conn.execute(SCHEMA)


def queue_request(conn: psycopg.Connection, n: int = 1) -> None:
    """`n` requests as net.http_post queues them, waiting for the worker."""
    for _ in range(n):
        conn.execute(
            "INSERT INTO net.http_request_queue (method, url, headers, body, timeout_milliseconds)"
            " VALUES ('POST', %s, jsonb_build_object('Authorization', %s::text,"
            " 'Content-Type', 'application/json'), convert_to(%s, 'UTF8'), 1000)",
            (SECRET_URL, SECRET_KEY, SECRET_BODY),
        )


def respond(conn: psycopg.Connection, status: int, n: int = 1, ago: str = "5 seconds") -> None:
    """`n` completed requests answered with `status`, written `ago`."""
    body = '{"msg":"Invalid JWT"}' if status == 401 else '{"ok":true}'
    conn.execute(
        "INSERT INTO net._http_response"
        " (id, status_code, content_type, headers, content, timed_out, error_msg, created)"
        " SELECT nextval('net.http_request_queue_id_seq'), %s, 'application/json',"
        " jsonb_build_object('content-type', 'application/json', 'set-cookie', %s::text), %s,"
        " false, NULL, now() - %s::interval FROM generate_series(1, %s)",
        (status, SECRET_KEY, body, ago, n),
    )


def time_out(conn: psycopg.Connection, n: int = 1, ago: str = "5 seconds") -> None:
    """`n` requests that hit their timeout (no status, timed_out true)."""
    conn.execute(
        "INSERT INTO net._http_response (id, status_code, timed_out, error_msg, created)"
        " SELECT nextval('net.http_request_queue_id_seq'), NULL, true,"
        " 'Timeout of 1000 ms reached. Total time: 1001.2 ms (DNS time: 0.1 ms,"
        " TCP/SSL handshake time: 0.9 ms, HTTP Request/Response time: 1000.2 ms)',"
        " now() - %s::interval FROM generate_series(1, %s)",
        (ago, n),
    )


def fail(conn: psycopg.Connection, n: int = 1, ago: str = "5 seconds") -> None:
    """`n` requests that failed below HTTP (here: the host name did not resolve)."""
    conn.execute(
        "INSERT INTO net._http_response (id, status_code, timed_out, error_msg, created)"
        " SELECT nextval('net.http_request_queue_id_seq'), NULL, false,"
        " 'Couldn''t resolve host name', now() - %s::interval FROM generate_series(1, %s)",
        (ago, n),
    )


def seed_incident(dsn: str) -> None:
    """pg_net in trouble: a webhook answering 401 since its key was rotated, a few timeouts,
    a backlog of requests, beside healthy calls."""
    with psycopg.connect(dsn, autocommit=True) as c:
        create(c)
        respond(c, 200, 30)
        respond(c, 401, 12)
        time_out(c, 2)
        queue_request(c, 3)
