"""pgmq queues as a queue source, on a real PostgreSQL: the pgmq objects are made from pgmq's
documented schema (tests/pgmq_schema.py: pgmq 1.13.1), messages are sent, read, archived and
deleted through the pgmq functions as an app does, and every value is read from a real scrape
of the real exporter; the queue alerts are evaluated by promtool on those values."""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from exporter import queuekinds
from exporter.config import LIBRARY_QUEUES, QUEUE_KINDS, ConfigError, parse_config
from exporter.doctor import run_doctor
from exporter.queuekinds.pgmq import MAX_DELETE_SAMPLES, WindowGrowth
from tests import pgmq_schema as pgmq
from tests.helpers import (
    Scrape,
    assert_declared,
    assert_promtool_clean,
    assert_promtool_fires,
    flush_stats,
    scrape_series,
)

ROOT = Path(__file__).resolve().parent.parent


def test_every_queue_kind_of_the_config_has_its_module_and_back() -> None:
    assert set(QUEUE_KINDS) == set(queuekinds.load()) == {"table", "pgmq", *LIBRARY_QUEUES}
    for key, model in QUEUE_KINDS.items():
        assert model.kind == key


def test_pgmq_config_shapes_and_errors() -> None:
    base = "targets:\n  - name: app\n    dsn: 'host=127.0.0.1'\n    queues:\n"
    cfg = parse_config(
        base + "      - pgmq: email\n        dead_letter_queue: email_dlq\n"
        "      - pgmq: '*'\n        max_queues: 5\n        thresholds: {depth_warning: 7}\n"
        "      - table: public.jobs\n"
    )
    email, star, jobs = cfg.targets[0].queues
    assert (email.label, email.max_reads, email.stuck_after, email.completed_by) == (
        "email",
        3,
        1800.0,
        "archive",
    )
    assert star.label is None and star.max_queues == 5 and star.thresholds.depth_warning == 7
    assert jobs.label == "jobs" and jobs._path == "targets[0].queues[2]"
    for items, expected in [
        (
            "      - pgmq: email\n        max_readz: 3\n",
            "targets[0].queues[0].max_readz: unknown key",
        ),
        (
            "      - pgmq: email\n        max_queues: 3\n",
            'targets[0].queues[0].max_queues: max_queues only applies to pgmq: "*"',
        ),
        (
            "      - pgmq: '*'\n        name: x\n",
            "targets[0].queues[0].name: name is for one queue",
        ),
        (
            "      - fifo: x\n",
            "targets[0].queues[0]: a queue needs one of the keys table: or pgmq:",
        ),
        ("      - pgmq: a;b\n", "targets[0].queues[0].pgmq: invalid pgmq queue name 'a;b'"),
        ("      - pgmq: '*'\n      - pgmq: '*'\n", 'give pgmq: "*" at most once per target'),
    ]:
        with pytest.raises(ConfigError) as e:
            parse_config(base + items, "f.yml")
        assert expected in str(e.value), str(e.value)


