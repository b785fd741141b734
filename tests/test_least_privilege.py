"""The exporter works as the least-privilege role of deploy/sql/monitoring-role.sql.

The role script is applied with psql exactly as docs/deployment.md says, in a fresh database
holding a queue table like runbook 000's processing_jobs; the exporter then runs connected as
that role and every database collector must succeed through a real scrape, while the role
itself cannot write and cannot read tables outside its grants.

Roles are cluster-wide: the fixture drops runbook_monitor again afterwards, so do not point
RUNBOOK_TEST_DSN at a cluster whose real runbook_monitor role you want to keep.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from exporter.sources import collector_names

ROOT = Path(__file__).resolve().parent.parent
ROLE_SQL = ROOT / "deploy" / "sql" / "monitoring-role.sql"
ROLE = "runbook_monitor"

QUEUE_DDL = """
CREATE TABLE public.processing_jobs (
    id bigserial PRIMARY KEY,
    status text NOT NULL DEFAULT 'pending',
    payload jsonb NOT NULL DEFAULT '{}',
    retry_count integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON public.processing_jobs (status, created_at);
CREATE SCHEMA jobs;
CREATE TABLE jobs.dead_letter_jobs (LIKE public.processing_jobs INCLUDING ALL);
-- an application table the role must not read
CREATE TABLE public.customers (id bigserial PRIMARY KEY, email text NOT NULL);
INSERT INTO public.customers (email) VALUES ('someone@example.com');
INSERT INTO public.processing_jobs (status, retry_count, created_at, updated_at) VALUES
    ('pending', 0, now() - interval '20 minutes', now() - interval '20 minutes'),
    ('pending', 0, now(), now()),
    ('processing', 1, now() - interval '2 hours', now() - interval '45 minutes'),
    ('completed', 0, now() - interval '1 hour', now() - interval '50 minutes'),
    ('failed', 3, now() - interval '1 hour', now() - interval '2 minutes');
ANALYZE public.processing_jobs;
"""


def psql_binary() -> str:
    """psql from the same place as the test server's binaries, else from PATH."""
    try:
        from exporter.demo.pgserver import find_bin_dir

        candidate = find_bin_dir() / "psql"
        if candidate.exists():
            return str(candidate)
    except RuntimeError:
        pass
    found = shutil.which("psql")
    if not found:
        pytest.fail("psql not found: install the test extras (bash scripts/setup.sh)")
    return found


def as_role(dsn: str, password: str) -> str:
    params = conninfo_to_dict(dsn)
    params.update(user=ROLE, password=password)
    return make_conninfo("", **params)


@dataclass
class MonitorRole:
    password: str
    password_file: Path
    dsn_without_password: str
    psql_output: str


def apply_role_sql(admin_dsn: str, **variables: str) -> subprocess.CompletedProcess[str]:
    args = [psql_binary(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", admin_dsn]
    for name, value in variables.items():
        args += ["-v", f"{name}={value}"]
    return subprocess.run([*args, "-f", str(ROLE_SQL)], capture_output=True, text=True, timeout=60)


@pytest.fixture
def monitor_role(fresh_db: str, tmp_path: Path) -> Iterator[MonitorRole]:
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(QUEUE_DDL)
    password = secrets.token_urlsafe(24)
    with psycopg.connect(fresh_db) as c:  # hashed client-side, as psql's \password does
        verifier = c.pgconn.encrypt_password(password.encode(), ROLE.encode(), b"scram-sha-256")
    r = apply_role_sql(
        fresh_db,
        queue_tables="public.processing_jobs, jobs.dead_letter_jobs",
        password_scram=verifier.decode(),
    )
    assert r.returncode == 0, f"role script failed:\n{r.stderr}"
    assert password not in r.stdout + r.stderr
    pw_file = tmp_path / "db-password"
    pw_file.write_text(password + "\n")
    pw_file.chmod(0o600)
    params = conninfo_to_dict(fresh_db)
    params.pop("password", None)
    params["user"] = ROLE
    try:
        yield MonitorRole(password, pw_file, make_conninfo("", **params), r.stdout + r.stderr)
    finally:
        with psycopg.connect(fresh_db, autocommit=True) as c:
            c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (ROLE,),
            )
            c.execute(f"DROP OWNED BY {ROLE}")
            c.execute(f"DROP ROLE IF EXISTS {ROLE}")


def test_role_script_grants_exactly_what_it_documents(fresh_db: str, monitor_role: MonitorRole):
    with psycopg.connect(fresh_db, autocommit=True) as c:
        attrs = c.execute(
            "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolreplication,"
            " rolbypassrls, rolinherit, rolconnlimit, rolpassword LIKE 'SCRAM-SHA-256$%%'"
            " FROM pg_authid WHERE rolname = %s",
            (ROLE,),
        ).fetchone()
        assert attrs == (True, False, False, False, False, False, True, 5, True)
        member_of = {
            r[0]
            for r in c.execute(
                "SELECT b.rolname FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid"
                " JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s",
                (ROLE,),
            )
        }
        # PostgreSQL 16+: a reserved slot at max_connections (tests/test_db_faults.py uses it)
        expected = {"pg_monitor"}
        if c.info.server_version >= 160000:
            expected.add("pg_use_reserved_connections")
        assert member_of == expected
        if (
            c.info.server_version >= 160000
            and c.execute("SELECT current_setting('reserved_connections')::int = 0").fetchone()[0]
        ):
            # the grant is useless without the server setting: the script says so
            assert "reserved_connections is 0" in monitor_role.psql_output
        readable = {
            r[0]
            for r in c.execute(
                "SELECT n.nspname || '.' || c.relname FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.relkind IN ('r', 'p', 'v', 'm')"
                " AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
                " AND has_table_privilege(%s, c.oid, 'SELECT')",
                (ROLE,),
            )
        }
        # the queue tables, and pg_stat_statements' views (SELECT is granted to PUBLIC)
        assert readable - {"public.pg_stat_statements", "public.pg_stat_statements_info"} == {
            "public.processing_jobs",
            "jobs.dead_letter_jobs",
        }
        writable = c.execute(
            "SELECT count(*) FROM pg_class c WHERE c.relkind IN ('r', 'p')"
            " AND (has_table_privilege(%s, c.oid, 'INSERT')"
            "   OR has_table_privilege(%s, c.oid, 'UPDATE')"
            "   OR has_table_privilege(%s, c.oid, 'DELETE')"
            "   OR has_table_privilege(%s, c.oid, 'TRUNCATE'))",
            (ROLE,) * 4,
        ).fetchone()[0]
        assert writable == 0
        (read_only,) = c.execute(
            "SELECT setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole"
            " WHERE r.rolname = %s AND s.setdatabase = 0",
            (ROLE,),
        ).fetchone()
        assert "default_transaction_read_only=on" in read_only


def test_role_script_is_idempotent_and_rejects_unknown_tables(
    fresh_db: str, monitor_role: MonitorRole
):
    again = apply_role_sql(fresh_db, queue_tables="public.processing_jobs")
    assert again.returncode == 0, again.stderr
    assert "\\password runbook_monitor" in again.stdout  # no password given: says how to set one
    wrong = apply_role_sql(fresh_db, queue_tables="public.no_such_table")
    assert wrong.returncode != 0
    assert "queue table public.no_such_table does not exist" in wrong.stderr
    # a cleartext password would be kept in pg_stat_statements and the server log: refused
    cleartext = secrets.token_urlsafe(16)
    refused = apply_role_sql(fresh_db, password=cleartext)
    assert refused.returncode != 0 and "password_scram" in refused.stderr
    refused = apply_role_sql(fresh_db, password_scram=cleartext)
    assert refused.returncode != 0 and "not a SCRAM-SHA-256 verifier" in refused.stderr
    with psycopg.connect(fresh_db, autocommit=True) as c:
        leaked = c.execute(
            "SELECT count(*) FROM pg_stat_statements WHERE query LIKE %s", (f"%{cleartext}%",)
        ).fetchone()[0]
        (stored,) = c.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (ROLE,)
        ).fetchone()
    assert leaked == 0
    assert stored.startswith("SCRAM-SHA-256$")  # the earlier password is kept


def test_role_cannot_write_or_read_application_tables(fresh_db: str, monitor_role: MonitorRole):
    with psycopg.connect(as_role(fresh_db, monitor_role.password), autocommit=True) as c:
        (user,) = c.execute("SELECT current_user").fetchone()
        assert user == ROLE
        assert c.execute("SELECT count(*) FROM public.processing_jobs").fetchone()[0] == 5
        assert c.execute("SELECT count(*) FROM jobs.dead_letter_jobs").fetchone()[0] == 0
        # a role-level read-only default, and no privilege even when a session turns it off
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            c.execute("INSERT INTO public.processing_jobs (status) VALUES ('pending')")
        c.execute("SET default_transaction_read_only = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("INSERT INTO public.processing_jobs (status) VALUES ('pending')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("UPDATE public.processing_jobs SET status = 'failed'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("DELETE FROM jobs.dead_letter_jobs")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT email FROM public.customers")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("CREATE TABLE jobs.scratch (id int)")
    with psycopg.connect(fresh_db) as c:
        assert c.execute("SELECT count(*) FROM public.processing_jobs").fetchone()[0] == 5


def test_every_collector_succeeds_as_the_monitoring_role(
    fresh_db: str, monitor_role: MonitorRole, run_exporter
):
    ex = run_exporter(
        {
            "targets": [
                {
                    "name": "app",
                    "dsn": monitor_role.dsn_without_password,
                    "password_file": str(monitor_role.password_file),
                    "collect_interval": "1s",
                    "collectors": {
                        "tables": {"interval": "1s"},
                        "statements": {"interval": "1s"},
                        "retention": {"interval": "1s"},
                    },
                    "queues": [{"table": "public.processing_jobs"}],
                    # the role's SELECT on the queue table is all these need
                    "retention": [{"table": "public.processing_jobs", "period": "30d"}],
                    "queries": [
                        {
                            "name": "jobs",
                            "sql": "SELECT status, count(*) AS n FROM public.processing_jobs"
                            " GROUP BY status",
                            "labels": ["status"],
                            "metrics": [{"name": "app_jobs", "column": "n", "help": "Jobs."}],
                        }
                    ],
                }
            ]
        }
    )

    def all_succeeded(s) -> bool:
        return all(
            s.value("runbook_collector_success", target="app", collector=n) == 1
            for n in collector_names()
        )

    try:
        s = ex.wait_for(all_succeeded, timeout=30, what="every collector succeeding")
    except AssertionError:
        snap = ex.exporter.store.snapshot()
        failing = {
            n: (snap[("app", n)].last.error if ("app", n) in snap else "never ran")
            for n in collector_names()
            if ("app", n) not in snap or not snap[("app", n)].last.success
        }
        pytest.fail(f"collectors failing as {ROLE}: {failing}")

    assert set(collector_names()) == {
        "connections",
        "database",
        "queues",
        "tables",
        "statements",
        "cron",  # quiet here (no pg_cron); as this role on pg_cron: tests/test_supabase_role.py
        "pgnet",  # quiet here: no pg_net in this database
        "retention",
        "custom",
    }
    assert s.value("runbook_retention_up", target="app", table="processing_jobs") == 1
    assert s.value("runbook_custom_query_success", target="app", query="jobs") == 1
    assert s.value("runbook_target_up", target="app") == 1
    # the collectors' own series are there, read with the role's privileges
    assert s.values("runbook_queue_jobs", target="app", queue="processing_jobs")
    assert s.value("runbook_pg_database_size_bytes", target="app") > 0
    assert s.value("runbook_pg_max_connections", target="app") > 0
    assert s.value("runbook_pg_stat_statements_available", target="app") == 1
    assert monitor_role.password not in s.text
    with psycopg.connect(fresh_db, autocommit=True) as c:
        users = {
            r[0]
            for r in c.execute(
                "SELECT usename FROM pg_stat_activity"
                " WHERE application_name = 'runbook-exporter' AND datname = current_database()"
            )
        }
    assert users == {ROLE}
