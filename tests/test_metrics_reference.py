"""docs/metrics.md is what the code declares, and a real scrape serves only declared metrics
whose names pass `promtool check metrics`."""

from __future__ import annotations

from tests.helpers import assert_declared, assert_promtool_clean
from tools.metricsdoc import DOC, render


def test_reference_is_current():
    assert DOC.read_text() == render(), "docs/metrics.md is stale: python -m tools.metricsdoc"


def test_every_served_metric_is_declared_and_promtool_clean(fresh_db, run_exporter):
    ex = run_exporter(
        {"targets": [{"name": "app", "dsn": fresh_db, "collect_interval": "1s", "queues": []}]}
    )
    s = ex.wait_for(
        lambda s: s.value("runbook_collector_success", target="app", collector="database") == 1,
        what="first collection",
    )
    served = set(s.families)
    assert served, "nothing served"
    assert_declared(served)
    assert_promtool_clean(s.text)
