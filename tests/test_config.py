"""Configuration: defaults from the runbooks, strict validation, errors with file/path/value."""

from __future__ import annotations

import pytest

from exporter.config import ConfigError, load_config, parse_config
from exporter.configtypes import parse_duration
from exporter.secrets import redact

BASE = "targets:\n  - name: app\n    dsn: postgresql://monitor@localhost/app\n"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("30s", 30), ("5m", 300), ("1h30m", 5400), ("2d", 172800), (45, 45)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5", "5 minutes", "m5", "-1s", "1h 30m", True])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_runbook_defaults():
    cfg = parse_config(BASE + "    queues:\n      - table: processing_jobs\n")
    q = cfg.targets[0].queues[0]
    assert q.table == "public.processing_jobs" and q.label == "processing_jobs"
    assert (q.thresholds.depth_warning, q.thresholds.depth_critical) == (50, 200)
    assert q.stuck_after == 1800 and q.max_retries == 3
    th = cfg.targets[0].thresholds
    assert (th.long_query_warning, th.long_query_critical) == (300, 600)
    assert (th.connections_warning_ratio, th.connections_critical_ratio) == (0.8, 0.9)
    assert th.slow_statement_mean == 1.0


def errors_of(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config(text, "conf.yml")
    return str(e.value)


def test_unknown_key_names_file_line_and_path_but_not_its_value():
    msg = errors_of(BASE + "    queues:\n      - table: jobs\n        stuck_afterr: 10m\n")
    # an unknown key's value is never echoed: it may be a misspelt password
    assert msg == "conf.yml:6: targets[0].queues[0].stuck_afterr: unknown key"


def test_bad_duration_names_path_and_value():
    msg = errors_of(BASE + "    queues:\n      - table: jobs\n        stuck_after: soon\n")
    assert "targets[0].queues[0].stuck_after" in msg and "'soon'" in msg


def test_warning_above_critical_is_rejected():
    msg = errors_of(
        BASE + "    queues:\n      - table: jobs\n        thresholds: {depth_warning: 300}\n"
    )
    assert "depth_warning (300) must not be above depth_critical (200)" in msg


@pytest.mark.parametrize(
    ("snippet", "expect"),
    [
        ("    queues:\n      - table: a.b.c\n", "invalid table name 'a.b.c'"),
        ("    queues:\n      - table: j\n      - table: j\n", "queue names must be unique"),
        (
            "    queues:\n      - table: j\n        statuses: {pending: x, failed: x}\n",
            "status value 'x' is given both for pending and failed",
        ),
    ],
)
def test_queue_errors(snippet, expect):
    assert expect in errors_of(BASE + snippet)


def test_structural_errors():
    assert "the file is empty" in errors_of("")
    assert "invalid YAML" in errors_of("targets: [\n")
    assert "nothing to do" in errors_of("targets: []\n")
    assert "give exactly one of dsn or dsn_env" in errors_of("targets:\n  - name: a\n")
    assert "target names must be unique" in errors_of(
        "targets:\n  - {name: a, dsn: 'host=x'}\n  - {name: a, dsn: 'host=y'}\n"
    )
    assert "targets[0].name" in errors_of("targets:\n  - {name: 'bad name', dsn: 'host=x'}\n")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yml")


def test_password_from_env_and_file_never_shown(tmp_path, monkeypatch):
    monkeypatch.setenv("APP_DB_PASSWORD", "env-s3cret")
    cfg = parse_config(BASE + "    password_env: APP_DB_PASSWORD\n")
    t = cfg.targets[0]
    assert "password=env-s3cret" in t.conninfo()
    assert "env-s3cret" not in t.safe_dsn()
    assert redact("auth failed for env-s3cret") == "auth failed for <redacted>"

    secret = tmp_path / "pw"
    secret.write_text("file-s3cret\n")
    t = parse_config(BASE + f"    password_file: {secret}\n").targets[0]
    assert "password=file-s3cret" in t.conninfo()
    inline = parse_config(
        "targets:\n  - name: a\n    dsn: postgresql://u:inline-s3cret@h/db\n"
    ).targets[0]
    assert "inline-s3cret" not in inline.safe_dsn()


def test_unset_password_env_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("NOPE_PW", raising=False)
    t = parse_config(BASE + "    password_env: NOPE_PW\n").targets[0]
    with pytest.raises(ConfigError, match="environment variable NOPE_PW is not set"):
        t.conninfo()


def test_dsn_env(monkeypatch):
    monkeypatch.setenv("APP_DSN", "postgresql://u:dsn-s3cret@db/app")
    t = parse_config("targets:\n  - name: a\n    dsn_env: APP_DSN\n").targets[0]
    assert "dsn-s3cret" in t.conninfo()
    assert t.safe_dsn() == "$APP_DSN"
