"""The render cache joins each family's kept text (exporter/exposition.py): its output must be
byte for byte what prometheus_client renders for the merged families, on every change."""

from __future__ import annotations

import time

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.exposition import generate_latest

from exporter import exposition
from exporter.config import parse_config
from exporter.exposition import FamilyTexts, MetricsCache
from exporter.runtime import Exporter
from exporter.scheduler import JobResult

CONFIG = """
apps:
  - name: web
    endpoints:
      - {name: a, url: "http://127.0.0.1:9/a"}
      - {name: b, url: "http://127.0.0.1:9/b"}
      - {name: c, url: "http://127.0.0.1:9/c"}
"""


def result(endpoint: str, value: float) -> JobResult:
    """Families every job has under the same names, of each kind the exporter serves."""
    g = GaugeMetricFamily("runbook_test_depth", "Depth.\nSecond line \\ kept.", labels=["ep", "q"])
    g.add_metric([endpoint, 'a "quoted"\n# not a comment'], value)
    g.add_metric([endpoint, "b"], float("nan") if value > 2 else value * 2)
    c = CounterMetricFamily("runbook_test_runs", "Runs.", labels=["ep"])
    c.add_metric([endpoint], value * 10)
    h = HistogramMetricFamily("runbook_test_seconds", "Seconds.", labels=["ep"])
    h.add_metric([endpoint], [("0.1", 1), ("1.0", 3), ("+Inf", 4)], sum_value=value)
    i = InfoMetricFamily("runbook_test_build", "Build.")
    i.add_metric([], {"ep": endpoint, "version": "1"})
    empty = GaugeMetricFamily("runbook_test_none", "No samples this run.", labels=["ep"])
    return JobResult([g, c, h, i, empty], True, 0.01, time.time())


def test_joined_texts_equal_the_merged_render_across_changes(monkeypatch):
    exp = Exporter(parse_config(CONFIG, "test.yml"))
    keys = [job.key for job in exp.scheduler.jobs]
    for n, key in enumerate(keys):
        exp.store.put(key, result(key[1], n))
    texts = FamilyTexts()
    assert texts.render(exp.families()) == generate_latest(exp.registry)

    formatted: list[str] = []
    real = exposition.generate_latest

    def counting(registry):
        formatted.extend(f.name for f in registry.collect())
        return real(registry)

    monkeypatch.setattr(exposition, "generate_latest", counting)
    exp.store.put(keys[1], result(keys[1][1], 7.5))  # one job changes
    assert texts.render(exp.families()) == real(exp.registry)
    # the other jobs' families were not formatted again, only the new ones and the
    # exporter's own series (rebuilt on every collect)
    assert formatted.count("runbook_test_depth") == 1
    assert formatted.count("runbook_test_runs") == 1


def test_a_family_with_openmetrics_samples_falls_back_to_the_whole_render():
    exp = Exporter(parse_config(CONFIG, "test.yml"))
    c = CounterMetricFamily("runbook_test_started", "Started.", labels=["ep"], created=12.0)
    c.add_metric(["a"], 1, created=12.0)
    exp.store.put(exp.scheduler.jobs[0].key, JobResult([c], True, 0.01, time.time()))
    assert FamilyTexts().render(exp.families()) is None
    assert MetricsCache(exp).get().body == generate_latest(exp.registry)
