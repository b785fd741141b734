"""Seeded incidents for the dashboard and end-to-end tests: a runbook-000 job queue, sessions
that sit idle in a transaction, wait on a lock or run long, table bloat, slow statements,
rollbacks, and a small HTTPS endpoint (trustme certificate) for the TLS panels.

Everything is real: rows in PostgreSQL, sessions on the server, HTTP servers on 127.0.0.1.
Every thread and wait here is bounded.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import psycopg
import trustme

from exporter.demo.run import BACKLOG as BACKLOG  # re-exported for the end-to-end tests
from exporter.demo.run import SCHEMA, STUCK
from exporter.demo.sampleapp import SampleApp
from tests import pgnet_schema
from tests.test_probe_support import ThreadedServer

# the demo's table and indexes (runbook 000), with a history of its own
QUEUE_SCHEMA = (
    SCHEMA
    + """
-- a healthy history: old completed jobs and a steady trickle of recent ones
INSERT INTO processing_jobs (status, created_at, updated_at)
    SELECT 'completed', now() - make_interval(mins => g), now() - make_interval(mins => g)
    FROM generate_series(10, 400) g;
INSERT INTO processing_jobs (status, created_at, updated_at)
    SELECT 'completed', now() - make_interval(secs => g * 20), now() - make_interval(secs => g * 10)
    FROM generate_series(1, 12) g;
ANALYZE processing_jobs;
"""
)

# BACKLOG and STUCK (a count of jobs as their parameter) are the demo's `--incident`s
OLD_BACKLOG = (
    "INSERT INTO processing_jobs (status, created_at, updated_at) SELECT 'pending', "
    "now() - interval '20 minutes', now() - interval '20 minutes' FROM generate_series(1, %s)"
)
EXHAUSTED = (
    "INSERT INTO processing_jobs (status, retry_count, error_message, created_at, updated_at) "
    "SELECT 'failed', 3, 'OCR provider timed out', now() - interval '2 minutes', now() "
    "FROM generate_series(1, %s)"
)
DEAD_LETTERS = (
    "INSERT INTO processing_jobs_dlq (job_id, error) "
    "SELECT g, 'invalid PDF' FROM generate_series(1, %s) g"
)


def create_queue(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(QUEUE_SCHEMA)


def execute(dsn: str, *statements: tuple[str, tuple[Any, ...]] | str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        for st in statements:
            if isinstance(st, str):
                c.execute(st)
            else:
                c.execute(st[0], st[1])


def seed_queue_incident(dsn: str) -> None:
    """Backlog (old pending jobs), stuck jobs, failed jobs out of retries, dead letters."""
    execute(
        dsn,
        (OLD_BACKLOG, (60,)),
        (STUCK, (3,)),
        (EXHAUSTED, (3,)),
        (DEAD_LETTERS, (2,)),
        "ANALYZE processing_jobs",
    )


def seed_database_history(dsn: str) -> None:
    """Bloat, slow statements, rollbacks and a vacuum, for the vacuum and statement panels."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(
            "CREATE TABLE churn (id integer PRIMARY KEY, v text) WITH (autovacuum_enabled = off)"
        )
        c.execute("INSERT INTO churn SELECT g, 'x' FROM generate_series(1, 20000) g")
        c.execute("DELETE FROM churn WHERE id % 2 = 0")
        c.execute("VACUUM processing_jobs")
        for _ in range(3):
            c.execute("SELECT pg_sleep(0.12)")
        for _ in range(5):
            with suppress(psycopg.errors.DivisionByZero):
                c.execute("SELECT 1 / 0")  # each one a rolled-back transaction


