"""The cron collector on a real pg_cron: Debian's PostgreSQL 15 with postgresql-15-cron
(scripts/setup.sh installs both), jobs really scheduled and run by pg_cron's scheduler.

One server for the module (tests/pg.py pg_cron_server). pg_cron 1.4 (Debian 12) schedules at
most once a minute, so the fixture schedules its jobs, seeds the history pg_cron would have
written earlier (two failed runs before the real one, a nightly job's run two days ago) and
waits for the next minute's real runs: one succeeding, one failing (SELECT 1/0), one still
running (pg_sleep). The schedule parsing and the label rules are tested as pure functions.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
import yaml

from exporter.collectors import cron
from exporter.config import parse_config
from exporter.db import open_connection
from exporter.doctor import Report
from tests.helpers import (
    Scrape,
    assert_promtool_clean,
    assert_promtool_fires,
    scrape_series,
)
from tests.pg import pg_cron_server

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "alerts" / "cron.rules.yml"
UTC_ZONE = ZoneInfo("UTC")

# --- schedules and labels (pure) -----------------------------------------------------------


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("schedule", "after", "expected"),
    [
        ("* * * * *", "2026-11-30 07:42:00", "2026-11-30 07:43:00"),  # strictly after
        ("17 3 * * *", "2026-11-28 03:17:00.4", "2026-11-29 03:17:00"),
        ("*/5 * * * *", "2026-11-30 07:42:10", "2026-11-30 07:45:00"),
        ("@hourly", "2026-11-30 07:42:00", "2026-11-30 08:00:00"),
        ("@daily", "2026-11-30 07:42:00", "2026-12-01 00:00:00"),
        ("0 0 $ * *", "2026-11-30 07:42:00", "2026-12-31 00:00:00"),  # pg_cron: last day
        ("30 seconds", "2026-11-30 07:42:00", "2026-11-30 07:42:30"),  # pg_cron 1.5+
        ("1 second", "2026-11-30 07:42:00", "2026-11-30 07:42:01"),
    ],
)
def test_next_fire(schedule: str, after: str, expected: str) -> None:
    assert cron.next_fire(schedule, at(after), UTC_ZONE) == at(expected)


def test_next_fire_in_cron_timezone() -> None:
    # 03:00 in Berlin (CET, UTC+1 in November) is 02:00 UTC
    got = cron.next_fire("0 3 * * *", at("2026-11-30 00:00:00"), ZoneInfo("Europe/Berlin"))
    assert got is not None and got.astimezone(UTC) == at("2026-11-30 02:00:00")


def test_reboot_never_fires_and_bad_schedules_raise() -> None:
    assert cron.next_fire("@reboot", at("2026-11-30 00:00:00"), UTC_ZONE) is None
    for bad in ("not a schedule", "61 * * * *", "0 seconds", "60 seconds", ""):
        with pytest.raises(cron.ScheduleError, match="cannot parse cron schedule"):
            cron.next_fire(bad, at("2026-11-30 00:00:00"), UTC_ZONE)


def test_overdue_seconds() -> None:
    last = at("2026-11-28 03:17:00.4")  # the nightly run of two days ago
    now = at("2026-11-30 07:42:00")
    # due 2026-11-29 03:17: one day, 4 h 25 min ago
    assert cron.overdue_seconds("17 3 * * *", last, now, UTC_ZONE) == 86400 + 4 * 3600 + 25 * 60
    assert cron.overdue_seconds("* * * * *", at("2026-11-30 07:41:30"), now, UTC_ZONE) == 0
    assert cron.overdue_seconds("@reboot", last, now, UTC_ZONE) is None


def test_unknown_cron_timezone_reads_as_utc_with_a_note() -> None:
    tz, note = cron.cron_timezone("Mars/Olympus")
    assert tz == UTC_ZONE and note and "Mars/Olympus" in note
    assert cron.cron_timezone("GMT") == (ZoneInfo("GMT"), None)


def test_job_labels_fall_back_to_jobid_and_never_collide() -> None:
    rows = [(1, "purge"), (2, None), (3, "refresh"), (4, "refresh"), (5, "")]
    assert cron.job_labels(rows) == ["purge", "2", "refresh#3", "refresh#4", "5"]


def test_settings_per_job_overrides_and_bounds() -> None:
    cfg = parse_config(
        "targets:\n  - name: app\n    dsn: postgresql://m@127.0.0.1/app\n"
        "    collectors:\n      cron:\n        consecutive_failures_critical: 5\n"
        "        jobs: {purge: {overdue_grace: 1h}}\n"
    )
    s = cfg.targets[0].collectors.cron
    purge, other = s.job_thresholds("purge"), s.job_thresholds("other")
    assert (purge.overdue_grace, purge.consecutive_failures_critical) == (3600, 5)
    assert (other.overdue_grace, other.run_duration_warning) == (300, 1800)
    with pytest.raises(Exception, match="max_jobs"):
        parse_config(
            "targets:\n  - name: app\n    dsn: postgresql://m@127.0.0.1/app\n"
            "    collectors: {cron: {max_jobs: 0}}\n"
        )


# --- without pg_cron: quiet ----------------------------------------------------------------


def collect(dsn: str, settings: str = "{}") -> list:
    cfg = parse_config(
        f"targets:\n  - name: app\n    dsn: '{dsn}'\n    collectors: {{cron: {settings}}}\n"
    )
    target = cfg.targets[0]

    async def main() -> list:
        conn = await open_connection(target)
        try:
            return await cron.Cron(target, target.collectors.cron).collect(conn)
        finally:
            await conn.close()

    return asyncio.run(main())


def doctor(dsn: str, capsys: pytest.CaptureFixture[str]) -> tuple[Report, str]:
    cfg = parse_config(f"targets:\n  - name: app\n    dsn: '{dsn}'\n")
    target = cfg.targets[0]
    report = Report()

    async def main() -> None:
        conn = await open_connection(target)
        try:
            await cron.Cron(target, target.collectors.cron).doctor(conn, report)
        finally:
            await conn.close()

    capsys.readouterr()
    asyncio.run(main())
    return report, capsys.readouterr().out


def test_quiet_without_pg_cron(fresh_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert collect(fresh_db) == []
    report, out = doctor(fresh_db, capsys)
    assert report.findings == 0 and "pg_cron is not installed" in out


# --- a real pg_cron --------------------------------------------------------------------------

JOBS = """
SELECT cron.schedule('ok', '* * * * *', 'SELECT 1');
SELECT cron.schedule('bad', '* * * * *', 'SELECT 1/0');
SELECT cron.schedule('slow', '* * * * *', 'SELECT pg_sleep(600)');
SELECT cron.schedule('nightly', '17 3 * * *', 'SELECT 1');
SELECT cron.schedule('paused', '17 3 * * *', 'SELECT 1/0');
SELECT cron.schedule('weird', '17 3 * * *', 'SELECT 1');
SELECT cron.schedule('17 3 * * *', 'SELECT 2');  -- unnamed
SELECT cron.alter_job((SELECT jobid FROM cron.job WHERE jobname = 'paused'), active := false);
"""
# what pg_cron would have written before the test: two failures of `bad` a few minutes ago, the
# nightly job's run two days ago (so yesterday's run is missing), a failure of the paused job
HISTORY = """
INSERT INTO cron.job_run_details (jobid, database, username, command, status, return_message,
                                  start_time, end_time)