def test_check_config_takes_the_items_discover_emits(tmp_path) -> None:
    """`- pgmq: <name>` and `- pgmq: "*"` (what `discover` prints) pass --check-config, which
    says what each item collects."""
    path = tmp_path / "c.yml"
    path.write_text(
        "targets:\n  - name: app\n    dsn: 'host=127.0.0.1 dbname=app'\n    queues:\n"
        '      - pgmq: email\n      - pgmq: "*"\n'
    )
    r = subprocess.run(
        [sys.executable, "-m", "exporter", "--config.file", str(path), "--check-config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "queue email: pgmq queue email, stuck after 1800s" in r.stdout
    assert "queue *: every pgmq queue in pgmq.meta (at most 50)" in r.stdout


def test_window_growth_of_the_delete_counter() -> None:
    g = WindowGrowth(60.0)
    assert g.update(0, 100) is None  # nothing to compare with yet
    assert g.update(15, 104) == 4  # a shorter span until a window has passed
    assert g.update(30, 110) == 10
    assert g.update(75, 130) == 26  # newest sample at least 60 s old: t=15 (104)
    assert g.update(95, 130) == 20  # t=30 (110)
    assert g.update(100, 3) is None  # the counter went down (statistics reset): start over
    assert g.update(101, 5) == 2
    many = WindowGrowth(60.0)
    for i in range(100_000):  # every 1 ms: the samples stay bounded
        many.update(i / 1000, float(i))
    assert len(many.samples) <= MAX_DELETE_SAMPLES + 2


# --- a real database with pgmq queues in trouble --------------------------------------------


def seed(dsn: str) -> None:
    """email: 5 archived, 2 poison (read 5 times), 3 stuck (read an hour ago, still held),
    60 waiting for 20 minutes, 4 sent with a delay, 2 dead letters in email_dlq.
    Reports (mixed case, partitioned): 2 waiting, 1 being processed, nothing finished.
    deleter (completed_by: delete): 6 messages. misc_a (unlogged, before pgmq 1.10: no
    last_read_at) and misc_b: only for pgmq: "*"."""
    with psycopg.connect(dsn, autocommit=True) as c:
        pgmq.install(c)
        pgmq.create_queue(c, "email")
        pgmq.create_queue(c, "email_dlq")
        pgmq.create_queue(c, "Reports", partitioned=True)
        pgmq.create_queue(c, "deleter")
        pgmq.create_queue(c, "misc_a", unlogged=True, last_read_at=False)
        pgmq.create_queue(c, "misc_b")

        done = pgmq.send(c, "email", 5)
        assert pgmq.read(c, "email", 30, 5) == done
        for msg in done:
            assert c.execute("SELECT pgmq.archive('email', %s)", (msg,)).fetchone() == (True,)
        stuck = pgmq.send(c, "email", 3)
        assert pgmq.read(c, "email", 7200, 3) == stuck
        c.execute(
            "UPDATE pgmq.q_email SET last_read_at = now() - interval '1 hour'"
            " WHERE msg_id = ANY(%s)",
            (stuck,),
        )
        poison = pgmq.send(c, "email", 2)
        for _ in range(5):  # vt 0: visible again at once, read again
            assert pgmq.read(c, "email", 0, 2) == poison
        backlog = pgmq.send(c, "email", 60)
        c.execute(
            "UPDATE pgmq.q_email SET enqueued_at = now() - interval '20 minutes'"
            " WHERE msg_id = ANY(%s)",
            (backlog,),
        )
        pgmq.send(c, "email", 4, delay=3600)
        pgmq.send(c, "email_dlq", 2)
        c.execute("ANALYZE pgmq.a_email")

        pgmq.send(c, "Reports", 3)
        assert len(pgmq.read(c, "Reports", 600, 1)) == 1

        pgmq.send(c, "deleter", 6)
        pgmq.send(c, "misc_a", 1)
        pgmq.read(c, "misc_a", 7200, 1)  # invisible for 2 h > stuck_after: stuck by vt
        pgmq.send(c, "misc_b", 1)


def config(dsn: str) -> dict:
    return {
        "targets": [
            {
                "name": "app",
                "dsn": dsn,
                "collect_interval": "1s",
                "queues": [
                    {"pgmq": "email", "dead_letter_queue": "email_dlq"},
                    {"pgmq": "Reports", "name": "reports"},
                    {"pgmq": "deleter", "completed_by": "delete", "recent_window": "1m"},
                    {"pgmq": "*", "max_queues": 1, "thresholds": {"depth_warning": 7}},
                ],
            }
        ]
    }


def val(s: Scrape, name: str, queue: str, **labels: str) -> float | None:
    return s.value(name, target="app", queue=queue, **labels)


@pytest.fixture
def pgmq_scrape(fresh_db: str, run_exporter, caplog) -> Iterator[tuple[Scrape, str, object]]:
    seed(fresh_db)
    caplog.set_level(logging.WARNING, logger="exporter.queuekinds.pgmq")
    ex = run_exporter(config(fresh_db))
    s = ex.wait_for(
        lambda s: (
            s.value("runbook_collector_success", target="app", collector="queues") == 1
            and val(s, "runbook_queue_jobs", "misc_a", status="processing") is not None
        ),
        what="a pgmq scrape",
    )
    yield s, fresh_db, ex


def test_pgmq_roles_in_a_real_scrape(pgmq_scrape, caplog) -> None:
    s, _, _ = pgmq_scrape
    jobs = {
        q: {
            st: val(s, "runbook_queue_jobs", q, status=st)
            for st in ("pending", "processing", "failed", "scheduled")
        }
        for q in ("email", "reports", "deleter", "misc_a")
    }
    assert jobs["email"] == {"pending": 60, "processing": 3, "failed": 2, "scheduled": 4}
    assert jobs["reports"] == {"pending": 2, "processing": 1, "failed": 0, "scheduled": 0}
    assert jobs["deleter"] == {"pending": 6, "processing": 0, "failed": 0, "scheduled": 0}
    assert jobs["misc_a"] == {"pending": 0, "processing": 1, "failed": 0, "scheduled": 0}
    # the 60 waiting since 20 minutes; the poison messages (read before) are not pending
    assert 1200 <= val(s, "runbook_queue_oldest_pending_age_seconds", "email") < 1300
    assert val(s, "runbook_queue_stuck_jobs", "email") == 3
    assert val(s, "runbook_queue_stuck_jobs", "misc_a") == 1  # by vt: no last_read_at
    assert val(s, "runbook_queue_retries_exhausted_jobs", "email") == 2
    assert val(s, "runbook_queue_dead_letter_jobs", "email") == 2
    assert val(s, "runbook_queue_dead_letter_jobs", "reports") is None  # no DLQ configured
    # finished within the window: 5 archived; failed: the 2 poison messages visible again
    # after a read, and the 2 dead letters sent within it
    assert val(s, "runbook_queue_recent_jobs", "email", outcome="completed") == 5
    assert val(s, "runbook_queue_recent_jobs", "email", outcome="failed") == 4
    assert val(s, "runbook_queue_jobs_estimated", "email", status="completed") == 5
    assert val(s, "runbook_queue_recent_jobs", "reports", outcome="completed") == 0
    # pgmq: "*": one queue (max_queues 1) of misc_a and misc_b; email_dlq is a DLQ, Reports,
    # email and deleter are configured by name
    ups = {ls["queue"]: s.value("runbook_queue_up", **ls) for ls in s.labelsets("runbook_queue_up")}
    assert ups == {"email": 1, "reports": 1, "deleter": 1, "misc_a": 1}
    logged = caplog.get_records("setup")  # the exporter started in the fixture
    assert [r.left_out for r in logged if hasattr(r, "left_out")] == [1]
    # the wildcard's queues get their threshold series from the wildcard's settings
    assert s.value("runbook_queue_depth_threshold", queue="misc_a", severity="warning") == 7
    assert s.value("runbook_queue_depth_threshold", queue="email", severity="warning") == 50
    assert s.value("runbook_queue_max_retries", queue="misc_a") == 3
    assert_declared(s.families)
    assert_promtool_clean(s.text)


def test_delete_counts_as_completed_with_completed_by_delete(pgmq_scrape) -> None:
    s, dsn, ex = pgmq_scrape
    # nothing to compare with on the first run: no recent series rather than a false 0
    before = val(s, "runbook_queue_recent_jobs", "deleter", outcome="completed")
    assert before in (None, 0)
    with psycopg.connect(dsn, autocommit=True) as c:
        ids = pgmq.read(c, "deleter", 30, 4)
        for msg in ids:
            assert c.execute("SELECT pgmq.delete('deleter', %s)", (msg,)).fetchone() == (True,)
        flush_stats(c)
    s = ex.wait_for(
        lambda s: val(s, "runbook_queue_recent_jobs", "deleter", outcome="completed") == 4,
        what="4 deletes counted as completed",
    )
    assert val(s, "runbook_queue_jobs", "deleter", status="pending") == 2


FIRING = 'count by (alertname, severity, queue) (ALERTS{alertstate="firing"})'


def test_queue_alerts_fire_in_promtool_on_the_pgmq_scrape(pgmq_scrape, tmp_path) -> None:
    """Every runbook_queue_* series of the scrape as promtool input (constant for an hour; the
    dead-letter count grows from 0, as it did when the letters arrived), and the shipped queue
    rules evaluated on them: exactly the alerts the incidents call for fire."""
    s, _, _ = pgmq_scrape

    def held(smp) -> str:
        grow = smp.name == "runbook_queue_dead_letter_jobs"
        return f"0x10 {smp.value:g}x50" if grow else f"{smp.value:g}x60"

    firing = [
        ("QueueBacklogHigh", "warning", "email"),  # 60 pending > 50
        ("QueueOldestPendingTooOld", "warning", "email"),  # 20 min > 15 min
        ("QueueJobsStuck", "warning", "email"),  # read an hour ago, still held
        ("QueueJobsStuck", "warning", "misc_a"),
        ("QueueRetriesExhausted", "warning", "email"),  # read 5 times > max_reads 3
        ("QueueDeadLetterGrowing", "warning", "email"),
        ("QueueFailureRatioHigh", "warning", "email"),  # 4 failed of 9 finished
        ("QueueFailureRatioHigh", "critical", "email"),
        ("QueueWorkerStalled", "warning", "reports"),  # waiting, nothing finished
        ("QueueWorkerStalled", "critical", "reports"),
    ]
    assert_promtool_fires(
        [ROOT / "alerts" / "queues.rules.yml"],
        scrape_series(s.samples, "runbook_queue_", held),
        [{"alertname": a, "severity": sev, "queue": q} for a, sev, q in firing],
        "45m",
        tmp_path,
        expr=FIRING,
    )


def queues_error(ex) -> str:
    """The queues collector's last error, from the exporter's store."""
    for key, state in ex.exporter.store.snapshot().items():
        if key[1] == "queues" and state.last is not None:
            return state.last.error or ""
    return ""


def test_a_missing_queue_is_down_alone_and_named_by_its_path(fresh_db, run_exporter) -> None:
    seed(fresh_db)
    cfg = config(fresh_db)
    cfg["targets"][0]["queues"].insert(1, {"pgmq": "nosuch"})
    ex = run_exporter(cfg)
    s = ex.wait_for(
        lambda s: (
            val(s, "runbook_queue_up", "nosuch") == 0 and val(s, "runbook_queue_up", "email") == 1
        ),
        what="the missing queue down, the others up",
    )
    assert s.value("runbook_collector_success", target="app", collector="queues") == 0
    error = queues_error(ex)
    assert 'targets[0].queues[1].pgmq: queue "nosuch" does not exist in pgmq.meta' in error


def test_without_pgmq_the_wildcard_says_so(fresh_db, run_exporter) -> None:
    ex = run_exporter(
        {
            "targets": [
                {
                    "name": "app",
                    "dsn": fresh_db,
                    "collect_interval": "1s",
                    "queues": [{"pgmq": "*"}],
                }
            ]
        }
    )
    s = ex.wait_for(
        lambda s: s.value("runbook_collector_success", target="app", collector="queues") == 0,
        what="the queues run failing",
    )
    assert not s.labelsets("runbook_queue_up")
    error = queues_error(ex)
    assert 'targets[0].queues[0].pgmq: schema "pgmq" does not exist' in error


# --- doctor ---------------------------------------------------------------------------------


def doctor(cfg: dict, capsys) -> tuple[int, str]:
    rc = run_doctor(parse_config(yaml.safe_dump(cfg), "doctor-test.yml"))
    return rc, capsys.readouterr().out


@pytest.fixture
def plain_role(fresh_db: str, pg_server: str) -> Iterator[tuple[str, str]]:
    role, password = f"pgmq_{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    with psycopg.connect(pg_server, autocommit=True) as c:
        c.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    yield role, password
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(f"DROP OWNED BY {role}")
    with psycopg.connect(pg_server, autocommit=True) as c:
        c.execute(f"DROP ROLE {role}")


def test_doctor_without_pgmq_and_with_an_unknown_queue(fresh_db, capsys) -> None:
    cfg = {"targets": [{"name": "app", "dsn": fresh_db, "queues": [{"pgmq": "email"}]}]}
    rc, out = doctor(cfg, capsys)
    assert rc == 1, out
    assert 'FINDING  targets[0].queues[0].pgmq: schema "pgmq" does not exist' in out
    assert "CREATE EXTENSION pgmq;" in out
    seed(fresh_db)
    cfg["targets"][0]["queues"] = [
        {"pgmq": "emial"},
        {"pgmq": "email", "dead_letter_queue": "email_dlq"},
    ]
    rc, out = doctor(cfg, capsys)
    assert rc == 1, out
    assert 'targets[0].queues[0].pgmq: queue "emial" does not exist in pgmq.meta' in out
    assert "ok       pgmq queue email: pgmq.q_email, archive pgmq.a_email" in out
    assert "recent completed: an index on pgmq.a_email (archived_at) bounds it" in out
    assert "dead-letter queue email_dlq holds 2 message(s)" in out
    # without pgmq's archived_at index the recent count reads the whole archive: the doctor
    # prints the index (plain CREATE INDEX on a partitioned archive, where CONCURRENTLY fails)
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute('DROP INDEX pgmq.archived_at_idx_email, pgmq."archived_at_idx_Reports"')
    cfg["targets"][0]["queues"] = [
        {"pgmq": "email"},
        {"pgmq": "Reports"},
        {"pgmq": "deleter", "completed_by": "delete"},
    ]
    rc, out = doctor(cfg, capsys)
    assert rc == 1, out
    assert "CREATE INDEX CONCURRENTLY ON pgmq.a_email (archived_at);" in out
    assert "CREATE INDEX ON pgmq.a_reports (archived_at);" in out
    assert (
        "ok       pgmq queue Reports: pgmq.q_reports, archive pgmq.a_reports (partitioned)" in out
    )
    assert "completed_by: delete: throughput is the growth of the queue table's n_tup_del" in out


def test_doctor_prints_the_grants_a_role_needs(fresh_db, plain_role, capsys, monkeypatch) -> None:
    role, password = plain_role
    seed(fresh_db)
    params = conninfo_to_dict(fresh_db)
    params.pop("password", None)
    params["user"] = role
    monkeypatch.setenv("RUNBOOK_PGMQ_TEST_PW", password)
    cfg = {
        "targets": [
            {
                "name": "app",
                "dsn": make_conninfo("", **params),
                "password_env": "RUNBOOK_PGMQ_TEST_PW",
                "queues": [{"pgmq": "email"}, {"pgmq": "*"}],
            }
        ]
    }
    rc, out = doctor(cfg, capsys)
    assert rc == 1 and password not in out, out
    assert 'targets[0].queues[0].pgmq: permission denied for schema "pgmq"' in out
    assert f"GRANT USAGE ON SCHEMA pgmq TO {role};" in out
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(f"GRANT USAGE ON SCHEMA pgmq TO {role}")
        c.execute(f"GRANT SELECT ON pgmq.meta TO {role}")
    rc, out = doctor(cfg, capsys)
    assert 'targets[0].queues[0].pgmq: permission denied: cannot SELECT from "pgmq.q_email"' in out
    assert f"GRANT SELECT ON pgmq.q_email TO {role};" in out
    assert f"GRANT SELECT ON ALL TABLES IN SCHEMA pgmq TO {role};" in out
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA pgmq TO {role}")
    rc, out = doctor(cfg, capsys)
    assert "permission denied" not in out, out
    assert "pgmq.meta lists 6 queue(s); 5 not configured by name are collected" in out
    assert "has no last_read_at (pgmq before 1.10)" in out
    assert "the queue table is unlogged" in out
