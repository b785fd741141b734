"""deploy/sql/supabase-monitoring-role.sql, run for real with psql on a real pg_cron server whose
cron tables have row-level security as pg_cron and Supabase set it (policies `username =
current_user`), with jobs of another role really run by pg_cron.

Before the script, a pg_monitor role sees none of the other roles' jobs: the collector fails
naming the script and the doctor prints how to run it. After it (run twice: idempotent), the
exporter connected as runbook_monitor serves every role's jobs and runs through the SECURITY
DEFINER functions, which expose no command text. The pgmq and pg_net grants are checked on
tables made from those extensions' documented schemas (pgmq 1.4: pgmq.meta, pgmq.q_<queue>,
pgmq.a_<queue>; pg_net 0.10: net.http_request_queue, net._http_response), since neither
extension is packaged for this server.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from exporter.collectors import cron
from exporter.config import parse_config
from exporter.runtime import Exporter
from exporter.server import HTTPServer
from tests.helpers import Scrape, wait_for
from tests.pg import PG_CRON_BIN, pg_cron_server
from tests.test_cron import collect, doctor

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "deploy" / "sql" / "supabase-monitoring-role.sql"
ROLE = "runbook_monitor"
PASSWORD = "correct-horse-battery-staple"

# an application role scheduling its own jobs, as a Supabase app does
SETUP = """
CREATE EXTENSION pg_cron;
CREATE SCHEMA extensions;
CREATE ROLE app_user LOGIN;
GRANT USAGE ON SCHEMA cron TO app_user;
-- pgmq 1.4's tables for a queue named email (columns as documented)
CREATE SCHEMA pgmq;
CREATE TABLE pgmq.meta (queue_name varchar UNIQUE NOT NULL, is_partitioned boolean NOT NULL,
  is_unlogged boolean NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE pgmq.q_email (msg_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  read_ct integer NOT NULL DEFAULT 0, enqueued_at timestamptz NOT NULL DEFAULT now(),
  vt timestamptz NOT NULL, message jsonb);
CREATE TABLE pgmq.a_email (msg_id bigint PRIMARY KEY, read_ct integer NOT NULL DEFAULT 0,
  enqueued_at timestamptz NOT NULL DEFAULT now(), archived_at timestamptz NOT NULL DEFAULT now(),
  vt timestamptz NOT NULL, message jsonb);
INSERT INTO pgmq.meta (queue_name, is_partitioned, is_unlogged) VALUES ('email', false, false);
INSERT INTO pgmq.q_email (vt, message) VALUES (now(), '{"to": "someone"}');
-- pg_net 0.10's tables
CREATE SCHEMA net;
CREATE TABLE net.http_request_queue (id bigserial, method text NOT NULL, url text NOT NULL,
  headers jsonb NOT NULL, body bytea, timeout_milliseconds integer NOT NULL);
CREATE TABLE net._http_response (id bigint, status_code integer, content_type text,
  headers jsonb, content text, timed_out boolean, error_msg text,
  created timestamptz NOT NULL DEFAULT now());
-- a role like the plain monitoring role: pg_monitor, and even USAGE on cron, but no way past
-- row-level security
CREATE ROLE runbook_monitor LOGIN;
GRANT pg_monitor TO runbook_monitor;
GRANT USAGE ON SCHEMA cron TO runbook_monitor;
"""
APP_JOBS = """
SELECT cron.schedule('app-ok', '* * * * *', 'SELECT 1');
SELECT cron.schedule('app-bad', '* * * * *', 'SELECT 1/0');
"""


def as_role(dsn: str, role: str, password: str | None = None) -> str:
    params = conninfo_to_dict(dsn)
    params["user"] = role
    if password:
        params["password"] = password
    return make_conninfo("", **params)


def run_script(admin_dsn: str, **variables: str) -> subprocess.CompletedProcess[str]:
    args = [f"{PG_CRON_BIN}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", admin_dsn]
    for name, value in variables.items():
        args += ["-v", f"{name}={value}"]
    return subprocess.run([*args, "-f", str(SCRIPT)], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def supabase_db() -> Iterator[str]:
    """Superuser DSN of a pg_cron database where app_user's jobs have run once for real."""
    with pg_cron_server() as dsn:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(SETUP)
        with psycopg.connect(as_role(dsn, "app_user"), autocommit=True) as c:
            c.execute(APP_JOBS)
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("SELECT cron.schedule('admin-ok', '* * * * *', 'SELECT 1')")
            deadline = time.monotonic() + 80
            while True:  # pg_cron's next minute (bounded)
                (n,) = c.execute(
                    "SELECT count(DISTINCT jobid) FROM cron.job_run_details"
                    " WHERE status IN ('succeeded', 'failed')"
                ).fetchone()
                if n == 3:
                    break
                assert time.monotonic() < deadline, "pg_cron did not run the jobs in time"
                time.sleep(0.5)
        yield dsn


@pytest.mark.slow
def test_rls_hides_other_roles_jobs_until_the_script_runs(
    supabase_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    monitor = as_role(supabase_db, ROLE)
    with psycopg.connect(monitor) as c:  # pg_monitor is not enough: RLS filters every row
        assert c.execute("SELECT count(*) FROM cron.job").fetchone() == (0,)
        assert c.execute("SELECT count(*) FROM cron.job_run_details").fetchone() == (0,)
    report, out = doctor(monitor, capsys)
    assert report.findings == 1, out
    assert "SECURITY DEFINER functions are missing" in out
    assert f"-f {cron.ROLE_SCRIPT}" in out
    with pytest.raises(Exception, match=r"supabase-monitoring-role\.sql") as failed:
        collect(monitor)
    # the history size (catalog only) is still served with the failure
    served = {f.name for f in failed.value.families}
    assert "runbook_cron_history_size_bytes" in served
    assert "runbook_cron_job_active" not in served

    # the script, twice: it creates what is missing and repeats the grants
    with psycopg.connect(supabase_db) as c:  # hashed client-side, as psql's \password does
        verifier = c.pgconn.encrypt_password(PASSWORD.encode(), ROLE.encode(), b"scram-sha-256")
    for _ in range(2):
        r = run_script(supabase_db, password_scram=verifier.decode())
        assert r.returncode == 0, r.stdout + r.stderr
        assert PASSWORD not in r.stdout + r.stderr
        assert "job_run_details_jobid_runid_idx" in r.stdout  # the index it cannot create
    refused = run_script(supabase_db, password=PASSWORD)
    assert refused.returncode != 0 and "refused" in refused.stdout + refused.stderr

    report, out = doctor(monitor, capsys)
    assert "reads them through runbook_exporter.cron_jobs()" in out, out
    assert report.findings == 1 and "CREATE INDEX CONCURRENTLY" in out  # only the index left
    assert "3 job(s) served" in out

    # EXECUTE taken away: the doctor names the grants
    with psycopg.connect(supabase_db, autocommit=True) as c:
        c.execute(f"REVOKE EXECUTE ON FUNCTION {cron.FUNCTIONS['cron_job_runs']} FROM {ROLE}")
    report, out = doctor(monitor, capsys)
    assert f"GRANT EXECUTE ON FUNCTION {cron.FUNCTIONS['cron_job_runs']}" in out, out
    with pytest.raises(Exception, match="may not execute"):
        collect(monitor)
    r = run_script(supabase_db)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def monitor_scrape(supabase_db: str) -> Iterator[Scrape]:
    """The exporter connected as runbook_monitor after the script."""
    r = run_script(supabase_db)
    assert r.returncode == 0, r.stderr
    target = {"name": "supa", "dsn": as_role(supabase_db, ROLE, PASSWORD)}
    cfg = parse_config(yaml.safe_dump({"targets": [target]}))
    exp = Exporter(cfg)
    srv = HTTPServer(exp, "127.0.0.1:0")
    exp.start()
    srv.start()
    try:
        yield wait_for(
            f"http://127.0.0.1:{srv.port}/metrics",
            lambda s: (
                s.value("runbook_collector_success", collector="cron") == 1
                and s.values("runbook_cron_job_active")
            ),
            timeout=30,
            what="the cron collector as runbook_monitor",
        )
    finally:
        srv.stop()
        exp.stop()


@pytest.mark.slow
def test_the_monitoring_role_sees_every_roles_runs(monitor_scrape: Scrape) -> None:
    v = monitor_scrape.value
    assert v("runbook_cron_jobs", state="active") == 3
    assert v("runbook_cron_job_info", jobname="app-bad", username="app_user") == 1
    assert v("runbook_cron_job_last_run_succeeded", jobname="app-ok") == 1
    assert v("runbook_cron_job_last_run_succeeded", jobname="app-bad") == 0
    assert v("runbook_cron_job_consecutive_failures", jobname="app-bad") >= 1
    assert v("runbook_cron_job_last_run_succeeded", jobname="admin-ok") == 1
    assert "1/0" not in monitor_scrape.text


@pytest.mark.slow
def test_the_role_has_its_grants_and_nothing_more(supabase_db: str) -> None:
    r = run_script(supabase_db)
    assert r.returncode == 0, r.stderr
    with psycopg.connect(supabase_db, autocommit=True) as c:  # a queue created afterwards
        c.execute(
            "CREATE TABLE pgmq.q_sms (LIKE pgmq.q_email INCLUDING ALL);"
            "INSERT INTO pgmq.meta (queue_name, is_partitioned, is_unlogged)"
            " VALUES ('sms', false, false)"
        )
    with psycopg.connect(as_role(supabase_db, ROLE, PASSWORD)) as c:
        assert c.execute("SHOW search_path").fetchone() == ('"$user", public, extensions',)
        assert c.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        for table in ("pgmq.meta", "pgmq.q_email", "pgmq.a_email", "pgmq.q_sms"):
            c.execute(f"SELECT count(*) FROM {table}")
        for table in ("net._http_response", "net.http_request_queue"):
            c.execute(f"SELECT count(*) FROM {table}")
        columns = [
            d.name for d in c.execute("SELECT * FROM runbook_exporter.cron_jobs()").description
        ]
        assert "command" not in columns
        runs = c.execute(
            "SELECT * FROM runbook_exporter.cron_job_runs(ARRAY(SELECT jobid FROM"
            " runbook_exporter.cron_jobs()), 5)"
        )
        assert "return_message" not in [d.name for d in runs.description]
        assert len(runs.fetchall()) >= 3
        for table, privilege in (("pgmq.q_email", "DELETE"), ("cron.job", "UPDATE")):
            allowed = c.execute("SELECT has_table_privilege(%s, %s)", (table, privilege))
            assert allowed.fetchone() == (False,), (table, privilege)
    # not granted to PUBLIC
    with (
        psycopg.connect(as_role(supabase_db, "app_user")) as c,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        c.execute("SELECT * FROM runbook_exporter.cron_jobs()")
