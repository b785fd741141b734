"""`discover` finds the job libraries of the presets: one real database holding pg-boss's schema
(made by pg-boss 10.4.2 itself, tests/queue_libs), Procrastinate's (made by Procrastinate's
schema manager), a hand-rolled jobs table, and what Procrastinate 2.x left in another schema.
The configuration written is served by the real exporter as it is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml

from exporter.discover import run_discover
from tests.helpers import run_queue_lib
from tests.procrastinate_app import seed as seed_procrastinate


@pytest.fixture(scope="module")
def libraries_db(pg_server: str) -> Iterator[str]:
    from tests.conftest import new_database

    with new_database(pg_server) as dsn:
        run_queue_lib(dsn, "pgboss.mjs", "seed", "pgboss")
        seed_procrastinate(dsn)
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(
                "CREATE TABLE public.jobs (id bigserial PRIMARY KEY, status text NOT NULL"
                " CHECK (status IN ('pending', 'processing', 'completed', 'failed')),"
                " created_at timestamptz NOT NULL DEFAULT now(),"
                " updated_at timestamptz NOT NULL DEFAULT now(), retry_count int DEFAULT 0)"
            )
            c.execute("INSERT INTO public.jobs (status) VALUES ('pending')")
            # Procrastinate 2.x: its tables without 3.0's _v1 indexes
            c.execute("CREATE SCHEMA old")
            c.execute(
                "CREATE TABLE old.procrastinate_jobs (id bigserial, queue_name varchar,"
                " status text, created_at timestamptz, updated_at timestamptz)"
            )
            c.execute("CREATE TABLE old.procrastinate_events (id bigserial, job_id bigint)")
        yield dsn


def test_discover_writes_each_library_with_its_version(
    libraries_db, tmp_path: Path, capsys, run_exporter
) -> None:
    out = tmp_path / "found.yml"
    assert run_discover(libraries_db, "app", str(out)) == 0
    text = out.read_text()
    err = capsys.readouterr().err
    items = yaml.safe_load(text)["targets"][0]["queues"]
    assert {"pg_boss": "*"} in items
    assert {"procrastinate": "*"} in items
    # the libraries' own tables are not hand-rolled queues; the real one is
    assert [i["table"] for i in items if "table" in i] == ["public.jobs"]
    assert (
        "# pg-boss found in schema pgboss: schema version 24 (pg-boss 10); 3 queue(s): "
        "emails, idle, reports" in text
    )
    assert "# Procrastinate found in schema public: 3.1 or later (worker heartbeats)" in text
    # Procrastinate's emails and reports are pg-boss's labels already: named apart
    assert {"procrastinate": "emails", "name": "procrastinate_emails"} in items
    assert {"procrastinate": "reports", "name": "procrastinate_reports"} in items
    # the old install: written as a comment, with the reason
    assert "# Procrastinate found in schema old: unsupported Procrastinate version: 2.x" in text
    assert '      # - procrastinate: "*"\n      #   schema: old\n' in text
    # the doctor ran on the libraries too
    assert "pg-boss found in schema pgboss: schema version 24 (pg-boss 10)" in err
    assert "discover: wrote the configuration" in err

    exp = run_exporter(text)
    s = exp.wait_for(
        lambda s: (
            s.value("runbook_queue_jobs", queue="procrastinate_emails", status="pending")
            is not None
            and s.value("runbook_queue_jobs", queue="misc", status="pending") is not None
            and s.value("runbook_queue_jobs", queue="idle", status="pending") is not None
        ),
        what="every discovered queue collected",
    )
    ups = {ls["queue"]: s.value("runbook_queue_up", **ls) for ls in s.labelsets("runbook_queue_up")}
    assert ups == dict.fromkeys(
        [
            "jobs",
            "emails",
            "idle",
            "reports",
            "procrastinate_emails",
            "procrastinate_reports",
            "misc",
        ],
        1,
    )
    assert s.value("runbook_queue_jobs", queue="emails", status="pending") == 60  # pg-boss's
    assert s.value("runbook_queue_jobs", queue="procrastinate_emails", status="pending") == 60
    assert s.value("runbook_collector_success", collector="queues") == 1


def test_two_wildcards_finding_one_queue_name_serve_it_once(libraries_db, run_exporter) -> None:
    """pg-boss and Procrastinate both have an `emails` queue: by hand-written "*" items (not
    discover's, which names them apart) the first item serves it, the second gives way and the
    run's error says so -- never two series of one label set."""
    cfg = {
        "targets": [
            {
                "name": "app",
                "dsn": libraries_db,
                "collect_interval": "1s",
                "queues": [{"pg_boss": "*"}, {"procrastinate": "*"}],
            }
        ]
    }
    ex = run_exporter(cfg)
    s = ex.wait_for(
        lambda s: s.value("runbook_queue_jobs", queue="misc", status="pending") is not None,
        what="both wildcards collected",
    )
    ups = {ls["queue"]: s.value("runbook_queue_up", **ls) for ls in s.labelsets("runbook_queue_up")}
    assert ups == dict.fromkeys(["emails", "idle", "reports", "misc"], 1)
    assert len(s.values("runbook_queue_jobs", queue="emails", status="pending")) == 1
    assert s.value("runbook_collector_success", collector="queues") == 0
    err = next(
        st.last.error
        for key, st in ex.exporter.store.snapshot().items()
        if key[1] == "queues" and st.last is not None
    )
    assert 'targets[0].queues[1]: queue "emails" is also found by an item before it' in err, err