class Sessions:
    """Sessions that make a database unhealthy: idle in transaction holding a row lock, one
    waiting for that lock, and a long-running query. stop() releases them all."""

    def __init__(self, dsn: str, seconds: float = 90) -> None:
        self.dsn, self.seconds = dsn, seconds
        self.holder: psycopg.Connection | None = None
        self._conns: list[psycopg.Connection] = []
        self._threads: list[threading.Thread] = []

    def start(
        self, idle_in_transaction: bool = True, lock_wait: bool = True, long_query: bool = True
    ) -> Sessions:
        if idle_in_transaction or lock_wait:
            self.holder = psycopg.connect(self.dsn, application_name="seed-idle-in-tx")
            row = self.holder.execute(
                "SELECT id FROM processing_jobs ORDER BY id LIMIT 1 FOR UPDATE"
            ).fetchone()
            assert row is not None
            if lock_wait:
                self._background(
                    "UPDATE processing_jobs SET updated_at = updated_at WHERE id = %s",
                    (row[0],),
                    "seed-lock-waiter",
                )
        if long_query:
            self._background("SELECT pg_sleep(%s)", (self.seconds,), "seed-long-query")
        return self

    def _background(self, query: str, params: tuple[Any, ...], name: str) -> None:
        conn = psycopg.connect(self.dsn, autocommit=True, application_name=name)
        conn.execute(f"SET statement_timeout = '{int(self.seconds + 10)}s'")
        self._conns.append(conn)

        def run() -> None:
            with suppress(psycopg.Error):
                conn.execute(query, params)

        t = threading.Thread(target=run, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        if self.holder is not None:
            self.holder.rollback()
            self.holder.close()
        for c in self._conns:
            c.cancel_safe(timeout=5)
        for t in self._threads:
            t.join(10)
        for c in self._conns:
            c.close()


class HTTPSHealth:
    """An HTTPS health endpoint with a certificate from a throwaway CA (trustme)."""

    def __init__(self, tmp: Path) -> None:
        self.ca = trustme.CA()
        cert = self.ca.issue_cert("127.0.0.1")
        self.ca_file = tmp / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps({"status": "ok"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadedServer(("127.0.0.1", 0), Handler, ctx)
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.httpd.server_address[1]}/health"

    def __enter__(self) -> HTTPSHealth:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class SeededIncident:
    app: SampleApp  # the sample app, its connection pool exhausted
    https: HTTPSHealth  # an HTTPS health endpoint and its CA file


@contextmanager
def seeded_incident(dsn: str, tmp: Path, seconds: float = 90) -> Iterator[SeededIncident]:
    """Everything at once on the database `dsn`: the queue in trouble, bloat, slow statements
    and rollbacks, unhealthy sessions for up to `seconds`, the sample app with an exhausted
    pool and an HTTPS endpoint. All of it is stopped on exit."""
    create_queue(dsn)
    seed_queue_incident(dsn)
    seed_database_history(dsn)
    pgnet_schema.seed_incident(dsn)  # webhook calls failing with 401 (pg_net's tables)
    sessions = Sessions(dsn, seconds=seconds).start()
    try:
        app = SampleApp(host="127.0.0.1", port=0).start()
        try:
            app.set_incident("pool_exhausted")
            with HTTPSHealth(tmp) as https:
                yield SeededIncident(app, https)
        finally:
            app.stop()
    finally:
        sessions.stop()


# runbook 000's error log, with rows older than a day (a retention period of 1d is behind)
ERROR_LOGS = (
    "CREATE TABLE IF NOT EXISTS error_logs (id bigserial PRIMARY KEY, error_type text NOT NULL,"
    ' message text, "timestamp" timestamptz NOT NULL DEFAULT now())',
    'CREATE INDEX IF NOT EXISTS error_logs_timestamp_idx ON error_logs ("timestamp")',
    'INSERT INTO error_logs (error_type, message, "timestamp")'
    " SELECT (ARRAY['ocr', 'timeout', 'storage'])[1 + i % 3], 'seeded',"
    " now() - i * interval '1 hour' FROM generate_series(0, 71) i",
)
# runbook 000's "errors by type over the last hour", as a custom query
ERROR_LOGS_QUERY = {
    "name": "error_logs_by_type",
    "sql": "SELECT error_type, count(*) AS errors FROM error_logs"
    " WHERE \"timestamp\" > now() - interval '1 hour' GROUP BY error_type",
    "labels": ["error_type"],
    "metrics": [
        {"name": "app_error_logs_last_hour", "column": "errors", "help": "Errors by type, 1 h."}
    ],
}


def target_config(dsn: str, name: str = "shop", **thresholds: Any) -> dict[str, Any]:
    """A target collected every second, with the sample queue and its dead-letter table."""
    return {
        "name": name,
        "dsn": dsn,
        "collect_interval": "1s",
        "collectors": {"tables": {"interval": "1s"}, "statements": {"interval": "1s"}},
        "thresholds": thresholds,
        "queues": [
            {
                "name": "processing_jobs",
                "table": "public.processing_jobs",
                "dead_letter_table": "public.processing_jobs_dlq",
            }
        ],
    }


# the sample app's /api/health/metrics values with their meanings (alerts/app-reported.rules.yml)
APP_REPORTED = [
    {"path": "errorRate", "meaning": "error_ratio", "unit": "ratio"},
    {"path": "responseTime.p95", "meaning": "latency_p95", "unit": "milliseconds"},
    {"path": "responseTime.avg", "meaning": "latency_average", "unit": "milliseconds"},
    {"path": "memory.usedPercent", "meaning": "memory_ratio", "unit": "percent"},
]


def sample_app_endpoints(base: str) -> list[dict[str, Any]]:
    """The sample app's endpoints as runbooks 001 and 004 probe them, every second."""
    return [
        {
            "name": "monitoring",
            "url": f"{base}/api/monitoring/health",
            "pool": {"preset": "sqlalchemy"},
            "components": {"path": "checks"},
        },
        {
            "name": "metrics",
            "url": f"{base}/api/health/metrics",
            "pool": {
                "path": "database.connections",
                "in_use": "active",
                "idle": "idle",
                "waiting": "waiting",
            },
            "metrics": APP_REPORTED,
        },
        {"name": "health", "url": f"{base}/api/health"},
    ]


def app_config(name: str, endpoints: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": name, "defaults": {"interval": "1s", "timeout": "1s"}, "endpoints": endpoints}


def use_queue_indexes(dsn: str) -> None:
    """Scan the queue's partial indexes once, as a working app does: an index never scanned
    counts as unused (PostgresUnusedIndexes)."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SET enable_seqscan = off")
        c.execute(
            "SELECT count(*) FROM processing_jobs"
            " WHERE status IN ('pending', 'processing', 'failed')"
        )
        c.execute(
            "SELECT count(*) FROM processing_jobs WHERE status IN ('completed', 'failed')"
            " AND updated_at > now() - interval '1 hour'"
        )


def client_sessions(dsn: str) -> int:
    """Client sessions on the server as the connections collector counts them."""
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
            " AND pid <> pg_backend_pid()"
            " AND application_name IS DISTINCT FROM 'runbook-exporter'"
        ).fetchone()
        assert row is not None
        return int(row[0])


def usable_connections(dsn: str) -> int:
    """max_connections minus the reserved slots (runbook_pg_max - runbook_pg_reserved)."""
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute(
            "SELECT current_setting('max_connections')::int"
            " - current_setting('superuser_reserved_connections')::int"
            " - coalesce(current_setting('reserved_connections', true)::int, 0)"
        ).fetchone()
        assert row is not None
        return int(row[0])
