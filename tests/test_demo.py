"""The README's demo command, run as a user runs it: every collector and probe reports."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from exporter.demo.pgserver import free_port
from tests.helpers import wait_for

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
