"""The pgqueuer: preset on a real PostgreSQL with pgqueuer's own schema: pgqueuer 1.6.0 (PyPI, the
test extra) and pgqueuer 1.0.0 (the oldest release covered, installed beside it by scripts/setup.sh)
install it with their own command and enqueue, work, retry, hold and abandon the jobs through
their API (tests/pgqueuer_jobs.py); the test then moves the backlog's times 20
minutes back with SQL rather than waiting (the abandoned job's stuck_after is 1 s instead).
Every value is read from a real scrape of the real exporter, and the shipped queue alerts are
evaluated by promtool on it.

Entrypoints are the queues: send_email (40 due for 20 minutes, 3 due in an hour, no worker),
resize_image (5 successful, 1 re-queued by a retry, 1 failed and held), notify (2 successful,
1 raised and deleted), generate_report (1 picked by a queue manager that is gone).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import yaml

from exporter.discover import run_discover
from tests import pgqueuer_jobs, presets
from tests.helpers import Scrape, assert_declared, assert_promtool_clean
from tests.presets import ROLES, roles_of, val


@dataclass(frozen=True)
class Release:
    version: str
    where: Path | None  # the installed copy: None, the test extra's
    found: str  # what the doctor and discover say


RELEASES = [
    Release(
        "1.0.0", pgqueuer_jobs.PGQUEUER_1_0, "pgqueuer 1.0 to 1.3 (attempts column, no slot column)"
    ),
    Release("1.6.0", None, "pgqueuer 1.4 or later (slot column)"),
]


def seed(dsn: str, release: Release | None = None) -> None:
    if release is None:  # the test extra's pgqueuer, in this process
        pgqueuer_jobs.install(dsn)
        pgqueuer_jobs.seed(dsn)
    else:
        pgqueuer_jobs.install_and_seed_with(dsn, release.where)
    with psycopg.connect(dsn, autocommit=True) as c:
        # the backlog has waited 20 minutes
        c.execute(
            "UPDATE pgqueuer SET execute_after = now() - interval '20 minutes',"
            " created = now() - interval '20 minutes'"
            " WHERE entrypoint = 'send_email' AND execute_after <= now()"
        )


# the queue items of the scraped config
ITEMS = (
    {"pgqueuer": "send_email", "thresholds": {"depth_warning": 30}},
    {"pgqueuer": "generate_report", "name": "reports", "stuck_after": "1s"},
    {"pgqueuer": "*", "recent_window": "1h"},
)


@pytest.fixture(scope="module", params=RELEASES, ids=[r.version for r in RELEASES])
def release(request) -> Release:
    return request.param


@pytest.fixture(scope="module")
def pgqueuer_db(pg_server: str, release: Release) -> Iterator[str]:
    from tests.conftest import new_database

    with new_database(pg_server) as dsn:
        seed(dsn, release)
        yield dsn


@pytest.fixture
def pgqueuer_scrape(pgqueuer_db: str, run_exporter) -> Scrape:
    return presets.scrape_when_ready(
        run_exporter,
        presets.preset_config(pgqueuer_db, *ITEMS),
        "notify",
        "a pgqueuer scrape",
        also=lambda s: val(s, "runbook_queue_stuck_jobs", "reports") == 1,
    )


@pytest.mark.slow
def test_pgqueuer_states_in_a_real_scrape(pgqueuer_scrape: Scrape) -> None:
    s = pgqueuer_scrape
    jobs = roles_of(s, ("send_email", "reports", "resize_image", "notify"))
    assert jobs["send_email"] == {
        "pending": 40,
        "scheduled": 3,
        "processing": 0,
        "failed": 0,
        "dead": 0,
    }
    assert jobs["reports"] == {
        "pending": 0,
        "scheduled": 0,
        "processing": 1,
        "failed": 0,
        "dead": 0,
    }
    # re-queued by its retry (attempts 1), and held with status failed
    assert jobs["resize_image"] == {
        "pending": 0,
        "scheduled": 0,
        "processing": 0,
        "failed": 1,
        "dead": 1,
    }
    assert jobs["notify"] == dict.fromkeys(ROLES, 0)  # all finished: found by "*" in the log
    assert 1200 <= val(s, "runbook_queue_oldest_pending_age_seconds", "send_email") < 1300
    assert val(s, "runbook_queue_stuck_jobs", "reports") == 1
    assert val(s, "runbook_queue_stuck_jobs", "send_email") == 0
    assert val(s, "runbook_queue_retries_exhausted_jobs", "resize_image") == 1
    # from the log: successful; exception, failed and a retried attempt
    recent = {
        q: {o: val(s, "runbook_queue_recent_jobs", q, outcome=o) for o in ("completed", "failed")}
        for q in ("send_email", "resize_image", "notify")
    }
    assert recent == {
        "send_email": {"completed": 0, "failed": 0},
        "resize_image": {"completed": 5, "failed": 2},
        "notify": {"completed": 2, "failed": 1},
    }
    assert not s.labelsets("runbook_queue_jobs_estimated")  # not estimated (docs/queues.md)
    ups = presets.ups(s)
    assert ups == {"send_email": 1, "reports": 1, "resize_image": 1, "notify": 1}
    assert s.value("runbook_queue_recent_window_seconds", queue="notify") == 3600
    assert_declared(s.families)
    assert_promtool_clean(s.text)


@pytest.mark.slow
def test_queue_alerts_fire_in_promtool_on_the_pgqueuer_scrape(
    pgqueuer_scrape: Scrape, tmp_path
) -> None:
    firing = [
        ("QueueBacklogHigh", "warning", "send_email"),  # 40 pending > 30
        ("QueueOldestPendingTooOld", "warning", "send_email"),  # 20 min > 15 min
        ("QueueWorkerStalled", "warning", "send_email"),  # due, and no worker finishes any
        ("QueueWorkerStalled", "critical", "send_email"),
        ("QueueJobsStuck", "warning", "reports"),  # its queue manager is gone
        ("QueueRetriesExhausted", "warning", "resize_image"),  # held with status failed
        ("QueueFailureRatioHigh", "warning", "resize_image"),  # 2 failed of 7 finished
        ("QueueFailureRatioHigh", "critical", "resize_image"),
        ("QueueFailureRatioHigh", "warning", "notify"),  # 1 of 3
        ("QueueFailureRatioHigh", "critical", "notify"),
    ]
    presets.assert_queue_alerts(pgqueuer_scrape, firing, tmp_path)


def test_pgqueuer_config_shapes_and_errors() -> None:
    one, star = presets.parse_items(
        "      - pgqueuer: send_email\n      - pgqueuer: '*'\n        prefix: billing_\n"
    )
    assert (one.label, one.schema_name, one.prefix) == ("send_email", "public", "")
    assert star.prefix == "billing_" and star.label is None
    presets.assert_config_errors(
        [
            (
                "      - pgqueuer: x\n        prefix: 'a b'\n",
                "targets[0].queues[0].prefix: invalid pgqueuer prefix: lowercase letters",
            ),
            (
                "      - pgqueuer: x\n        max_queues: 3\n",
                'targets[0].queues[0].max_queues: max_queues only applies to pgqueuer: "*"',
            ),
        ]
    )


@pytest.mark.slow
def test_discover_finds_pgqueuer(
    pgqueuer_db: str, release: Release, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "found.yml"
    assert run_discover(pgqueuer_db, "app", str(out)) == 0
    text = out.read_text()
    items = yaml.safe_load(text)["targets"][0]["queues"]
    assert {"pgqueuer": "*"} in items
    # pgqueuer's queue, log, statistics and schedules tables are not hand-rolled queues
    assert not [i for i in items if "table" in i], text
    assert (
        f"# pgqueuer found in schema public: {release.found}; 4 queue(s): "
        "generate_report, notify, resize_image, send_email" in text
    )
    capsys.readouterr()


def test_check_config_says_what_each_preset_item_reads(tmp_path) -> None:
    """--check-config takes both presets' items (graphile-worker's too) and says what each
    reads."""
    out = presets.check_config_out(
        tmp_path,
        "targets:\n  - name: app\n    dsn: 'host=127.0.0.1 dbname=app'\n    queues:\n"
        "      - graphile_worker: send_email\n      - graphile_worker: '*'\n"
        "      - pgqueuer: send_email\n        name: billing_email\n        prefix: billing_\n"
        "      - pgqueuer: '*'\n",
    )
    for line in (
        "queue send_email: graphile-worker task send_email (view graphile_worker.jobs), "
        "stuck after 300s",
        "queue *: every graphile-worker task with jobs in graphile_worker.jobs (at most 50)",
        "queue billing_email: pgqueuer entrypoint send_email (public.billing_pgqueuer)",
        "queue *: every pgqueuer entrypoint of public.pgqueuer (at most 50)",
    ):
        assert line in out, out


# --- doctor ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_doctor_reports_the_version_and_the_log_index(fresh_db: str, capsys) -> None:
    seed(fresh_db)
    cfg = {"targets": [{"name": "app", "dsn": fresh_db, "queues": [{"pgqueuer": "resize_image"}]}]}
    rc, out = presets.doctor_rc(cfg, capsys)
    assert rc == 0, out
    assert "pgqueuer found in schema public: pgqueuer 1.4 or later (slot column)" in out
    assert "ok       public.pgqueuer holds 46 job(s), all unfinished" in out
    assert "1 failed job(s) held for a person" in out
    assert "queue resize_image: the recent query is bounded by an index" in out
    # without the log's created index the recent count reads the whole log: a log of 20,000
    # jobs' history (a small one tells nothing: the planner reads it as it likes), as
    # pgqueuer writes it -- queued, picked, successful per job
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(
            "INSERT INTO pgqueuer_log (created, job_id, status, priority, entrypoint)"
            " SELECT now() - interval '1 day' + g * interval '1 second', 1000 + g / 3,"
            " (ARRAY['queued', 'picked', 'successful'])[1 + g % 3]::pgqueuer_status, 0,"
            " 'archive' FROM generate_series(0, 59999) g"
        )
        c.execute("DROP INDEX pgqueuer_log_created")
        c.execute("ANALYZE pgqueuer_log")
    rc, out = presets.doctor_rc(cfg, capsys)
    assert rc == 1, out
    assert "queue resize_image: no index bounds the recent query" in out
    assert "CREATE INDEX CONCURRENTLY pgqueuer_log_created ON public.pgqueuer_log (created);" in out


@pytest.mark.slow
def test_a_schema_and_a_prefix(fresh_db: str, capsys) -> None:
    """pgqueuer installed with --schema billing --prefix billing_ is read with the same two
    settings."""
    pgqueuer_jobs.install(fresh_db, schema="billing", prefix="billing_")
    item = {"pgqueuer": "*", "schema": "billing", "prefix": "billing_"}
    cfg = {"targets": [{"name": "app", "dsn": fresh_db, "queues": [item]}]}
    rc, out = presets.doctor_rc(cfg, capsys)
    assert rc == 0, out
    assert "ok       pgqueuer found in schema billing: pgqueuer 1.4 or later" in out
    assert "ok       billing.billing_pgqueuer holds 0 job(s), all unfinished" in out
    cfg["targets"][0]["queues"] = [{"pgqueuer": "*", "schema": "billing"}]
    rc, out = presets.doctor_rc(cfg, capsys)
    assert rc == 1, out
    assert 'table "billing.pgqueuer" does not exist' in out


@pytest.mark.slow
def test_pgqueuer_0x_schema_is_refused(fresh_db: str, capsys) -> None:
    """pgqueuer before 1.0 had no attempts column (no retries in the database)."""
    pgqueuer_jobs.install(fresh_db)
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("ALTER TABLE pgqueuer DROP COLUMN attempts")
    cfg = {"targets": [{"name": "app", "dsn": fresh_db, "queues": [{"pgqueuer": "x"}]}]}
    rc, out = presets.doctor_rc(cfg, capsys)
    assert rc == 1, out
    assert "targets[0].queues[0].pgqueuer: unsupported pgqueuer version" in out
    assert "pgqueuer 0.x" in out
    cfg["targets"][0]["queues"] = [{"pgqueuer": "x", "prefix": "other_"}]
    rc, out = presets.doctor_rc(cfg, capsys)
    assert 'table "public.other_pgqueuer" does not exist' in out
