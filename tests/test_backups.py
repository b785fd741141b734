"""Verified backups (exporter/backups/): every source kind against a real thing -- files with
real mtimes in a directory, a table on a real PostgreSQL, real processes printing pgBackRest-
and WAL-G-shaped JSON (tests/backup_tool.py) or failing, a local HTTP server answering in the
Supabase Management API's shape -- and a stale backup of each kind visible in a real
exporter's scrape and firing the shipped rules in promtool."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from exporter import backups
from exporter.backups import runner
from exporter.backups.base import Reading, SourceFailure
from exporter.backups.config import SOURCE_KINDS
from exporter.config import ConfigError, parse_config
from exporter.db import TargetDB
from exporter.doctor import Report
from tests.helpers import (
    assert_declared,
    assert_promtool_clean,
    assert_promtool_fires,
    scrape_series,
)
from tests.test_probe_support import LocalServer, json_route, send

ROOT = Path(__file__).resolve().parent.parent
TOOL = str(Path(__file__).resolve().parent / "backup_tool.py")
DAY = 86400.0
TOKEN = "sbp_0123456789abcdef0123456789abcdef01234567"


def backup(item: dict[str, Any], targets: list | None = None) -> Any:
    cfg = parse_config(json.dumps({"targets": targets or [], "backups": [item]}), "t.yml")
    return cfg.backups[0]


def read(item: dict[str, Any], db: Any = None) -> Reading:
    return asyncio.run(runner.source_of(backup(item), db).read())


def fails(item: dict[str, Any]) -> SourceFailure:
    with pytest.raises(SourceFailure) as e:
        read(item)
    return e.value


def tool(*args: str, **extra: Any) -> dict[str, Any]:
    return {"command": {"argv": [sys.executable, TOOL, *args], **extra}}


def test_every_configured_kind_has_its_module() -> None:
    assert set(backups.load()) == set(SOURCE_KINDS)


# --- file --------------------------------------------------------------------------------------


def _file(d: Path, name: str, size: int, age: float) -> Path:
    p = d / name
    p.write_bytes(b"-" * size)
    when = time.time() - age
    os.utime(p, (when, when))
    return p


def test_file_newest_big_enough_file_counts_and_a_newer_small_one_is_reported(
    tmp_path: Path,
) -> None:
    good = _file(tmp_path, "backup-20260101.sql", 5000, 2 * DAY)
    _file(tmp_path, "backup-20260102.sql", 4000, DAY)
    _file(tmp_path, "backup-20260103.sql", 10, 3600)  # an interrupted dump: too small
    _file(tmp_path, "notes.txt", 9999, 60)  # does not match the pattern
    (tmp_path / "backup-dir.sql").mkdir()  # not a regular file
    item = {"name": "dumps", "file": {"directory": str(tmp_path), "pattern": "backup-*.sql"}}
    item["file"]["min_size"] = "1KiB"
    r = read(item)
    assert r.count == 2 and r.undersized == 1 and not r.truncated
    assert r.size == 4000
    assert abs(r.last - (time.time() - DAY)) < 5
    assert "backup-20260103.sql (10 bytes)" in r.detail  # the newer small file is named
    assert good.exists()


def test_file_scan_is_bounded_and_says_so(tmp_path: Path) -> None:
    for i in range(30):
        _file(tmp_path, f"backup-{i:02}.sql", 100, DAY + i)
    item = {"name": "d", "file": {"directory": str(tmp_path), "max_entries": 10}}
    r = read(item)
    assert r.truncated and r.count == 10


def test_file_missing_directory_is_unreadable(tmp_path: Path) -> None:
    e = fails({"name": "d", "file": {"directory": str(tmp_path / "gone")}})
    assert e.reason == "unreadable" and "does not exist" in str(e)
    empty = read({"name": "d", "file": {"directory": str(tmp_path)}})
    assert empty.last is None and empty.count == 0


# --- sql on a real PostgreSQL -----------------------------------------------------------------

BACKUP_RUNS = """
CREATE TABLE backup_runs (id serial PRIMARY KEY, finished_at timestamptz NOT NULL,
                          bytes bigint, ok boolean NOT NULL);
