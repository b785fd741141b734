"""The command line as a user runs it: real processes, exit codes, messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from exporter import __version__

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yml"))


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_version():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"runbook-exporter {__version__}"


def test_check_config_ok_prints_summary_without_password(tmp_path):
    cfg = tmp_path / "c.yml"
    cfg.write_text(
        "targets:\n  - name: app\n    dsn: postgresql://mon:pl41n-pw@db:5432/app\n"
        "    queues:\n      - table: processing_jobs\n        thresholds: {depth_warning: 100}\n"
    )
    r = run("--config.file", str(cfg), "--check-config")
    assert r.returncode == 0, r.stderr
    assert "configuration is valid" in r.stdout
    assert "queue processing_jobs" in r.stdout and "depth warning > 100" in r.stdout
    # the timeouts in effect, derived ones included
    assert "session: statement_timeout 5s, lock_timeout 1s, connect_timeout 5s" in r.stdout
    assert "pl41n-pw" not in r.stdout + r.stderr


def test_check_config_error_exits_2_naming_file_path_value(tmp_path):
    cfg = tmp_path / "bad.yml"
    cfg.write_text("targets:\n  - name: app\n    dsn: 'host=db'\n    collect_interval: often\n")
    r = run("--config.file", str(cfg), "--check-config")
    assert r.returncode == 2
    assert f"{cfg}:4: targets[0].collect_interval" in r.stderr and "'often'" in r.stderr


def test_missing_secret_warns_in_check_config_and_stops_the_start(tmp_path):
    cfg = tmp_path / "c.yml"
    cfg.write_text("targets:\n  - name: app\n    dsn: 'host=db'\n    password_env: NOPE_PW_XYZ\n")
    check = run("--config.file", str(cfg), "--check-config")
    assert check.returncode == 0, check.stderr
    warning = f"warning: {cfg}:4: targets[0].password_env: environment variable NOPE_PW_XYZ"
    assert warning in check.stderr
    start = run("--config.file", str(cfg), "--web.listen-address", "127.0.0.1:0")
    assert start.returncode == 2
    assert (
        f"error: {cfg}:4: targets[0].password_env: environment variable NOPE_PW_XYZ is not set"
        in start.stderr
    )


def test_missing_config_file_exits_2(tmp_path):
    r = run("--config.file", str(tmp_path / "none.yml"), "--check-config")
    assert r.returncode == 2 and "cannot read config file" in r.stderr


def test_bad_listen_address_exits_1(tmp_path):
    cfg = tmp_path / "c.yml"
    cfg.write_text("targets:\n  - name: app\n    dsn: 'host=127.0.0.1 port=1'\n")
    r = run("--config.file", str(cfg), "--web.listen-address", "nonsense")
    assert r.returncode == 1 and "invalid listen address" in r.stderr


def test_examples_exist():
    assert EXAMPLES, "examples/*.yml missing"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_pass_check_config(example):
    r = run("--config.file", str(example), "--check-config")
    assert r.returncode == 0, r.stderr
