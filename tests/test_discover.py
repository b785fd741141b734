"""`runbook-exporter discover` against real PostgreSQL databases seeded the way apps really
look: runbook 000's jobs table with a dead status and its DLQ table, pgmq queues, pg_cron and
pg_net tables, and tables whose status columns are not job queues. Each configuration it
prints goes through the real `--check-config` (a subprocess) and, where it monitors something,
the real exporter, scraped over HTTP.

Stand-ins, and why: pgmq is not installable here, so its objects (pgmq.meta, pgmq.q_<name>,
pgmq.a_<name>) are created from pgmq's documented schema (pgmq 1.x: meta(queue_name,
is_partitioned, is_unlogged, created_at); q_/a_ tables with msg_id, read_ct, enqueued_at, vt,
message, and archived_at on the archive). pg_cron is not loaded on this PostgreSQL 18 test
server and pg_net is not installed, so cron.job / cron.job_run_details and net._http_response /
net.http_request_queue are created as tables of the extensions' documented shape: discover only
reads the catalog for them (the cron and pgnet engineers test their collectors on the real
extensions). Until the cron and pgnet collectors are merged, the test that needs them
registered drops stand-in collector modules (named cron and pgnet, doing nothing) into a
subprocess, the way tests/test_registry.py adds a source.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from exporter.discover import catalog, output, statuses
from tests.helpers import Scrape, flush_stats
from tests.test_queues import DLQ_TABLE, JOBS_TABLE, add_jobs

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, pre: str = "") -> subprocess.CompletedProcess:
    """`runbook-exporter ARGS` in a new interpreter; `pre` runs first (stand-in sources)."""
    code = f"import sys\n{pre}\nfrom exporter.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def discover(dsn: str, tmp_path: Path, *extra: str, pre: str = "") -> tuple[int, str, str]:
    """Run discover into a file; (exit code, the file's text, stderr)."""
    out = tmp_path / "discovered.yml"
    r = cli("discover", "--dsn", dsn, "--output", str(out), "--force", *extra, pre=pre)
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, out.read_text() if out.exists() else "", r.stderr


def check_config(text: str, tmp_path: Path, pre: str = "") -> subprocess.CompletedProcess:
    f = tmp_path / "check.yml"
    f.write_text(text)
    return cli("--config.file", str(f), "--check-config", pre=pre)


def queues_of(text: str) -> list[dict]:
    return yaml.safe_load(text)["targets"][0].get("queues", [])


def serves(text: str, run_exporter) -> Scrape:
    """Start the real exporter with the text as written and scrape it until the target is up
    and every configured queue is collected (runbook_queue_up 1); every collector the
    configuration switches on runs as a job (its runbook_collector_success series exists)."""
    target = yaml.safe_load(text)["targets"][0]
    name = target["name"]
    labels = [q.get("name") or q.get("pgmq") or q["table"].split(".")[1] for q in queues_of(text)]
    exp = run_exporter(text)

    collectors = list(target.get("collectors", {}))

    def ready(s: Scrape) -> bool:
        return (
            s.value("runbook_target_up", target=name) == 1
            and all(s.value("runbook_queue_up", target=name, queue=q) == 1 for q in labels)
            and all(
                s.value("runbook_collector_success", target=name, collector=c) is not None
                for c in collectors
            )
        )

    return exp.wait_for(ready, what=f"target {name} up, queues {labels}, collectors {collectors}")


# --- seeds ----------------------------------------------------------------------------------


def seed_runbook_jobs(conn: psycopg.Connection) -> None:
    """(a) runbook 000's processing_jobs with every status, a dead one included, a value no
    role takes ('cancelled'), analyzed; its DLQ table; a second queue without statistics
    (values learned from a bounded sample); a third whose status is an enum."""
    conn.execute(JOBS_TABLE)
    conn.execute(DLQ_TABLE)
    for status, n in (("pending", 40), ("processing", 5), ("completed", 300), ("failed", 6)):
        add_jobs(conn, n, status)
    add_jobs(conn, 4, "dead", retry_count=3)
    add_jobs(conn, 3, "cancelled")
    conn.execute("INSERT INTO processing_jobs_dlq (job_id, error) VALUES (1, 'boom'), (2, 'x')")
    conn.execute("ANALYZE processing_jobs")
    conn.execute(
        "CREATE TABLE email_tasks (id bigserial PRIMARY KEY, state varchar(20) NOT NULL,"
        " inserted_at timestamptz NOT NULL DEFAULT now(),"
        " modified_at timestamptz NOT NULL DEFAULT now(), attempts smallint DEFAULT 0)"
        " WITH (autovacuum_enabled = false)"  # no statistics: the sample path
    )
    conn.execute(
        "INSERT INTO email_tasks (state)"
        " SELECT (ARRAY['queued','running','done','error'])[i % 4 + 1]"
        " FROM generate_series(1, 40) i"
    )
    conn.execute(
        "CREATE TYPE webhook_state AS ENUM"
        " ('new', 'in_progress', 'succeeded', 'errored', 'discarded', 'cancelled')"
    )
    conn.execute(
        "CREATE TABLE ops.webhook_jobs (id bigserial PRIMARY KEY,"
        " status webhook_state NOT NULL DEFAULT 'new', created_at timestamptz DEFAULT now(),"
        " updated_at timestamptz DEFAULT now())"
    )


def seed_not_queues(conn: psycopg.Connection) -> None:
    """(d) status columns that are not job queues: must not be configured."""
    conn.execute(
        "CREATE TABLE users (id bigserial PRIMARY KEY, status text NOT NULL,"
        " created_at timestamptz DEFAULT now(), updated_at timestamptz DEFAULT now())"
    )
    conn.execute(
        "INSERT INTO users (status) SELECT (ARRAY['active','inactive','suspended'])[i % 3 + 1]"
        " FROM generate_series(1, 60) i"
    )
    conn.execute(
        "CREATE TABLE orders (id bigserial PRIMARY KEY, status text NOT NULL,"
        " created_at timestamptz DEFAULT now(), updated_at timestamptz DEFAULT now())"
    )
    conn.execute(
        "INSERT INTO orders (status) SELECT"
        " (ARRAY['pending','shipped','delivered','returned'])[i % 4 + 1]"
        " FROM generate_series(1, 60) i"
    )
    conn.execute("ANALYZE users; ANALYZE orders")


def seed_pgmq(conn: psycopg.Connection, names: list[str]) -> None:
    """(b) pgmq's tables as its documentation describes them (no pgmq code: see the module
    docstring), one queue per name, a few messages each."""
    conn.execute(
        "CREATE SCHEMA IF NOT EXISTS pgmq;"
        "CREATE TABLE IF NOT EXISTS pgmq.meta (queue_name varchar UNIQUE NOT NULL,"
        " is_partitioned boolean NOT NULL DEFAULT false,"
        " is_unlogged boolean NOT NULL DEFAULT false,"
        " created_at timestamptz NOT NULL DEFAULT now())"
    )
    for n in names:
        conn.execute(
            f"CREATE TABLE pgmq.q_{n} (msg_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " read_ct int NOT NULL DEFAULT 0, enqueued_at timestamptz NOT NULL DEFAULT now(),"
            " vt timestamptz NOT NULL DEFAULT now(), message jsonb)"
        )
        conn.execute(
            f"CREATE TABLE pgmq.a_{n} (msg_id bigint PRIMARY KEY, read_ct int NOT NULL DEFAULT 0,"
            " enqueued_at timestamptz NOT NULL DEFAULT now(),"
            " archived_at timestamptz NOT NULL DEFAULT now(),"
            " vt timestamptz NOT NULL, message jsonb)"
        )
        conn.execute(f"INSERT INTO pgmq.q_{n} (message) SELECT '{{}}' FROM generate_series(1, 3)")
        conn.execute("INSERT INTO pgmq.meta (queue_name) VALUES (%s)", (n,))


def seed_cron_and_net(conn: psycopg.Connection) -> None:
    """(c) pg_cron's and pg_net's tables of their documented shape (see the module docstring)."""
    conn.execute(
        "CREATE SCHEMA cron;"
        "CREATE TABLE cron.job (jobid bigserial PRIMARY KEY, schedule text NOT NULL,"
        " command text NOT NULL, nodename text NOT NULL DEFAULT 'localhost',"
        " nodeport int NOT NULL DEFAULT 5432, database text NOT NULL DEFAULT current_database(),"
        " username text NOT NULL DEFAULT current_user, active boolean NOT NULL DEFAULT true,"
        " jobname text);"
        "CREATE TABLE cron.job_run_details (jobid bigint, runid bigserial PRIMARY KEY,"
        " job_pid int, database text, username text, command text, status text,"
        " return_message text, start_time timestamptz, end_time timestamptz);"
        "INSERT INTO cron.job (schedule, command, jobname) VALUES ('*/5 * * * *', 'SELECT 1',"
        " 'purge');"
        "CREATE SCHEMA net;"
        "CREATE TABLE net.http_request_queue (id bigserial, method text NOT NULL,"
        " url text NOT NULL, headers jsonb, body bytea, timeout_milliseconds int NOT NULL);"
        "CREATE TABLE net._http_response (id bigint, status_code int, content_type text,"
        " headers jsonb, content text, timed_out boolean, error_msg text,"
        " created timestamptz NOT NULL DEFAULT now())"
    )


@pytest.fixture
def jobs_db(fresh_db: str) -> str:
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("CREATE SCHEMA ops")
        seed_runbook_jobs(c)
        seed_not_queues(c)
    return fresh_db


# --- a runbook-style jobs table -------------------------------------------------------------


@pytest.mark.slow
def test_jobs_tables_become_table_queues_with_their_dead_status(jobs_db, tmp_path):
    rc, text, err = discover(jobs_db, tmp_path, "--name", "app")
    assert rc == 0, err
    queues = {q["table"]: q for q in queues_of(text)}
    # (d) users (active/inactive/suspended) and orders (pending/shipped/...) are not queues
    assert sorted(queues) == ["ops.webhook_jobs", "public.email_tasks", "public.processing_jobs"]
    assert queues["public.processing_jobs"] == {
        "table": "public.processing_jobs",
        "status_column": "status",
        "statuses": {
            "pending": ["pending"],
            "processing": ["processing"],
            "completed": ["completed"],
            "failed": ["failed"],
            "dead": ["dead"],  # what a user had to know to configure before
        },
        "created_at_column": "created_at",
        "updated_at_column": "updated_at",
        "retry_count_column": "retry_count",
        "dead_letter_table": "public.processing_jobs_dlq",
    }
    # the sample path (no statistics): other names for the roles and columns
    assert queues["public.email_tasks"] == {
        "table": "public.email_tasks",
        "status_column": "state",
        "statuses": {
            "pending": ["queued"],
            "processing": ["running"],
            "completed": ["done"],
            "failed": ["error"],
            "dead": [],
        },
        "created_at_column": "inserted_at",
        "updated_at_column": "modified_at",
        "retry_count_column": "attempts",
    }
    # the enum path: every label known, 'cancelled' deliberately left unmapped
    assert queues["ops.webhook_jobs"]["statuses"] == {
        "pending": ["new"],
        "processing": ["in_progress"],
        "completed": ["succeeded"],
        "failed": ["errored"],
        "dead": ["discarded"],
    }
    assert queues["ops.webhook_jobs"]["retry_count_column"] is None
    # the comments say where the values came from and what was left out
    assert "status values from planner statistics" in text
    assert "a sample of 10000 rows (the table has no statistics yet)" in text
    assert "the labels of enum webhook_state" in text
    assert "not mapped, so not counted" in text and "'cancelled' (a deliberate stop" in text
    assert "dead_letter_table: public.processing_jobs_dlq  # inferred from its name" in text
    # the doctor's index advice, as comments and on stderr
    fix = (
        "CREATE INDEX CONCURRENTLY processing_jobs_failed_idx ON public.processing_jobs"
        " (status, retry_count) WHERE status IN ('failed', 'dead');"
    )
    assert any(line.startswith("#") and line.endswith(fix) for line in text.splitlines()), text
    assert fix in err
    assert "discover: wrote the configuration" in err and "3 item(s) to monitor" in err


@pytest.mark.slow
def test_jobs_config_round_trips_through_check_config_and_a_scrape(jobs_db, tmp_path, run_exporter):
    rc, text, err = discover(jobs_db, tmp_path)
    assert rc == 0, err
    checked = check_config(text, tmp_path)
    assert checked.returncode == 0, checked.stderr
    name = conninfo_to_dict(jobs_db)["dbname"]  # the target is named after the database
    assert f"target {name} (" in checked.stdout
    assert "queue processing_jobs: table public.processing_jobs" in checked.stdout

    exp = run_exporter(text)

    def jobs(s, queue, status):
        return s.value("runbook_queue_jobs", target=name, queue=queue, status=status)

    s = exp.wait_for(lambda s: jobs(s, "processing_jobs", "dead") == 4, what="dead jobs")
    assert s.value("runbook_queue_up", target=name, queue="processing_jobs") == 1
    assert jobs(s, "processing_jobs", "pending") == 40
    # dead-status rows plus the DLQ table's rows
    assert s.value("runbook_queue_dead_letter_jobs", target=name, queue="processing_jobs") == 6
    assert jobs(s, "email_tasks", "pending") == 10 and jobs(s, "email_tasks", "failed") == 10
    assert s.value("runbook_queue_up", target=name, queue="webhook_jobs") == 1


@pytest.mark.slow
def test_sampling_a_table_without_statistics_reads_a_bounded_number_of_rows(fresh_db, tmp_path):
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(
            "CREATE TABLE big_jobs (id bigserial, status text, created_at timestamptz,"
            " updated_at timestamptz) WITH (autovacuum_enabled = false)"
        )
        c.execute(
            "INSERT INTO big_jobs (status, created_at, updated_at)"
            " SELECT (ARRAY['pending','running','done'])[i % 3 + 1], now(), now()"
            " FROM generate_series(1, 100000) i"
        )
        before = c.execute(
            "SELECT seq_tup_read FROM pg_stat_user_tables WHERE relname = 'big_jobs'"
        ).fetchone()[0]
        rc, text, err = discover(fresh_db, tmp_path)
        assert rc == 0, err
        flush_stats(c)
        after = c.execute(
            "SELECT seq_tup_read FROM pg_stat_user_tables WHERE relname = 'big_jobs'"
        ).fetchone()[0]
    assert [q["table"] for q in queues_of(text)] == ["public.big_jobs"]
    # the sample's LIMIT 10000 (the doctor only EXPLAINs): not the table's 100,000 rows
    assert 0 < after - before <= catalog.SAMPLE_ROWS, (before, after)


# --- pgmq ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_pgmq_queues_become_pgmq_items_with_their_dead_letter_queue(
    fresh_db, tmp_path, run_exporter
):
    with psycopg.connect(fresh_db, autocommit=True) as c:
        seed_pgmq(c, ["email", "email_dlq", "reports"])
    rc, text, err = discover(fresh_db, tmp_path)
    items = [{"pgmq": "email", "dead_letter_queue": "email_dlq"}, {"pgmq": "reports"}]
    found = catalog.PgmqQueues(["email", "email_dlq", "reports"], {"email": "email_dlq"}, False, [])
    assert output.pgmq_items(found) == items
    shape = [
        "- pgmq: email",
        "  dead_letter_queue: email_dlq  # inferred from its name",
        "- pgmq: reports",
    ]
    assert "pgmq: 3 queue(s) in pgmq.meta: email, email_dlq, reports" in text
    checked = check_config(text, tmp_path)
    assert checked.returncode == 0, checked.stderr
    if output.accepts_pgmq():  # the pgmq queue kind is merged: the items are live configuration
        assert rc == 0, err
        assert queues_of(text) == items
        for line in shape:
            assert f"\n      {line}\n" in text, text
    else:  # not yet: the same items, commented out, and nothing to monitor
        assert rc == 1, err
        assert queues_of(text) == []
        for line in shape:
            assert f"\n      # {line}\n" in text, text
        assert "cannot monitor pgmq queues yet" in text
        assert "1 left as comments" not in err and "2 left as comments" in err
    serves(text, run_exporter)


@pytest.mark.slow
def test_many_pgmq_queues_become_one_wildcard_item(fresh_db, tmp_path):
    names = [f"q{i:02d}" for i in range(catalog.PGMQ_NAMED_MAX + 1)]
    with psycopg.connect(fresh_db, autocommit=True) as c:
        seed_pgmq(c, names)
    rc, text, err = discover(fresh_db, tmp_path)
    assert "pgmq: 21 queue(s) in pgmq.meta" in text
    wildcard = ['- pgmq: "*"', "  max_queues: 21"]
    if output.accepts_pgmq():
        assert rc == 0, err
        assert queues_of(text) == [{"pgmq": "*", "max_queues": 21}]
    else:
        assert rc == 1, err
        for line in wildcard:
            assert f"\n      # {line}\n" in text, text


# --- pg_cron and pg_net -------------------------------------------------------------------

STAND_IN = """
from exporter.sources import Collector


class StandIn(Collector):  # a stand-in until the real collector is merged: collects nothing
    name = {name!r}

    async def collect(self, conn):
        return []
"""


def stand_ins(tmp_path: Path) -> str:
    """Code that registers stand-in cron and pgnet collectors (only those not registered yet)
    in a subprocess, as tests/test_registry.py adds a source."""
    where = tmp_path / "standins"
    where.mkdir()
    for name in ("cron", "pgnet"):
        if not output.has_collector(name):
            (where / f"{name}.py").write_text(STAND_IN.format(name=name))
    return f"import exporter.collectors\nexporter.collectors.__path__.append({str(where)!r})"