CREATE INDEX ON backup_runs (finished_at) WHERE ok;
"""
LAST_RUN = "SELECT finished_at, bytes FROM backup_runs WHERE ok ORDER BY finished_at DESC LIMIT 1"


def _sql_item(query: str = LAST_RUN) -> dict[str, Any]:
    return {"name": "script", "sql": {"target": "app", "query": query + ";"}}


async def _read_sql(dsn: str, query: str = LAST_RUN, **target: Any) -> Reading:
    cfg = parse_config(
        json.dumps(
            {"targets": [{"name": "app", "dsn": dsn, **target}], "backups": [_sql_item(query)]}
        )
    )
    db = TargetDB(cfg.targets[0])
    try:
        return await runner.source_of(cfg.backups[0], db).read()
    finally:
        await db.close()


def test_sql_reads_the_table_a_backup_script_writes(fresh_db: str) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(BACKUP_RUNS)
        assert asyncio.run(_read_sql(fresh_db)).last is None  # no row: none found
        # what the backup script does after each run
        c.execute(
            "INSERT INTO backup_runs (finished_at, bytes, ok) VALUES "
            "(now() - interval '3 days', 900, true), (now() - interval '2 days', 1200, true),"
            "(now() - interval '1 hour', 0, false)"
        )
    r = asyncio.run(_read_sql(fresh_db))
    assert r.count == 1 and r.size == 1200
    assert abs(r.last - (time.time() - 2 * DAY)) < 60
    # unix seconds work too
    r = asyncio.run(
        _read_sql(fresh_db, "SELECT extract(epoch FROM max(finished_at)) FROM backup_runs")
    )
    assert abs(r.last - (time.time() - 3600)) < 60


def test_sql_failures_are_reasons(fresh_db: str) -> None:
    with pytest.raises(SourceFailure) as e:
        asyncio.run(_read_sql(fresh_db, "SELECT max(finished_at) FROM no_such_table"))
    assert e.value.reason == "query" and "no_such_table" in str(e.value)
    with pytest.raises(SourceFailure) as e:  # read-only: a write is refused
        asyncio.run(_read_sql(fresh_db, "CREATE TABLE x (a int)"))
    assert e.value.reason == "query" and "read-only" in str(e.value)
    with pytest.raises(SourceFailure) as e:
        asyncio.run(_read_sql(fresh_db, "SELECT now() FROM pg_sleep(2)", statement_timeout="200ms"))
    assert e.value.reason == "timeout"


# --- pgbackrest / walg: real commands and files -------------------------------------------------


def test_pgbackrest_command_newest_backup_and_repository_size() -> None:
    stop = int(time.time() - 3 * DAY)
    r = read({"name": "pgbr", "pgbackrest": tool("pgbackrest", str(stop), "5000")})
    assert r.last == stop and r.count == 2 and r.size == 5000
    assert "20260101-020000F_20260102-020000I (incr)" in r.detail
    # only full backups count: the full is a day older
    r = read({"name": "pgbr", "pgbackrest": {**tool("pgbackrest", str(stop)), "types": ["full"]}})
    assert r.last == stop - DAY and r.count == 1


def test_pgbackrest_file_status_errors_and_stanzas(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(TOOL).parent))
    try:
        from backup_tool import pgbackrest
    finally:
        sys.path.pop(0)
    doc = pgbackrest(1_700_000_000, 10)
    f = tmp_path / "info.json"

    def with_doc(d: Any, **extra: Any) -> dict:
        f.write_text(json.dumps(d))
        return {"name": "pgbr", "pgbackrest": {"file": str(f), **extra}}

    assert read(with_doc(doc)).last == 1_700_000_000
    # a backup with a checksum error does not count
    bad = json.loads(json.dumps(doc))
    bad[0]["backup"][1]["error"] = True
    r = read(with_doc(bad))
    assert r.last == 1_700_000_000 - DAY and "1 with errors" in r.detail
    # status 2 (no valid backups) is none found; any other is the tool's error
    nothing = json.loads(json.dumps(doc))
    nothing[0]["status"] = {"code": 2, "message": "no valid backups"}
    nothing[0]["backup"] = []
    assert read(with_doc(nothing)).count == 0
    broken = json.loads(json.dumps(doc))
    broken[0]["status"] = {"code": 1, "message": "missing stanza path"}
    with pytest.raises(SourceFailure) as e:
        read(with_doc(broken))
    assert e.value.reason == "tool_error" and "missing stanza path" in str(e.value)
    two = [*doc, {**doc[0], "name": "other"}]
    with pytest.raises(SourceFailure) as e:
        read(with_doc(two))
    assert e.value.reason == "invalid_output" and "stanza:" in str(e.value)
    assert read(with_doc(two, stanza="main")).count == 2
    with pytest.raises(SourceFailure) as e:
        read(with_doc({"not": "a list"}))
    assert e.value.reason == "invalid_output"


def test_walg_command_finish_time_and_compressed_size() -> None:
    r = read({"name": "wal", "walg": tool("walg", "2026-01-02T02:10:00.987654321Z", "777")})
    assert r.last == datetime(2026, 1, 2, 2, 10, 0, 987654, tzinfo=UTC).timestamp()
    assert r.size == 777 and r.count == 2


def test_walg_without_detail_uses_the_modification_time(tmp_path: Path) -> None:
    f = tmp_path / "list.json"
    f.write_text(json.dumps([{"backup_name": "base_1", "time": "2026-01-01T00:00:00Z"}]))
    r = read({"name": "wal", "walg": {"file": str(f)}})
    assert r.last == datetime(2026, 1, 1, tzinfo=UTC).timestamp() and r.size is None
    f.write_text("")  # WAL-G prints nothing when there are no backups
    assert read({"name": "wal", "walg": {"file": str(f)}}).count == 0


def test_a_failing_command_is_a_reason_with_its_stderr() -> None:
    e = fails({"name": "x", "pgbackrest": tool("fail")})
    assert e.reason == "exit_status"
    assert "exited with status 3: ERROR: [055]: unable to load info file" in str(e)
    e = fails({"name": "x", "walg": tool("garbage")})
    assert e.reason == "invalid_output"
    e = fails({"name": "x", "walg": tool("flood", max_output="1MiB")})
    assert e.reason == "output_too_large"
    e = fails({"name": "x", "walg": {"command": ["/nonexistent/wal-g", "backup-list"]}})
    assert e.reason == "unreadable"


def test_a_hanging_command_is_killed_with_its_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    item = {"name": "x", "interval": "10s", "timeout": "1s", "walg": tool("hang", str(pidfile))}
    started = time.monotonic()
    e = fails(item)
    assert e.reason == "timeout" and time.monotonic() - started < 5
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the child was in the killed group
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        # reaped by init once its parent died; a zombie still answers kill(0)
        if Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"child {child} of the timed-out command still runs")


# --- supabase against a local server in the Management API's shape ------------------------------


def supabase_route(doc: Any, token: str = TOKEN):
    def route(h) -> None:
        if h.headers.get("Authorization") != f"Bearer {token}":
            send(h, 401, b'{"message": "Unauthorized"}')
            return
        send(h, 200, json.dumps(doc).encode())

    return route


def supabase_doc(inserted_at: str) -> dict:
    return {
        "region": "eu-central-1",
        "walg_enabled": True,
        "pitr_enabled": False,
        "backups": [
            {
                "status": "COMPLETED",
                "is_physical_backup": True,
                "inserted_at": "2026-01-01T02:00:00.000Z",
            },
            {"status": "COMPLETED", "is_physical_backup": True, "inserted_at": inserted_at},
            {"status": "FAILED", "is_physical_backup": True, "inserted_at": "2099-01-01T00:00:00Z"},
        ],
        "physical_backup_data": {},
    }


def _supabase(server: LocalServer, **extra: Any) -> dict:
    return {
        "name": "supa",
        "supabase": {
            "project_ref": "abcdefghijklmnopqrst",
            "token": {"env": "TEST_SUPABASE_TOKEN"},
            "base_url": server.url(""),
            **extra,
        },
    }


PATH = "/v1/projects/abcdefghijklmnopqrst/database/backups"


def test_supabase_newest_completed_backup_and_the_token_only_in_the_header(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TEST_SUPABASE_TOKEN", TOKEN)
    server.routes[PATH] = supabase_route(supabase_doc("2026-01-05T02:00:00.5Z"))
    r = read(_supabase(server))
    assert r.last == datetime(2026, 1, 5, 2, 0, 0, 500000, tzinfo=UTC).timestamp()
    assert r.count == 2 and r.size is None  # FAILED does not count; the API gives no size
    assert "pitr_enabled False" in r.detail
    # PITR: the latest physical backup point is newer than the daily list
    doc = supabase_doc("2026-01-05T02:00:00Z")
    doc["physical_backup_data"] = {"latest_physical_backup_date_unix": 1_800_000_000}
    server.routes[PATH] = supabase_route(doc)
    assert read(_supabase(server)).last == 1_800_000_000

    # a refused token, a wrong status, a broken body: reasons that never show the token
    caplog.set_level(logging.DEBUG)
    server.routes[PATH] = supabase_route(doc, token="another")
    e = fails(_supabase(server))
    assert e.reason == "auth" and "401" in str(e)
    server.routes[PATH] = json_route({"message": "boom"}, code=500)
    assert fails(_supabase(server)).reason == "http_status"
    server.routes[PATH] = lambda h: send(h, 200, b"<html>")
    assert fails(_supabase(server)).reason == "invalid_output"
    server.routes[PATH] = lambda h: send(h, 200, b"[" + b"1," * 300000 + b"1]")
    assert fails(_supabase(server, max_body="64KiB")).reason == "output_too_large"
    monkeypatch.delenv("TEST_SUPABASE_TOKEN")
    e = fails(_supabase(server))
    assert e.reason == "auth" and "TEST_SUPABASE_TOKEN is not set" in str(e)
    # the server saw the token, in the header only
    seen = server.headers[PATH]
    assert seen[0]["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in caplog.text


def test_supabase_token_never_reaches_logs_or_metrics(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TEST_SUPABASE_TOKEN", TOKEN)
    server.routes[PATH] = lambda h: send(h, 500, f"bad token {TOKEN}".encode())
    caplog.set_level(logging.DEBUG)
    checker = runner.Checker(backup(_supabase(server)))
    fams = asyncio.run(checker.check())
    text = json.dumps([[s.labels, s.value] for f in fams for s in f.samples])
    assert TOKEN not in text and TOKEN not in caplog.text
    assert "backup source failed" in caplog.text


# --- the checker's series ---------------------------------------------------------------------


def test_an_unreadable_source_keeps_the_last_backup_with_its_age_growing(tmp_path: Path) -> None:
    _file(tmp_path, "b.sql", 100, DAY)
    checker = runner.Checker(backup({"name": "d", "file": {"directory": str(tmp_path)}}))

    def values() -> dict[str, float]:
        fams = asyncio.run(checker.check())
        return {s.name + s.labels.get("reason", ""): s.value for f in fams for s in f.samples}

    ok = values()
    assert ok["runbook_backup_source_up"] == 1 and ok["runbook_backup_found"] == 1
    assert abs(ok["runbook_backup_age_seconds"] - DAY) < 5
    (tmp_path / "b.sql").unlink()
    tmp_path.rmdir()
    bad = values()
    assert bad["runbook_backup_source_up"] == 0
    assert bad["runbook_backup_source_failure_reasonunreadable"] == 1
    assert "runbook_backup_found" not in bad
    assert bad["runbook_backup_age_seconds"] >= ok["runbook_backup_age_seconds"]
    assert bad["runbook_backup_last_success_timestamp_seconds"] == pytest.approx(
        ok["runbook_backup_last_success_timestamp_seconds"]
    )


# --- config -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"name": "x"}, "a backup needs exactly one source"),
        ({"name": "x", "file": {"directory": "/b"}, "walg": {"file": "/l"}}, "(got file, walg)"),
        ({"name": "x", "file": {"directory": "b"}}, "absolute path"),
        ({"name": "x", "walg": {}}, "give exactly one of file or command"),
        ({"name": "x", "walg": {"command": []}}, "at least 1 item"),
        ({"name": "x", "interval": "1m", "timeout": "2m", "file": {"directory": "/b"}}, "timeout"),
        (
            {
                "name": "x",
                "max_age_warning": "3d",
                "max_age_critical": "1d",
                "file": {"directory": "/b"},
            },
            "max_age_warning",
        ),
        ({"name": "x", "sql": {"target": "nope", "query": "SELECT now()"}}, "no target named"),
        ({"name": "x", "sql": {"target": "app", "query": "SELECT 1; SELECT 2"}}, "one statement"),
        (
            {
                "name": "x",
                "supabase": {"project_ref": "abc", "token": {"env": "T"}, "base_url": "ftp://x"},
            },
            "http(s) URL",
        ),
    ],
)
def test_bad_backup_config_is_located(item: dict, message: str) -> None:
    text = json.dumps({"targets": [{"name": "app", "dsn": "host=x"}], "backups": [item]})
    with pytest.raises(ConfigError) as e:
        parse_config(text, "c.yml")
    assert "c.yml" in str(e.value) and "backups[0]" in str(e.value)
    assert message in str(e.value)


def test_defaults_are_a_daily_backup() -> None:
    b = backup({"name": "d", "file": {"directory": "/b"}})
    assert (b.max_age_warning, b.max_age_critical) == (26 * 3600, 50 * 3600)
    assert (b.interval, b.timeout) == (300, 30)
    assert b.file.max_entries == 10000
    # the short form of a command
    assert backup({"name": "w", "walg": {"command": ["wal-g", "backup-list"]}}).walg.command.argv


# --- doctor -----------------------------------------------------------------------------------


def test_doctor_reads_each_source_once_and_says_what_it_found(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _file(tmp_path, "backup-1.sql", 2000, 3 * DAY)
    cfg = parse_config(
        json.dumps(
            {
                "backups": [
                    {"name": "dumps", "file": {"directory": str(tmp_path), "min_size": 1000}},
                    {"name": "s3", "pgbackrest": tool("fail")},
                    {"name": "fresh", "walg": tool("walg", datetime.now(UTC).isoformat())},
                ]
            }
        )
    )
    report = Report()
    asyncio.run(runner.doctor(cfg.backups, {}, report))
    out = capsys.readouterr().out
    assert "backup dumps (newest * in" in out
    assert "newest backup is 72.0h old, 2000 bytes: past max_age_critical" in out
    assert "source unreadable (exit_status)" in out
    assert "newest backup is 0s old" in out or "newest backup is 1s old" in out
    assert report.findings == 2 and report.errors == 0


# --- the real exporter: a stale backup of each kind, scraped and firing -------------------------


def test_stale_backups_of_every_kind_are_scraped_and_fire(
    fresh_db: str,
    run_exporter: Any,
    server: LocalServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old = time.time() - 3 * DAY  # past the 50 h critical age
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    _file(dumps, "backup-old.sql", 4096, 3 * DAY)
    empty = tmp_path / "empty"
    empty.mkdir()
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(BACKUP_RUNS)
        c.execute(
            "INSERT INTO backup_runs (finished_at, bytes, ok) VALUES (to_timestamp(%s), 42, true)",
            (old,),
        )
    monkeypatch.setenv("TEST_SUPABASE_TOKEN", TOKEN)
    iso = datetime.fromtimestamp(old, UTC).isoformat()
    server.routes[PATH] = supabase_route(supabase_doc(iso))
    fast = {"interval": "2s", "timeout": "1500ms"}
    items = [
        {"name": "dumps", "file": {"directory": str(dumps), "pattern": "backup-*.sql"}},
        {"name": "script", "sql": {"target": "app", "query": LAST_RUN}},
        {"name": "pgbr", "pgbackrest": tool("pgbackrest", str(int(old)))},
        {"name": "wal", "walg": tool("walg", iso)},
        {**_supabase(server), "name": "supa"},
        {"name": "none", "file": {"directory": str(empty)}},
        {"name": "broken", "pgbackrest": tool("fail")},
    ]
    ex = run_exporter(
        {
            "targets": [{"name": "app", "dsn": fresh_db}],
            "backups": [{**fast, **i} for i in items],
        }
    )
    stale = ("dumps", "script", "pgbr", "wal", "supa")

    def complete(s) -> bool:
        return len(s.values("runbook_backup_source_up")) == len(items) and all(
            (s.value("runbook_backup_age_seconds", backup=b) or 0) > 50 * 3600 for b in stale
        )

    s = ex.wait_for(complete, timeout=30, what="every backup checked")
    assert_declared(s.families)
    assert_promtool_clean(s.text)
    for b in stale:
        assert s.value("runbook_backup_source_up", backup=b) == 1
        assert s.value("runbook_backup_last_success_timestamp_seconds", backup=b) == pytest.approx(
            old, abs=1
        )
    assert s.value("runbook_backup_size_bytes", backup="dumps") == 4096
    assert s.value("runbook_backup_size_bytes", backup="script") == 42
    assert s.value("runbook_backup_size_bytes", backup="pgbr") == 1000
    assert s.value("runbook_backup_found", backup="none") == 0
    assert s.value("runbook_backup_source_up", backup="broken") == 0
    assert (
        s.value("runbook_backup_source_failure_reason", backup="broken", reason="exit_status") == 1
    )
    assert s.value("runbook_backup_age_threshold_seconds", backup="wal", severity="critical") == (
        50 * 3600
    )
    assert TOKEN not in s.text

    firing = [
        {"alertname": "BackupTooOld", "backup": b, "severity": sev}
        for b in stale
        for sev in ("warning", "critical")
    ]
    firing += [
        {"alertname": "BackupMissing", "backup": "none", "severity": "critical"},
        {"alertname": "BackupSourceFailing", "backup": "broken", "severity": "warning"},
    ]
    assert_promtool_fires(
        [ROOT / "alerts" / "backups.rules.yml"],
        scrape_series(s.samples, "runbook_backup_"),
        firing,
        "40m",
        tmp_path,
    )


def test_a_reload_keeps_unchanged_backup_jobs_and_rebuilds_changed_ones(tmp_path: Path) -> None:
    from exporter.runtime import Exporter

    def config(max_age: str, dsn: str) -> Any:
        return parse_config(
            json.dumps(
                {
                    "targets": [{"name": "app", "dsn": dsn}],
                    "backups": [
                        {"name": "dumps", "file": {"directory": str(tmp_path)}},
                        {"name": "pgbr", "max_age_warning": max_age, "walg": tool("walg", "x")},
                        {"name": "script", "sql": {"target": "app", "query": LAST_RUN}},
                    ],
                }
            )
        )

    ex = Exporter(config("26h", "host=127.0.0.1 dbname=a"))
    before = {k: j for k, (_, _, j) in ex._backups.items()}
    assert {j.key for j in ex.scheduler.jobs} >= {runner.job_key(n) for n in before}
    same = ex._plan(config("26h", "host=127.0.0.1 dbname=a")).backups
    assert all(same[k][2] is before[k] for k in before)
    changed = ex._plan(config("30h", "host=127.0.0.1 dbname=b")).backups
    assert changed["dumps"][2] is before["dumps"]
    assert changed["pgbr"][2] is not before["pgbr"]  # its threshold changed
    assert changed["script"][2] is not before["script"]  # its target's session changed


def test_a_command_env_value_is_never_echoed_and_check_config_lists_backups() -> None:
    item = {"name": "w", "walg": {"command": {"argv": ["wal-g"], "env": {"PREFIX": 98765}}}}
    with pytest.raises(ConfigError) as e:
        parse_config(json.dumps({"backups": [item]}), "c.yml")
    assert "backups[0].walg.command.env.PREFIX" in str(e.value) and "98765" not in str(e.value)
    from exporter.cli import summary

    cfg = parse_config(json.dumps({"backups": [{"name": "d", "file": {"directory": "/b"}}]}))
    assert "backup d: newest * in /b of at least 1 bytes, every 300s" in summary(cfg, "c.yml")