SELECT j.jobid, 'postgres', 'postgres', j.command, h.status, h.message, h.started,
       h.started + interval '50 ms'
FROM cron.job j
JOIN (VALUES
  ('bad', 'failed', 'ERROR:  division by zero', now() - interval '3 minutes'),
  ('bad', 'failed', 'ERROR:  division by zero', now() - interval '2 minutes'),
  ('nightly', 'succeeded', 'SELECT 1',
   date_trunc('day', now()) - interval '2 days' + interval '3 hours 17 minutes 0.4 seconds'),
  ('paused', 'failed', 'ERROR:  division by zero', now() - interval '1 day')
) AS h(jobname, status, message, started) ON h.jobname = j.jobname
ORDER BY h.started;
"""


def wait_for_runs(dsn: str, timeout: float = 80) -> None:
    """Until pg_cron's next minute has run ok, bad and slow (bounded)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as c:
        while True:
            got = dict(
                c.execute(
                    "SELECT j.jobname, d.status FROM cron.job j JOIN LATERAL ("
                    " SELECT status FROM cron.job_run_details d WHERE d.jobid = j.jobid"
                    " AND d.start_time > now() - interval '70 seconds'"
                    " ORDER BY runid DESC LIMIT 1) d ON true"
                ).fetchall()
            )
            if got == {"ok": "succeeded", "bad": "failed", "slow": "running"}:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"pg_cron did not run the jobs within {timeout}s: {got}")
            time.sleep(0.5)


