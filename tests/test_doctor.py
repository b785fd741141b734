"""`runbook-exporter doctor` against a real PostgreSQL: what it finds, the statements it prints
(run verbatim here), and its exit codes."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator

import psycopg
import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from exporter.config import parse_config
from exporter.demo.pgserver import free_port
from exporter.doctor import run_doctor
from tests.test_queues import JOBS_TABLE, add_jobs


def config(dsn: str, queues: list[dict] | None = None, **extra) -> dict:
    queues = [{"table": "processing_jobs"}] if queues is None else queues
    return {"targets": [{"name": "app", "dsn": dsn, "queues": queues, **extra}]}


def doctor(cfg: dict, capsys) -> tuple[int, str]:
    rc = run_doctor(parse_config(yaml.safe_dump(cfg), "doctor-test.yml"))
    return rc, capsys.readouterr().out


def fixes(out: str) -> list[str]:
    """The statements the doctor prints under its findings."""
    return [
        line.strip()
        for line in out.splitlines()
        if line.strip().startswith(
            ("CREATE INDEX", "ANALYZE ", "GRANT ", "CREATE EXTENSION", "ALTER TABLE")
        )
    ]


def seeded(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(JOBS_TABLE)
        add_jobs(c, 30, "pending")
        add_jobs(c, 3, "processing")
        add_jobs(c, 200, "completed", updated_ago="1 day")
        add_jobs(c, 2, "cancelled")


def test_prints_the_missing_indexes_and_reports_none_once_created(fresh_db, capsys):
    seeded(fresh_db)
    with psycopg.connect(fresh_db, autocommit=True) as c:
        # runbook 000's index: it does not cover failed jobs, so it cannot serve the query
        c.execute(
            "CREATE INDEX idx_processing_jobs_status ON processing_jobs(status)"
            " WHERE status IN ('pending', 'processing')"
        )
    rc, out = doctor(config(fresh_db), capsys)
    assert rc == 1, out
    # runbook 000's index serves the pending/processing query; the failed jobs, which pile up,
    # get a deduplicated index the counts read alone
    assert fixes(out) == [
        "CREATE INDEX CONCURRENTLY processing_jobs_failed_idx ON public.processing_jobs"
        " (status, retry_count) WHERE status IN ('failed');",
        "CREATE INDEX CONCURRENTLY processing_jobs_recent_idx ON public.processing_jobs"
        " (updated_at) WHERE status IN ('completed', 'failed');",
        "ANALYZE public.processing_jobs;",
    ], out
    assert "active query (counting pending/processing jobs) uses index idx_processing" in out
    assert "targets[0].queues[0]" in out

    with psycopg.connect(fresh_db, autocommit=True) as c:
        for stmt in fixes(out):
            c.execute(stmt)
    rc, out = doctor(config(fresh_db), capsys)
    assert rc == 0, out
    assert "FINDING" not in out and fixes(out) == []
    assert (
        "failed query (counting failed/dead jobs) uses an index-only scan of"
        " processing_jobs_failed_idx" in out
    ), out
    assert "recent query (counting recently finished jobs) uses index" in out
    assert "completed jobs estimated at 200" in out
    # a status value no role maps, seen in the statistics ANALYZE gathered: a note only
    assert "status values no role maps" in out and "'cancelled' (~0.9%)" in out


def test_custom_statuses_get_their_own_index_predicate(fresh_db, capsys):
    seeded(fresh_db)
    queue = {
        "table": "processing_jobs",
        "statuses": {
            "pending": ["queued", "pending"],
            "processing": "running",
            "completed": "done",
            "failed": "error",
            "dead": "dead",
        },
        "count_terminal": "exact",
    }
    rc, out = doctor(config(fresh_db, [queue]), capsys)
    assert rc == 1, out
    assert fixes(out) == [
        "CREATE INDEX CONCURRENTLY processing_jobs_active_idx ON public.processing_jobs"
        " (status) INCLUDE (created_at, updated_at) WHERE status IN ('queued', 'pending',"
        " 'running');",
        "CREATE INDEX CONCURRENTLY processing_jobs_failed_idx ON public.processing_jobs"
        " (status, retry_count) WHERE status IN ('error', 'dead');",
        "CREATE INDEX CONCURRENTLY processing_jobs_recent_idx ON public.processing_jobs"
        " (updated_at) WHERE status IN ('done', 'error');",
    ], out
    assert "count_terminal: exact counts every completed row" in out


def test_an_index_that_reads_failed_jobs_from_the_table_gets_a_covering_one(fresh_db, capsys):
    """The index earlier versions recommended, (status) over every active status, bounds the
    failed count but fetches each failed job from the table: O(failed history). The doctor
    says so and prints the index the count can read alone; the table's visibility map is
    what makes that scan skip the table, so a table autovacuum never visits is a finding."""
    seeded(fresh_db)
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("SET synchronous_commit = on")  # see test_queues: VACUUM then marks pages
        add_jobs(c, 40, "failed", retry_count=3)
        c.execute(
            "CREATE INDEX processing_jobs_old_idx ON processing_jobs (status)"
            " WHERE status IN ('pending', 'processing', 'failed')"
        )
        c.execute(
            "CREATE INDEX processing_jobs_recent_idx ON processing_jobs (updated_at)"
            " WHERE status IN ('completed', 'failed')"
        )
        c.execute("ALTER TABLE processing_jobs SET (autovacuum_enabled = false)")
        c.execute("VACUUM ANALYZE processing_jobs")
    rc, out = doctor(config(fresh_db), capsys)
    assert rc == 1, out
    assert (
        "failed query (counting failed/dead jobs) reads every such row from the table through"
        " index processing_jobs_old_idx" in out
    ), out
    assert fixes(out) == [
        "CREATE INDEX CONCURRENTLY processing_jobs_failed_idx ON public.processing_jobs"
        " (status, retry_count) WHERE status IN ('failed');",
        "ALTER TABLE public.processing_jobs RESET (autovacuum_enabled);",
    ], out
    assert "autovacuum is disabled on public.processing_jobs" in out
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(fixes(out)[0])
        c.execute("ALTER TABLE public.processing_jobs RESET (autovacuum_enabled)")
    rc, out = doctor(config(fresh_db), capsys)
    assert rc == 0, out
    assert "uses an index-only scan of processing_jobs_failed_idx" in out


def test_missing_table_and_column_name_the_config_path(fresh_db, capsys):
    seeded(fresh_db)
    queues = [
        {"table": "processing_jobs"},
        {"table": "public.jobz"},
        {"name": "typo", "table": "processing_jobs", "updated_at_column": "modified_at"},
    ]
    rc, out = doctor(config(fresh_db, queues), capsys)
    assert rc == 1, out
    assert 'FINDING  targets[0].queues[1].table: table "public.jobz" does not exist' in out
    assert (
        'targets[0].queues[2].updated_at_column: column "modified_at" does not exist in table'
        ' "public.processing_jobs"' in out
    )


def test_unreachable_target_exits_2_without_showing_the_password(capsys):
    dsn = f"postgresql://nobody:s3cret-pw@127.0.0.1:{free_port()}/x"
    rc, out = doctor(config(dsn, connect_timeout="1s"), capsys)
    assert rc == 2, out
    assert "cannot connect" in out and "s3cret-pw" not in out


def test_missing_password_env_exits_2(fresh_db, capsys, monkeypatch):
    monkeypatch.delenv("RUNBOOK_DOCTOR_TEST_PW", raising=False)
    rc, out = doctor(config(fresh_db, password_env="RUNBOOK_DOCTOR_TEST_PW"), capsys)
    assert rc == 2, out
    assert "environment variable RUNBOOK_DOCTOR_TEST_PW is not set" in out


@pytest.fixture
def monitor_role(fresh_db: str, pg_server: str) -> Iterator[tuple[str, str]]:
    """A login role with no privileges yet, and its password; dropped afterwards."""
    role, password = f"doctor_{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    with psycopg.connect(pg_server, autocommit=True) as c:
        c.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    yield role, password
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(f"DROP OWNED BY {role}")
    with psycopg.connect(pg_server, autocommit=True) as c:
        c.execute(f"DROP ROLE {role}")


def test_role_privileges_and_pg_stat_statements(fresh_db, monitor_role, capsys, monkeypatch):
    role, password = monitor_role
    seeded(fresh_db)
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("DROP EXTENSION pg_stat_statements")
    params = conninfo_to_dict(fresh_db)
    params.pop("password", None)
    params["user"] = role
    monkeypatch.setenv("RUNBOOK_DOCTOR_TEST_PW", password)
    cfg = config(make_conninfo("", **params), password_env="RUNBOOK_DOCTOR_TEST_PW")

    rc, out = doctor(cfg, capsys)
    assert rc == 1, out
    assert password not in out
    assert f"GRANT pg_monitor TO {role};" in fixes(out)
    assert "CREATE EXTENSION pg_stat_statements;" in fixes(out)
    assert (
        'targets[0].queues[0].table: permission denied: cannot SELECT from "public.processing_jobs"'
        in out
    )

    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(f"GRANT SELECT ON processing_jobs TO {role}")
        c.execute("CREATE EXTENSION pg_stat_statements")
        c.execute(f"GRANT pg_monitor TO {role}")
    rc, out = doctor(cfg, capsys)
    assert "pg_monitor" in out and "GRANT" not in out, out
    assert "pg_stat_statements" in out and "is installed and loaded" in out
    assert "table and columns: status text" in out
    assert rc == 1  # the indexes are still missing
    with psycopg.connect(fresh_db, autocommit=True) as c:
        for stmt in fixes(out):
            c.execute(stmt)
    rc, out = doctor(cfg, capsys)
    assert rc == 0, out


def test_cli_exit_codes(fresh_db, tmp_path):
    """The real command: 0 when all is well, 1 on findings, 2 when a target cannot be reached."""
    seeded(fresh_db)

    def run(cfg: dict) -> subprocess.CompletedProcess:
        path = tmp_path / "doctor.yml"
        path.write_text(yaml.safe_dump(cfg))
        return subprocess.run(
            [sys.executable, "-m", "exporter", "doctor", "--config.file", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    r = run(config(fresh_db))
    assert r.returncode == 1, r.stdout + r.stderr
    with psycopg.connect(fresh_db, autocommit=True) as c:
        for stmt in fixes(r.stdout):
            c.execute(stmt)
    r = run(config(fresh_db))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.rstrip().endswith("doctor: 0 finding(s), 0 error(s)")
    r = run(config(f"postgresql://u@127.0.0.1:{free_port()}/x", connect_timeout="1s"))
    assert r.returncode == 2, r.stdout + r.stderr
    (tmp_path / "bad.yml").write_text("targets: [{name: app}]\n")
    r = subprocess.run(
        [sys.executable, "-m", "exporter", "doctor", "--config.file", str(tmp_path / "bad.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "bad.yml" in r.stderr, r.stdout + r.stderr


def test_pg_stat_statements_in_a_schema_off_the_search_path(fresh_db, capsys):
    """Like the statements collector, the doctor finds the extension wherever it was created."""
    seeded(fresh_db)
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("DROP EXTENSION pg_stat_statements")
        c.execute("CREATE SCHEMA ext")
        c.execute("CREATE EXTENSION pg_stat_statements SCHEMA ext")
        (search_path,) = c.execute("SHOW search_path").fetchone()
    assert "ext" not in search_path
    rc, out = doctor(config(fresh_db), capsys)
    assert rc == 1, out  # the indexes are missing: findings, not an aborted check
    assert "ERROR" not in out and "check aborted" not in out, out
    assert "pg_stat_statements" in out and "is installed and loaded" in out, out
    assert "CREATE EXTENSION pg_stat_statements;" not in fixes(out)
    assert "table and columns: status text" in out, out
    assert "CREATE INDEX CONCURRENTLY processing_jobs_active_idx" in out, out