@pytest.mark.slow
def test_cron_and_pgnet_switch_their_collectors_on_once_the_exporter_has_them(fresh_db, tmp_path):
    with psycopg.connect(fresh_db, autocommit=True) as c:
        seed_cron_and_net(c)
    pre = stand_ins(tmp_path)
    rc, text, err = discover(fresh_db, tmp_path, pre=pre)
    assert rc == 0, err
    target = yaml.safe_load(text)["targets"][0]
    assert target["collectors"] == {"cron": {"enabled": True}, "pgnet": {"enabled": True}}
    assert "pg_cron: cron.job, cron.job_run_details found" in text
    assert "pg_net: net._http_response, net.http_request_queue found" in text
    checked = check_config(text, tmp_path, pre=pre)
    assert checked.returncode == 0, checked.stderr
    assert "collector cron: every 15s" in checked.stdout
    assert "collector pgnet: every 15s" in checked.stdout


@pytest.mark.slow
def test_cron_and_pgnet_are_comments_while_the_exporter_lacks_them(
    fresh_db, tmp_path, run_exporter
):
    with psycopg.connect(fresh_db, autocommit=True) as c:
        seed_cron_and_net(c)
    rc, text, err = discover(fresh_db, tmp_path)
    checked = check_config(text, tmp_path)
    assert checked.returncode == 0, checked.stderr
    missing = [n for n in ("cron", "pgnet") if not output.has_collector(n)]
    for name in missing:
        assert f"# {name} collector yet. A version that has one takes:" in text
        assert f"# collectors: {{{name}: {{enabled: true}}}}" in text
    collectors = yaml.safe_load(text)["targets"][0].get("collectors", {})
    assert sorted(collectors) == sorted({"cron", "pgnet"} - set(missing))
    assert rc == (1 if len(missing) == 2 else 0), err
    serves(text, run_exporter)