@pytest.fixture(scope="module")
def cron_db() -> Iterator[str]:
    """Superuser DSN of the database pg_cron schedules in, after the jobs' first real runs."""
    with pg_cron_server() as dsn:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("CREATE EXTENSION pg_cron")
            c.execute(JOBS)
            # a schedule pg_cron itself would refuse, as an old version or a hand edit leaves it
            c.execute("UPDATE cron.job SET schedule = 'every full moon' WHERE jobname = 'weird'")
            c.execute(HISTORY)
        wait_for_runs(dsn)
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("ANALYZE cron.job_run_details")
        yield dsn


def jobid(dsn: str, name: str | None) -> int:
    with psycopg.connect(dsn) as c:
        row = c.execute(
            "SELECT jobid FROM cron.job WHERE jobname IS NOT DISTINCT FROM %s", (name,)
        ).fetchone()
    assert row is not None
    return row[0]


CONFIG = {
    "collectors": {
        "cron": {
            "interval": "1s",
            "history_rows_warning": 3,
            "jobs": {"slow": {"run_duration_warning": "2s"}},
        }
    }
}


@pytest.fixture(scope="module")
def cron_scrape(cron_db: str) -> Iterator[Scrape]:
    """A scrape of the real exporter once the slow job has run past its 2 s threshold."""
    from exporter.config import parse_config as parse
    from exporter.runtime import Exporter
    from exporter.server import HTTPServer
    from tests.helpers import wait_for

    cfg = parse(yaml.safe_dump({"targets": [{"name": "cron", "dsn": cron_db, **CONFIG}]}))
    exp = Exporter(cfg)
    srv = HTTPServer(exp, "127.0.0.1:0")
    exp.start()
    srv.start()
    try:
        yield wait_for(
            f"http://127.0.0.1:{srv.port}/metrics",
            lambda s: (
                (s.value("runbook_cron_job_running_seconds", jobname="slow") or 0) > 2
                and s.value("runbook_collector_success", collector="cron") == 1
            ),
            timeout=30,
            what="the cron collector seeing the slow job run past 2 s",
        )
    finally:
        srv.stop()
        exp.stop()


@pytest.mark.slow
def test_jobs_and_runs_in_the_metrics(cron_db: str, cron_scrape: Scrape) -> None:
    s = cron_scrape
    v = s.value
    assert v("runbook_collector_success", collector="cron") == 1
    assert v("runbook_cron_jobs", state="active") == 6
    assert v("runbook_cron_jobs", state="inactive") == 1
    assert v("runbook_cron_jobs_omitted") == 0
    # the succeeding job
    assert v("runbook_cron_job_last_run_succeeded", jobname="ok") == 1
    assert v("runbook_cron_job_consecutive_failures", jobname="ok") == 0
    assert 0 <= v("runbook_cron_job_overdue_seconds", jobname="ok") < 60
    last_start = v("runbook_cron_job_last_run_start_timestamp_seconds", jobname="ok")
    assert abs(last_start - time.time()) < 120
    assert v("runbook_cron_job_last_run_end_timestamp_seconds", jobname="ok") >= last_start
    assert v("runbook_cron_job_last_success_timestamp_seconds", jobname="ok") >= last_start
    # the failing one: two seeded failures and pg_cron's real one
    assert v("runbook_cron_job_last_run_succeeded", jobname="bad") == 0
    assert v("runbook_cron_job_consecutive_failures", jobname="bad") == 3
    assert v("runbook_cron_job_recent_failures", jobname="bad") == 3
    assert v("runbook_cron_job_last_success_timestamp_seconds", jobname="bad") is None
    # the long one, running now: not late, run time served
    assert v("runbook_cron_job_running", jobname="slow") == 1
    assert v("runbook_cron_job_running_seconds", jobname="slow") > 2
    assert v("runbook_cron_job_overdue_seconds", jobname="slow") == 0
    assert v("runbook_cron_job_running", jobname="ok") == 0
    # nightly: ran two days ago, missed yesterday's 03:17 -> overdue by more than a day
    assert v("runbook_cron_job_overdue_seconds", jobname="nightly") > 86400
    # the paused job: served, inactive, no overdue
    assert v("runbook_cron_job_active", jobname="paused") == 0
    assert v("runbook_cron_job_overdue_seconds", jobname="paused") is None
    # unnamed: labelled by its jobid; never run: counted from when the exporter saw it
    unnamed = str(jobid(cron_db, None))
    assert v("runbook_cron_job_active", jobname=unnamed) == 1
    assert v("runbook_cron_job_overdue_seconds", jobname=unnamed) == 0
    # an unreadable schedule: the job is served, its overdue is not, the run still succeeds
    assert v("runbook_cron_job_info", jobname="weird", schedule="every full moon") == 1
    assert v("runbook_cron_job_overdue_seconds", jobname="weird") is None
    # history
    assert v("runbook_cron_history_rows_estimated") >= 7
    assert v("runbook_cron_history_size_bytes") > 0
    # thresholds: the defaults and the slow job's override
    th = "runbook_cron_job_run_duration_threshold_seconds"
    assert v(th, jobname="slow", severity="warning") == 2
    assert v(th, jobname="ok", severity="warning") == 1800
    th = "runbook_cron_job_consecutive_failures_threshold"
    assert v(th, jobname="bad", severity="critical") == 3
    assert v("runbook_cron_history_rows_threshold", severity="warning") == 3
    assert v("runbook_cron_failure_window_seconds") == 3600
    # never a job's command or a run's message
    assert "pg_sleep" not in s.text and "division" not in s.text and "1/0" not in s.text
    assert_promtool_clean(s.text)


def promtool_alerts(scrape: Scrape, firing: list[dict[str, str]], tmp_path: Path) -> None:
    """promtool evaluates the shipped cron rules over the scraped runbook_cron_* values held
    constant; the alerts firing at 31 minutes must be exactly `firing` (so the others are
    proven quiet)."""
    series = scrape_series(scrape.samples, "runbook_cron_")
    assert_promtool_fires([RULES], series, firing, "31m", tmp_path)


@pytest.mark.slow
def test_alerts_fire_on_the_real_scrape(cron_scrape: Scrape, tmp_path: Path) -> None:
    def alert(name: str, severity: str, **labels: str) -> dict[str, str]:
        return {"alertname": name, "severity": severity, "target": "cron", **labels}

    # quiet: ok (succeeding), paused (failed, but inactive), the unnamed job (never run, seen
    # just now) and weird (schedule unknown)
    promtool_alerts(
        cron_scrape,
        [
            alert("CronJobFailing", "warning", jobname="bad"),
            alert("CronJobFailing", "critical", jobname="bad"),
            alert("CronJobRunTooLong", "warning", jobname="slow"),
            alert("CronJobOverdue", "warning", jobname="nightly"),
            alert("CronHistoryTooLarge", "warning"),
        ],
        tmp_path,
    )


