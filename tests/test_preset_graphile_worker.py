"""The graphile_worker: preset on a real PostgreSQL with graphile-worker's own schema:
graphile-worker 0.16.6, 0.17.3 and 0.18.0 (npm, tests/queue_libs; 0.18 on node 22) run their
migrations and add, work, fail and abandon the jobs through their API
(tests/queue_libs/graphile_worker.mjs); nothing is moved with
SQL (the backlog was added due 20 minutes ago, the abandoned job's stuck_after is 1 s). Every
value is read from a real scrape of the real exporter, which reads only the public
graphile_worker.jobs view; the shipped queue alerts are evaluated by promtool on it.

Task identifiers are the queues: send_email (40 due for 20 minutes, 3 due in an hour),
resize_image (5 completed -- deleted by graphile-worker --, 1 failed and waiting for its retry,
1 failed for good), generate_report (1 locked by a worker that died).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from exporter.discover import run_discover
from tests import presets
from tests.helpers import Scrape, assert_declared, assert_promtool_clean, run_queue_lib
from tests.presets import roles_of, val


@dataclass(frozen=True)
class Release:
    version: str
    package: str  # the copy in tests/queue_libs/node_modules
    node22: bool
    found: str  # what the doctor and discover say


RELEASES = [
    Release("0.16.6", "graphile-worker-16", False, "migration 18 (graphile-worker 0.16)"),
    Release("0.17.3", "graphile-worker", False, "migration 19 (graphile-worker 0.17)"),
    Release("0.18.0", "graphile-worker-18", True, "migration 20 (graphile-worker 0.18)"),
]


def seed(dsn: str, release: Release) -> None:
    out = run_queue_lib(
        dsn,
        "graphile_worker.mjs",
        "seed",
        node22=release.node22,
        env={"GRAPHILE_WORKER_PACKAGE": release.package},
    )
    done = json.loads(out.strip().splitlines()[-1])
    assert done == {
        "pending": 40,
        "scheduled": 3,
        "completed": 5,
        "retrying": 1,
        "failed": 1,
        "locked": 1,
    }


# the queue items of the scraped config
ITEMS = (
    {"graphile_worker": "send_email", "thresholds": {"depth_warning": 30}},
    {"graphile_worker": "generate_report", "name": "reports", "stuck_after": "1s"},
    {"graphile_worker": "*"},
)


@pytest.fixture(scope="module", params=RELEASES, ids=[r.version for r in RELEASES])
def release(request) -> Release:
    return request.param


@pytest.fixture(scope="module")
def worker_db(pg_server: str, release: Release) -> Iterator[str]:
    from tests.conftest import new_database

    with new_database(pg_server) as dsn:
        seed(dsn, release)
        yield dsn


@pytest.fixture
def worker_scrape(worker_db: str, run_exporter) -> Scrape:
    return presets.scrape_when_ready(
        run_exporter,
        presets.preset_config(worker_db, *ITEMS),
        "resize_image",
        "a graphile-worker scrape",
        status="dead",
        also=lambda s: val(s, "runbook_queue_stuck_jobs", "reports") == 1,
    )


@pytest.mark.slow
def test_graphile_worker_states_in_a_real_scrape(worker_scrape: Scrape) -> None:
    s = worker_scrape
    jobs = roles_of(s, ("send_email", "reports", "resize_image"))
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
    # the 5 completed jobs are gone; one waits for its retry, one failed for good
    assert jobs["resize_image"] == {
        "pending": 0,
        "scheduled": 0,
        "processing": 0,
        "failed": 1,
        "dead": 1,
    }
    assert 1200 <= val(s, "runbook_queue_oldest_pending_age_seconds", "send_email") < 1300
    assert val(s, "runbook_queue_oldest_pending_age_seconds", "resize_image") == 0
    assert val(s, "runbook_queue_stuck_jobs", "reports") == 1
    assert val(s, "runbook_queue_stuck_jobs", "send_email") == 0
    assert val(s, "runbook_queue_retries_exhausted_jobs", "resize_image") == 1
    # graphile-worker deletes completed jobs and counts nothing: no throughput is claimed
    assert not s.labelsets("runbook_queue_recent_jobs")
    assert not s.labelsets("runbook_queue_jobs_estimated")
    ups = presets.ups(s)
    # "*" finds the task identifiers of the jobs in the view, less the two named
    assert ups == {"send_email": 1, "reports": 1, "resize_image": 1}
    assert s.value("runbook_queue_stuck_after_seconds", queue="reports") == 1
    assert s.value("runbook_queue_depth_threshold", queue="send_email", severity="warning") == 30
    assert_declared(s.families)
    assert_promtool_clean(s.text)


@pytest.mark.slow
def test_queue_alerts_fire_in_promtool_on_the_graphile_worker_scrape(
    worker_scrape: Scrape, tmp_path
) -> None:
    """The scrape held for an hour and the shipped rules on it: the backlog, its age, the
    abandoned job and the job failed for good fire; with no throughput series, neither
    QueueWorkerStalled nor QueueFailureRatioHigh can (nothing says a job finished or not)."""
    firing = [
        ("QueueBacklogHigh", "warning", "send_email"),  # 40 pending > 30
        ("QueueOldestPendingTooOld", "warning", "send_email"),  # 20 min > 15 min
        ("QueueJobsStuck", "warning", "reports"),  # locked by a worker that died
        ("QueueRetriesExhausted", "warning", "resize_image"),  # attempts = max_attempts
    ]
    presets.assert_queue_alerts(worker_scrape, firing, tmp_path)


def test_graphile_worker_config_shapes_and_errors() -> None:
    one, star = presets.parse_items(
        "      - graphile_worker: send_email\n      - graphile_worker: '*'\n"
    )
    assert (one.label, one.schema_name, one.stuck_after) == ("send_email", "graphile_worker", 300)
    assert star.label is None and star.max_queues == 50
    presets.assert_config_errors(
        [
            (
                "      - graphile_worker: x\n        prefix: a_\n",
                "targets[0].queues[0].prefix: unknown key",
            ),
            (
                "      - graphile_worker: '*'\n        name: x\n",
                "targets[0].queues[0].name: name is for one queue",
            ),
            (
                "      - graphile_worker: x\n        schema: a.b\n",
                "targets[0].queues[0].schema: invalid schema name 'a.b'",
            ),
        ]
    )


@pytest.mark.slow
def test_discover_finds_graphile_worker(
    worker_db: str, release: Release, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "found.yml"
    assert run_discover(worker_db, "app", str(out)) == 0
    text = out.read_text()
    items = yaml.safe_load(text)["targets"][0]["queues"]
    assert {"graphile_worker": "*"} in items
    assert not [i for i in items if "table" in i]  # its tables are not hand-rolled queues
    assert (
        f"# graphile-worker found in schema graphile_worker: {release.found}; 3 queue(s): "
        "generate_report, resize_image, send_email" in text
    )
    capsys.readouterr()


# --- doctor ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_doctor_reports_the_version_and_what_a_scrape_reads(
    worker_db: str, release: Release, capsys
) -> None:
    cfg = {"targets": [{"name": "app", "dsn": worker_db, "queues": [{"graphile_worker": "*"}]}]}
    rc, out = presets.doctor_rc(cfg, capsys)
    assert rc == 0, out
    assert f"graphile-worker found in schema graphile_worker: {release.found}" in out
    assert "ok       graphile_worker.jobs holds 46 job(s), all unfinished" in out
    assert "1 of them failed for good" in out
    assert "_private" not in out  # the private tables are never named


@pytest.mark.slow
def test_the_view_alone_is_enough(worker_db: str, pg_server: str, capsys) -> None:
    """A role granted the public view only (not the private tables, not the migrations
    table) reads every queue: the view reads the private tables with its owner's rights; the
    version is then "0.16 or later"."""
    role, password = f"gw_{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    with psycopg.connect(pg_server, autocommit=True) as c:
        c.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    try:
        with psycopg.connect(worker_db, autocommit=True) as c:
            c.execute(f"GRANT USAGE ON SCHEMA graphile_worker TO {role}")
            c.execute(f"GRANT SELECT ON graphile_worker.jobs TO {role}")
        params = {**conninfo_to_dict(worker_db), "user": role, "password": password}
        dsn = make_conninfo(**params)
        cfg = {"targets": [{"name": "app", "dsn": dsn, "queues": [{"graphile_worker": "*"}]}]}
        _, out = presets.doctor_rc(cfg, capsys)
        assert (
            "ok       graphile-worker found in schema graphile_worker: 0.16 or later (the jobs "
            "view; graphile_worker.migrations is not readable" in out
        ), out
        assert "ok       graphile_worker.jobs holds 46 job(s), all unfinished" in out
        assert "permission denied" not in out
    finally:
        with psycopg.connect(worker_db, autocommit=True) as c:
            c.execute(f"DROP OWNED BY {role}")
        with psycopg.connect(pg_server, autocommit=True) as c:
            c.execute(f"DROP ROLE {role}")


@pytest.mark.slow
def test_graphile_worker_before_0_16_is_refused(fresh_db: str, capsys) -> None:
    """graphile-worker 0.15 and older: `jobs` is its table, not the public view."""
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("CREATE SCHEMA graphile_worker")
        c.execute(
            "CREATE TABLE graphile_worker.jobs (id bigint, task_identifier text,"
            " run_at timestamptz, attempts int, max_attempts int, locked_at timestamptz)"
        )
    cfg = {"targets": [{"name": "app", "dsn": fresh_db, "queues": [{"graphile_worker": "x"}]}]}
    rc, out = presets.doctor_rc(cfg, capsys)
    assert rc == 1, out
    assert (
        "targets[0].queues[0].graphile_worker: unsupported graphile-worker version:"
        ' "graphile_worker.jobs" is a table (graphile-worker 0.15 or older)' in out
    )
    cfg["targets"][0]["queues"] = [{"graphile_worker": "x", "schema": "gw"}]
    rc, out = presets.doctor_rc(cfg, capsys)
    assert 'schema "gw" does not exist' in out