# --- nothing found, errors, secrets -------------------------------------------------------


@pytest.mark.slow
def test_an_empty_database_gives_a_valid_config_and_exit_1(fresh_db, tmp_path, run_exporter):
    rc, text, err = discover(fresh_db, tmp_path)
    assert rc == 1, err
    assert "queues" not in yaml.safe_load(text)["targets"][0]
    assert check_config(text, tmp_path).returncode == 0
    # the doctor's target checks: pg_stat_statements is installed and loaded (conftest)
    assert "pg_stat_statements" in text and "is installed and loaded" in text
    assert "0 item(s) to monitor" in err
    serves(text, run_exporter)  # the database-health collectors


@pytest.mark.slow
def test_the_password_is_never_printed(jobs_db, tmp_path):
    secret = "Sekr3t-pw-4242"
    params = conninfo_to_dict(jobs_db)
    with_password = make_conninfo("", **params, password=secret)  # trust auth ignores it
    r = cli("discover", "--dsn", with_password)
    assert r.returncode == 0, r.stderr
    assert secret not in r.stdout + r.stderr
    target = yaml.safe_load(r.stdout)["targets"][0]
    assert target["password_env"] == "RUNBOOK_DB_PASSWORD"
    assert "password" not in conninfo_to_dict(target["dsn"])
    assert conninfo_to_dict(target["dsn"]) == params  # the rest of the DSN is kept
    assert "the DSN given had a password: it is not written here" in r.stdout
    uri = f"postgresql://{params['user']}:{secret}@{params['host']}:{params['port']}/x"
    refused = cli("discover", "--dsn", uri)  # no such database: a connection error
    assert refused.returncode == 2
    assert secret not in refused.stdout + refused.stderr and refused.stdout == ""
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot connect to "), lines
    assert "Traceback" not in refused.stderr


