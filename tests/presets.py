"""What the job-library preset tests (tests/test_preset_*.py) share: the one-target config
they scrape, reading a queue's series, waiting for a first full scrape, the shipped queue alerts
run by promtool on it, the doctor's output, a failed queues run's error and the config errors.
The seeds and what each library's scrape must show stay in its own file."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from exporter.config import ConfigError, parse_config
from exporter.doctor import run_doctor
from tests.helpers import Scrape, assert_promtool_fires, scrape_series

ROOT = Path(__file__).resolve().parent.parent
ROLES = ("pending", "scheduled", "processing", "failed", "dead")
FIRING = 'count by (alertname, severity, queue) (ALERTS{alertstate="firing"})'
# the start of a config whose one target's queue items follow (for parse_config)
ITEMS_BASE = "targets:\n  - name: app\n    dsn: 'host=127.0.0.1'\n    queues:\n"


def preset_config(dsn: str, *items: dict) -> dict:
    """One target `app` on dsn, collected every second, with these queue items."""
    return {"targets": [{"name": "app", "dsn": dsn, "collect_interval": "1s", "queues": [*items]}]}


def database_fixture(seed: Callable[..., object], params: list | None = None):
    """A module-scoped fixture: a new database seeded by seed(dsn) (by seed(dsn, param), once
    for each of params), dropped after the module."""

    @pytest.fixture(scope="module", params=params)
    def db(pg_server: str, request) -> Iterator[str]:
        from tests.conftest import new_database

        with new_database(pg_server) as dsn:
            seed(dsn, *([] if params is None else [request.param]))
            yield dsn

    return db


def parse_items(items: str) -> list:
    """The parsed queue items of target app from YAML lines (after ITEMS_BASE)."""
    return parse_config(ITEMS_BASE + items).targets[0].queues


def val(s: Scrape, name: str, queue: str, **labels: str) -> float | None:
    """The value of name for target app and this queue (None when absent)."""
    return s.value(name, target="app", queue=queue, **labels)


def scrape_when_ready(
    run_exporter,
    config: dict,
    queue: str,
    what: str,
    status: str = "pending",
    also: Callable[[Scrape], bool] | None = None,
) -> Scrape:
    """Start the exporter on config; the first scrape where the queues collector succeeded and
    queue has its runbook_queue_jobs{status} series (and `also` holds)."""
    ex = run_exporter(config)
    return ex.wait_for(
        lambda s: (
            s.value("runbook_collector_success", target="app", collector="queues") == 1
            and val(s, "runbook_queue_jobs", queue, status=status) is not None
            and (also is None or also(s))
        ),
        what=what,
    )


def roles_of(s: Scrape, queues: tuple[str, ...]) -> dict[str, dict[str, float | None]]:
    """runbook_queue_jobs of each queue, by status role."""
    return {q: {r: val(s, "runbook_queue_jobs", q, status=r) for r in ROLES} for q in queues}


def ups(s: Scrape) -> dict[str, float | None]:
    """runbook_queue_up by queue."""
    return {
        ls["queue"]: s.value("runbook_queue_up", **ls) for ls in s.labelsets("runbook_queue_up")
    }


def assert_queue_alerts(s: Scrape, firing: list[tuple[str, str, str]], tmp_path: Path) -> None:
    """promtool evaluates alerts/queues.rules.yml on the scrape's queue series held for 45
    minutes: exactly these (alertname, severity, queue) fire."""
    assert_promtool_fires(
        [ROOT / "alerts" / "queues.rules.yml"],
        scrape_series(s.samples, "runbook_queue_"),
        [{"alertname": a, "severity": sev, "queue": q} for a, sev, q in firing],
        "45m",
        tmp_path,
        expr=FIRING,
    )


def doctor_out(dsn: str, items: str, capsys) -> str:
    """What the doctor prints for target app on dsn with these queue items (YAML lines)."""
    run_doctor(parse_config(f"targets:\n  - name: app\n    dsn: '{dsn}'\n    queues:\n{items}"))
    return capsys.readouterr().out


def doctor_rc(cfg: dict, capsys) -> tuple[int, str]:
    """The doctor's exit code and output for the config cfg."""
    rc = run_doctor(parse_config(yaml.safe_dump(cfg), "doctor-test.yml"))
    return rc, capsys.readouterr().out


def failed_run_error(run_exporter, dsn: str, *items: dict) -> str:
    """Start the exporter on preset_config(dsn, *items); the error of its first failed queues
    run."""
    ex = run_exporter(preset_config(dsn, *items))
    ex.wait_for(
        lambda s: s.value("runbook_collector_success", target="app", collector="queues") == 0,
        what="a failed queues run",
    )
    return next(
        st.last.error
        for key, st in ex.exporter.store.snapshot().items()
        if key[1] == "queues" and st.last is not None
    )


def assert_config_errors(cases: list[tuple[str, str]]) -> None:
    """Each case's queue items (YAML lines after ITEMS_BASE) are refused with expected in
    the message."""
    for items, expected in cases:
        with pytest.raises(ConfigError) as e:
            parse_config(ITEMS_BASE + items, "f.yml")
        assert expected in str(e.value), str(e.value)


def check_config_out(tmp_path: Path, text: str) -> str:
    """What `--check-config` prints for the config text (it must accept it)."""
    path = tmp_path / "c.yml"
    path.write_text(text)
    r = subprocess.run(
        [sys.executable, "-m", "exporter", "--config.file", str(path), "--check-config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout
