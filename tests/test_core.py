"""The exporter's own behaviour: self-metrics, endpoints, failure isolation, config errors."""

from __future__ import annotations

import httpx
import psycopg


def target(dsn: str, **extra) -> dict:
    return {"name": "app", "dsn": dsn, "collect_interval": "1s", **extra}


def test_serves_self_metrics_and_endpoints(fresh_db, run_exporter):
    ex = run_exporter({"targets": [target(fresh_db)]})
    s = ex.wait_for(
        lambda s: s.value("runbook_collector_success", target="app", collector="database") == 1,
        what="database collector",
    )
    assert s.value("runbook_target_up", target="app") == 1
    assert s.value("runbook_exporter_build_info") == 1
    assert s.value("runbook_collector_duration_seconds", target="app", collector="database") > 0
    assert s.value("runbook_collector_interval_seconds", target="app", collector="database") == 1
    assert httpx.get(ex.base + "/-/healthy").status_code == 200
    ex.wait_for(lambda s: httpx.get(ex.base + "/-/ready").status_code == 200, what="ready")
    page = httpx.get(ex.base + "/").text
    assert 'href="metrics"' in page and "app" in page
    assert httpx.get(ex.base + "/nope").status_code == 404


def test_unreachable_target_is_down_and_others_keep_working(fresh_db, run_exporter):
    from exporter.demo.pgserver import free_port

    dead = f"postgresql://nobody:s3cret-pw@127.0.0.1:{free_port()}/x"
    ex = run_exporter(
        {"targets": [target(fresh_db), {"name": "dead", "dsn": dead, "collect_interval": "1s"}]}
    )
    s = ex.wait_for(
        lambda s: (
            s.value("runbook_target_up", target="dead") == 0
            and s.value("runbook_collector_success", target="app", collector="database") == 1
            and s.value("runbook_collector_success", target="dead", collector="database") == 0
        ),
        what="dead target reported down, live one up",
    )
    assert s.value("runbook_target_up", target="app") == 1
    assert "s3cret-pw" not in s.text


def test_session_settings_are_read_only_with_timeouts(fresh_db, run_exporter):
    ex = run_exporter(
        {
            "targets": [
                target(
                    fresh_db, collect_interval="5s", statement_timeout="3s", lock_timeout="500ms"
                )
            ]
        }
    )
    ex.wait_for(lambda s: s.value("runbook_target_up", target="app") == 1, what="up")
    with psycopg.connect(fresh_db) as c:
        rows = c.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'runbook-exporter'"
            " AND datname = current_database()"
        ).fetchone()
    # a few sessions per target at most (max_sessions, default 3), opened only when busy
    assert 1 <= rows[0] <= 3
    db = ex.exporter.dbs["app"]

    async def settings():
        async with db.connection(10) as conn:
            cur = await conn.execute(
                "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'),"
                " current_setting('default_transaction_read_only')"
            )
            return await cur.fetchone()

    import asyncio

    got = asyncio.run_coroutine_threadsafe(settings(), ex.exporter._loop).result(10)
    assert got == ("3s", "500ms", "on")


def test_an_interval_that_slipped_past_validation_neither_kills_nor_freezes_collection(
    fresh_db, caplog
):
    """interval 0 used to run once and then die in the loop (ZeroDivisionError) with success
    still 1; the config refuses it, and the scheduler clamps it should one ever get through."""
    import logging

    from exporter.config import parse_config
    from exporter.runtime import Exporter
    from exporter.server import HTTPServer
    from tests.helpers import wait_for

    caplog.set_level(logging.WARNING, logger="exporter.scheduler")
    cfg = parse_config(yaml_target(fresh_db))
    zero = cfg.targets[0].model_copy(update={"collect_interval": 0.0})
    exp = Exporter(cfg.model_copy(update={"targets": [zero]}))
    srv = HTTPServer(exp, "127.0.0.1:0")
    exp.start()
    srv.start()
    try:
        labels = {"target": "app", "collector": "database"}
        s = wait_for(
            f"http://127.0.0.1:{srv.port}/metrics",
            lambda s: s.value("runbook_collector_runs_total", **labels) >= 2,
            10,
            "a second run of the database collector",
        )
        assert s.value("runbook_collector_success", **labels) == 1
        assert s.value("runbook_collector_errors_total", **labels) == 0
    finally:
        srv.stop()
        exp.stop()
    clamped = [r for r in caplog.records if "clamped" in r.getMessage()]
    assert ("app", "database") in {r.job for r in clamped}
    assert not [r for r in caplog.records if "died" in r.getMessage()]


def yaml_target(dsn: str) -> str:
    import yaml

    return yaml.safe_dump({"targets": [target(dsn)]})