@pytest.mark.slow
def test_bad_options_exit_2_with_one_line(tmp_path, fresh_db):
    r = cli("discover", "--dsn", "this is not a dsn password=Sekr3t-pw")
    assert r.returncode == 2 and "Sekr3t" not in r.stderr
    assert r.stderr.startswith("error: --dsn: the DSN cannot be parsed"), r.stderr
    r = cli("discover", "--dsn", fresh_db, "--name", "9 bad")
    assert r.returncode == 2 and "--name" in r.stderr
    existing = tmp_path / "exists.yml"
    existing.write_text("keep me")
    r = cli("discover", "--dsn", fresh_db, "--output", str(existing))
    assert r.returncode == 2 and "--force" in r.stderr
    assert existing.read_text() == "keep me"
    closed = make_conninfo(fresh_db, port=str(free_port()), connect_timeout="2")
    r = cli("discover", "--dsn", closed)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


def free_port() -> int:
    from exporter.demo.pgserver import free_port as port

    return port()


# --- the pure parts -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "role"),
    [
        ("Pending", "pending"),
        ("in-progress", "processing"),
        ("In Progress", "processing"),
        ("succeeded", "completed"),
        ("retrying", "failed"),
        ("dead_letter", "dead"),
        ("discarded", "dead"),
        ("cancelled", None),  # decided: a deliberate stop is no role (see ROLE_WORDS)
        ("shipped", None),
    ],
)
def test_status_values_map_to_roles(value, role):
    assert statuses.role_of(value) == role


