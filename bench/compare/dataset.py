"""The database side of bench/compare: Debian's PostgreSQL 15, the roles each exporter
connects as (so pg_stat_statements tells their load apart), the jobs table at a given size,
and the doctor's indexes."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench import jobs_table
from exporter.demo.pgserver import LocalPostgres

PG15_BIN = Path("/usr/lib/postgresql/15/bin")
DATABASE = "bench"
# one role per exporter: pg_stat_statements keys its entries by user, so the load of each
# exporter is read from the same view in the same run
ROLES = {
    "runbook-exporter": "bench_runbook",
    "postgres_exporter": "bench_pgx",
    "postgres_exporter + queue SQL": "bench_pgx_queue",
}
SETTINGS = {
    "shared_buffers": "512MB",
    "maintenance_work_mem": "256MB",
    "max_wal_size": "4GB",
    "autovacuum": "off",  # the bench analyzes explicitly, so plans do not shift mid-run
    "max_connections": "100",
}

PENDING, PROCESSING = 300, 60


@dataclass
class Server:
    pg: LocalPostgres
    version: str

    @property
    def admin(self) -> str:
        return dsn(self.pg.port, "postgres", DATABASE)

    def dsn(self, role: str) -> str:
        return dsn(self.pg.port, role, DATABASE)


def dsn(port: int, user: str, database: str) -> str:
    return f"postgresql://{user}@127.0.0.1:{port}/{database}?sslmode=disable"


def start() -> Server:
    """Debian's PostgreSQL 15 (scripts/setup.sh installs it), as tests/pg.py starts it."""
    if not (PG15_BIN / "postgres").exists():
        raise SystemExit(
            f"PostgreSQL 15 is missing at {PG15_BIN}: bash scripts/setup.sh installs it "
            "(Debian package postgresql-15)"
        )
    pg = LocalPostgres(settings=SETTINGS, bin_dir=PG15_BIN).start()
    try:
        with psycopg.connect(pg.dsn, autocommit=True) as c:
            c.execute(f"CREATE DATABASE {DATABASE}")
            version = c.execute("SHOW server_version").fetchone()[0]
            for role in ROLES.values():
                c.execute(f"CREATE ROLE {role} LOGIN IN ROLE pg_monitor")
        with psycopg.connect(dsn(pg.port, "postgres", DATABASE), autocommit=True) as c:
            c.execute("CREATE EXTENSION pg_stat_statements")
    except BaseException:
        pg.cleanup()
        raise
    return Server(pg, version)


def grant(c: psycopg.Connection, table: str) -> None:
    for role in ROLES.values():
        c.execute(f"GRANT SELECT ON {table} TO {role}")


def build_jobs(server: Server, n: int) -> dict:
    """The jobs table at n rows, vacuumed and analyzed, primary key only. Returns what it
    holds (counts by status, size, build time)."""
    started = time.perf_counter()
    with psycopg.connect(server.admin, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS jobs")
        c.execute(jobs_table.create_sql("jobs"))
        c.execute(
            jobs_table.fill_sql("jobs"),
            jobs_table.fill_params(n, PENDING, PROCESSING),
            prepare=False,
        )
        c.execute("VACUUM ANALYZE jobs")
        grant(c, "jobs")
        counts = dict(c.execute("SELECT status, count(*) FROM jobs GROUP BY 1 ORDER BY 1"))
        (size,) = c.execute("SELECT pg_table_size('jobs')").fetchone()
    return {
        "rows": n,
        "counts": counts,
        "table_bytes": size,
        "build_seconds": round(time.perf_counter() - started, 1),
    }


def build_small_queues(server: Server, names: list[str], rows: int = 1000) -> None:
    """Small extra queue tables (same shape) for the footprint configuration."""
    with psycopg.connect(server.admin, autocommit=True) as c:
        for name in names:
            c.execute(f"DROP TABLE IF EXISTS {name}")
            c.execute(jobs_table.create_sql(name))
            c.execute(
                jobs_table.fill_sql(name),
                {"n": rows, "pending": 20, "processing": 5, "pstep": rows // 20, "qstep": 10},
                prepare=False,
            )
            c.execute(f"VACUUM ANALYZE {name}")
            grant(c, name)


DOCTOR_FIX = re.compile(r"^\s*(CREATE INDEX .*;)\s*$", re.M)


def doctor_indexes(config: Path) -> tuple[list[str], str]:
    """The CREATE INDEX statements `runbook-exporter doctor` prints for the config (run as
    a user would), and its whole output."""
    out = subprocess.run(
        [sys.executable, "-m", "exporter", "doctor", "--config.file", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if out.returncode not in (0, 1):  # 1: findings, the indexes among them
        raise SystemExit(f"doctor failed (exit {out.returncode}):\n{out.stdout}{out.stderr}")
    return DOCTOR_FIX.findall(out.stdout), out.stdout


def apply_indexes(server: Server, statements: list[str]) -> None:
    with psycopg.connect(server.admin, autocommit=True) as c:
        for stmt in statements:
            c.execute(stmt)
        c.execute("VACUUM ANALYZE jobs")


def reset_statements(server: Server) -> None:
    with psycopg.connect(server.admin, autocommit=True) as c:
        c.execute("SELECT pg_stat_statements_reset()")


def statement_load(server: Server) -> dict[str, dict[str, float]]:
    """Calls and total (planning + execution) time in ms per exporter role since the reset."""
    with psycopg.connect(server.admin, autocommit=True) as c:
        rows = c.execute(
            "SELECT r.rolname, sum(s.calls), sum(s.total_exec_time + s.total_plan_time)"
            " FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid"
            " WHERE r.rolname = ANY(%s) GROUP BY 1",
            (list(ROLES.values()),),
        ).fetchall()
    by_role = {role: (float(calls), float(ms)) for role, calls, ms in rows}
    return {
        name: {"calls": by_role.get(role, (0.0, 0.0))[0], "ms": by_role.get(role, (0.0, 0.0))[1]}
        for name, role in ROLES.items()
    }
