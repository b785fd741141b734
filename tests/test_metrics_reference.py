"""docs/metrics.md is what the code declares, and a real scrape serves only declared metrics
whose names pass `promtool check metrics`."""

from __future__ import annotations

import shutil
import subprocess

from exporter.metrics import load_all_specs
from exporter.metricsdoc import DOC, render


def test_reference_is_current():
    assert DOC.read_text() == render(), "docs/metrics.md is stale: python -m exporter.metricsdoc"


def test_every_served_metric_is_declared_and_promtool_clean(fresh_db, run_exporter):
    ex = run_exporter(
        {"targets": [{"name": "app", "dsn": fresh_db, "collect_interval": "1s", "queues": []}]}
    )
    s = ex.wait_for(
        lambda s: s.value("runbook_collector_success", target="app", collector="database") == 1,
        what="first collection",
    )
    declared = {spec.name for spec in load_all_specs().values()}
    served = set(s.families)
    assert served, "nothing served"
    assert served <= declared, f"served but not declared: {sorted(served - declared)}"
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: scripts/setup.sh installs Debian's prometheus"
    r = subprocess.run(
        [promtool, "check", "metrics"], input=s.text, capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 0, r.stdout + r.stderr