def test_job_like_needs_a_pending_value_and_other_roles():
    def like(values, table="things"):
        return statuses.job_like(*statuses.map_values(values), table)

    assert like(["pending", "running", "done"])
    assert like(["queued", "done"], table="email_jobs")  # two roles, and a queue-like name
    assert not like(["queued", "done"])
    assert not like(["active", "inactive", "banned"])  # no pending value
    assert not like(["pending", "shipped", "delivered", "returned"])
    assert not like(["pending", "done", "failed", "a", "b", "c", "d"])  # mostly unknown


@pytest.mark.parametrize(
    ("name", "base"),
    [("jobs_dlq", "jobs"), ("dead_letter_jobs", "jobs"), ("email_dead", "email"), ("jobs", None)],
)
def test_dead_letter_names(name, base):
    assert statuses.dlq_base(name) == base


@pytest.mark.parametrize(
    "value", ["plain", "yes", "null", "a b", "x: y", "#c", "'q'", '"d"', "é", "tab\there", "\x85"]
)
def test_scalars_read_back_as_written(value):
    assert yaml.safe_load(f"k: {output.scalar(value)}") == {"k": value}


def test_database_text_in_comments_stays_on_one_line():
    w = output.Writer()
    w.comment(0, "a table named x\ny: 1")
    assert w.text() == "# a table named x\\x0ay: 1\n"


@pytest.mark.slow
def test_a_discovered_status_value_needing_quotes_round_trips(fresh_db, tmp_path, run_exporter):
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(
            "CREATE TABLE job_queue (status text CHECK (status IN"
            " ('pending', 'in progress', 'done', 'null', 'it''s odd')),"
            " created_at timestamptz, updated_at timestamptz)"
        )
    rc, text, err = discover(fresh_db, tmp_path)
    assert rc == 0, err
    (q,) = queues_of(text)
    # the CHECK constraint gives the complete set: no default names assumed
    assert q["statuses"] == {
        "pending": ["pending"],
        "processing": ["in progress"],
        "completed": ["done"],
        "dead": [],
    }
    assert "its CHECK constraint" in text and "'null', \"it's odd\"" in text
    assert check_config(text, tmp_path).returncode == 0
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("INSERT INTO job_queue VALUES ('in progress', now(), now())")
    s = serves(text, run_exporter)
    assert s.value("runbook_queue_jobs", queue="job_queue", status="processing") == 1


@pytest.mark.slow
def test_missing_privileges_are_said_with_the_statements_that_grant_them(fresh_db, tmp_path):
    role = f"discoverer_{conninfo_to_dict(fresh_db)['dbname']}"
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(JOBS_TABLE)  # text status: its values are hidden from a role without SELECT
        add_jobs(c, 5, "pending")
        c.execute("ANALYZE processing_jobs")
        c.execute("CREATE TYPE notify_state AS ENUM ('queued', 'sending', 'sent', 'failed')")
        c.execute(  # an enum: its labels are in the catalog, readable by anyone
            "CREATE TABLE notify_jobs (status notify_state, created_at timestamptz,"
            " updated_at timestamptz)"
        )
        c.execute(f"CREATE ROLE {role} LOGIN")  # no pg_monitor, no SELECT
    try:
        rc, text, err = discover(make_conninfo(fresh_db, user=role), tmp_path)
        assert rc == 0, err
        assert [q["table"] for q in queues_of(text)] == ["public.notify_jobs"]
        for statement in (
            f"GRANT pg_monitor TO {role};",
            f"GRANT SELECT ON public.processing_jobs TO {role};",
            f"GRANT SELECT ON public.notify_jobs TO {role};",
        ):
            assert statement in err
            assert any(ln.startswith("#") and ln.endswith(statement) for ln in text.splitlines())
        assert "public.processing_jobs has a status column (status) and timestamps" in text
        assert 'permission denied: cannot SELECT from "public.notify_jobs"' in text
        assert check_config(text, tmp_path).returncode == 0
    finally:
        with psycopg.connect(fresh_db, autocommit=True) as c:
            c.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")


@pytest.mark.slow
def test_same_table_names_in_two_schemas_get_their_own_labels(fresh_db, tmp_path, run_exporter):
    with psycopg.connect(fresh_db, autocommit=True) as c:
        for schema in ("billing", "mail"):
            c.execute(
                f"CREATE SCHEMA {schema}; CREATE TABLE {schema}.jobs (state text,"
                " attempts int, created_at timestamptz, updated_at timestamptz);"
                f"INSERT INTO {schema}.jobs SELECT (ARRAY['pending','running','done'])[i % 3 + 1],"
                " 0, now(), now() FROM generate_series(1, 30) i;"
                f"ANALYZE {schema}.jobs"
            )
        c.execute("CREATE TABLE mail.dead_letter_jobs (id int, payload jsonb)")
    rc, text, err = discover(fresh_db, tmp_path)
    assert rc == 0, err
    assert [(q["table"], q["name"], q.get("dead_letter_table")) for q in queues_of(text)] == [
        ("billing.jobs", "billing_jobs", None),
        ("mail.jobs", "mail_jobs", "mail.dead_letter_jobs"),
    ]
    assert check_config(text, tmp_path).returncode == 0
    s = serves(text, run_exporter)
    assert s.value("runbook_queue_jobs", queue="mail_jobs", status="pending") == 10


@pytest.mark.slow
def test_pg_stat_statements_missing_in_the_database_is_said_with_its_fix(fresh_db, tmp_path):
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("DROP EXTENSION pg_stat_statements")  # loaded by the server, not created here
    rc, text, err = discover(fresh_db, tmp_path)
    assert rc == 1, err
    said = "pg_stat_statements is not installed in this database"
    fix = "CREATE EXTENSION pg_stat_statements;"
    for out in (text, err):
        assert said in out and fix in out
    assert all(line.startswith("#") for line in text.splitlines() if fix in line)
    assert check_config(text, tmp_path).returncode == 0


@pytest.mark.parametrize(
    ("dsn", "pooler"),
    [
        ("host=db.example.com port=6543 dbname=app user=monitor", "transaction"),
        ("postgresql://monitor@db.example.com:5432/app", None),
    ],
)
def test_port_6543_is_configured_as_a_transaction_pooler(dsn, pooler):
    """Supabase's transaction-mode pooler listens on 6543: the target gets `pooler:
    transaction`, so the exporter sets nothing on the shared session (docs/supabase.md)."""
    found = catalog.Discovery(database="app", user="monitor", version="15.8")
    rendered = output.render(found, dsn, "app", pgmq_live=False)
    target = yaml.safe_load(rendered.text)["targets"][0]
    assert target == rendered.data["targets"][0]
    assert target.get("pooler") == pooler