@pytest.mark.slow
def test_every_series_the_cron_rules_use_is_served(cron_scrape: Scrape) -> None:
    """What tests/test_alerts.py checks for the other rule files during its incidents (whose
    server has no pg_cron), checked here on the pg_cron server."""
    from tests.test_alerts import all_selectors

    names = {sel.name for sel in all_selectors() if "cron.rules.yml" in sel.where}
    assert len(names) >= 8
    served = {smp.name for smp in cron_scrape.samples}
    assert names <= served, names - served


@pytest.mark.slow
def test_max_jobs_bounds_the_series_active_first(cron_db: str) -> None:
    families = {f.name: f for f in collect(cron_db, "{max_jobs: 2}")}
    active = families["runbook_cron_job_active"].samples
    assert len(active) == 2 and all(smp.value == 1 for smp in active)
    assert families["runbook_cron_jobs_omitted"].samples[0].value == 5


@pytest.mark.slow
def test_doctor_prints_the_missing_index_then_sees_it(
    cron_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    report, out = doctor(cron_db, capsys)
    assert report.findings == 1, out
    assert "CREATE INDEX CONCURRENTLY IF NOT EXISTS job_run_details_jobid_runid_idx" in out
    assert "ON cron.job_run_details (jobid, runid);" in out
    assert "job weird: cannot parse cron schedule 'every full moon'" in out
    # the statement as printed, without CONCURRENTLY: that waits for every older snapshot to
    # end, and the slow job's run (pg_sleep) holds one for minutes
    create = cron.INDEX_STATEMENT.replace(" CONCURRENTLY", "")
    assert create != cron.INDEX_STATEMENT
    with psycopg.connect(cron_db, autocommit=True) as c:
        c.execute(create)
    report, out = doctor(cron_db, capsys)
    assert report.findings == 0, out
    assert "read through index job_run_details_jobid_runid_idx" in out
    assert "7 job(s) served" in out


@pytest.mark.slow
def test_every_query_of_the_cron_dashboard_answers(cron_db: str, tmp_path: Path) -> None:
    """The Cron & pg_net dashboard on real data: pg_cron's jobs (failing, running too long,
    overdue) and pg_net's failing calls, scraped by a real Prometheus; every panel query and
    variable must return a series (tests/test_dashboards.py does the others on PG 18)."""
    from exporter.demo.devstack import DevStack
    from exporter.runtime import Exporter
    from exporter.server import HTTPServer
    from tests import pgnet_schema
    from tests.test_dashboards import (
        dashboards,
        queries,
        substitute,
        variable_queries,
        wait_all,
    )

    pgnet_schema.seed_incident(cron_db)
    config = {"name": "cron", "dsn": cron_db, "collect_interval": "1s", **CONFIG}
    exp = Exporter(parse_config(yaml.safe_dump({"targets": [config]})))
    srv = HTTPServer(exp, "127.0.0.1:0")
    exp.start()
    srv.start()
    try:
        with DevStack([f"127.0.0.1:{srv.port}"], interval=1.0, with_alertmanager=False) as stack:
            stack.wait_scraped()
            prom = stack.prom
            d = dashboards()["runbook-scheduled.json"]

            def answers(q: str) -> Callable[[], bool]:
                return lambda: bool(prom.query(q))

            def has_label(selector: str, label: str) -> Callable[[], bool]:
                return lambda: any(label in x for x in prom.series(selector))

            checks = {where: answers(substitute(expr)) for where, expr in queries(d)}
            for var, sel, label in variable_queries(d):
                checks[f"variable {var}"] = has_label(substitute(sel), label)
            empty, _ = wait_all(checks, timeout=60)
            assert not empty, "queries without data:\n" + "\n".join(empty) + stack.logs()
            # the status tile says what is wrong: the failing job critical (3 in a row is
            # reached by its seeded and real failures), pg_net failing
            gen_levels = {
                r["metric"].get("jobname"): float(r["value"][1])
                for r in prom.query(substitute(next(e for w, e in queries(d) if "Cron jobs" in w)))
            }
            assert gen_levels.get("slow") == 1, gen_levels  # running past its 2 s
            assert gen_levels.get("ok") == 0, gen_levels
    finally:
        srv.stop()
        exp.stop()
