"""What the app reports about itself (issue 14, item 4): values of its metrics JSON with a
`meaning` and `unit` are served normalised to base units under fixed series, with the
endpoint's thresholds, and the shipped rules (alerts/app-reported.rules.yml) fire on them with
the runbooks' severities — checked on real scrapes of the real exporter probing real HTTP
servers on 127.0.0.1, with promtool.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.config import ConfigError, parse_config
from tests.helpers import assert_promtool_clean, assert_promtool_fires, scrape_series
from tests.incidents import APP_REPORTED
from tests.test_probe_http import probed
from tests.test_probe_support import apps_config, endpoint, json_route

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "alerts" / "app-reported.rules.yml"


def test_units_are_normalised_and_thresholds_served_only_where_a_meaning_is(server, run_exporter):
    server.routes["/metrics"] = json_route(
        {"errorRate": 6, "rt": {"p95": 2.5, "p99": 4100, "avg": "900"}, "mem": {"used": 0.5}}
    )
    server.routes["/health"] = json_route({"status": "ok"})
    metrics = [
        {"path": "errorRate", "meaning": "error_ratio", "unit": "percent"},
        {"path": "rt.p95", "meaning": "latency_p95", "unit": "seconds"},
        # a name too: served under both, in base units
        {"name": "p99_seconds", "path": "rt.p99", "meaning": "latency_p99", "unit": "milliseconds"},
        {"path": "rt.avg", "meaning": "latency_average", "unit": "milliseconds"},
        {"path": "mem.used", "meaning": "memory_ratio", "unit": "ratio"},
    ]
    overrides = {"app_error_ratio_critical": 0.1, "app_latency_p95_warning": "1500ms"}
    ex = run_exporter(
        apps_config(
            endpoint("m", server.url("/metrics"), metrics=metrics, thresholds=overrides),
            endpoint("h", server.url("/health")),
        )
    )
    s = ex.wait_for(lambda s: probed("m")(s) and probed("h")(s), timeout=10)
    m = {"app": "web", "endpoint": "m"}
    assert s.value("runbook_app_error_ratio", **m) == pytest.approx(0.06)
    assert s.value("runbook_app_latency_p95_seconds", **m) == 2.5
    assert s.value("runbook_app_latency_p99_seconds", **m) == pytest.approx(4.1)
    assert s.value("runbook_app_p99_seconds", **m) == pytest.approx(4.1)
    assert s.value("runbook_app_latency_average_seconds", **m) == pytest.approx(0.9)
    assert s.value("runbook_app_memory_ratio", **m) == 0.5
    # thresholds: the runbooks' defaults, the endpoint's overrides
    th = {
        ("runbook_app_error_ratio_threshold", "warning"): 0.01,
        ("runbook_app_error_ratio_threshold", "critical"): 0.1,
        ("runbook_app_latency_p95_threshold_seconds", "warning"): 1.5,
        ("runbook_app_latency_p95_threshold_seconds", "critical"): 5.0,
        ("runbook_app_latency_average_threshold_seconds", "warning"): 1.0,
        ("runbook_app_latency_average_threshold_seconds", "critical"): 2.0,
        ("runbook_app_memory_ratio_threshold", "warning"): 0.75,
        ("runbook_app_memory_ratio_threshold", "critical"): 0.9,
    }
    for (name, sev), want in th.items():
        assert s.value(name, severity=sev, **m) == want, (name, sev)
        # an endpoint without that meaning gets no threshold series (bounded cardinality)
        assert s.value(name, severity=sev, app="web", endpoint="h") is None
    assert_promtool_clean(s.text)


def test_meanings_check_config_and_defaults_merge() -> None:
    text = """
apps:
  - name: erp
    defaults:
      thresholds: {app_error_ratio_warning: 0.03, app_error_ratio_critical: 0.10}
    endpoints:
      - name: metrics
        url: http://127.0.0.1:9/api/health/metrics
        thresholds: {app_error_ratio_critical: 0.2}
        metrics:
          - {path: errorRate, meaning: error_ratio, unit: percent}
          - {name: p95_seconds, path: responseTime.p95, meaning: latency_p95, unit: milliseconds}
"""
    ep = parse_config(text, "t.yml").apps[0].endpoints[0]
    assert (ep.thresholds.app_error_ratio_warning, ep.thresholds.app_error_ratio_critical) == (
        0.03,
        0.2,
    )
    assert [m.factor for m in ep.metrics] == [0.01, 0.001]
    assert "error_ratio (percent)" in ep.describe()
    assert "runbook_app_p95_seconds + latency_p95 (milliseconds)" in ep.describe()
    with pytest.raises(ConfigError, match=r"t\.yml:\d+: .*metrics\[0\]: meaning latency_p95 needs"):
        parse_config(
            text.replace("meaning: error_ratio, unit: percent", "meaning: latency_p95"), "t.yml"
        )


def test_app_reporting_6_percent_errors_and_a_2_5s_p95_pages_with_the_runbooks_severities(
    sample_app, run_exporter, tmp_path: Path
):
    """Acceptance: the sample app reports 6 % errors, a 2.5 s P95, a 900 ms average and 80 %
    memory. With the defaults (runbook 004): error ratio critical (> 5 %) and warning (> 1 %),
    P95 warning (> 2 s, not > 5 s), memory warning (> 75 %), average quiet (< 1 s). The same
    app with runbook 000's thresholds (error rate 3 % / 10 %, memory 80 % / 95 %): error ratio
    warning only, memory quiet."""
    sample_app.set_incident("degraded")
    url = f"{sample_app.url}/api/health/metrics"
    fast = {"interval": "1s", "timeout": "1s"}
    runbook_000 = {
        "app_error_ratio_warning": 0.03,
        "app_error_ratio_critical": 0.10,
        "app_memory_ratio_warning": 0.80,
        "app_memory_ratio_critical": 0.95,
    }
    ex = run_exporter(
        {
            "apps": [
                {
                    "name": "eden-erp",
                    "defaults": fast,
                    "endpoints": [{"name": "metrics", "url": url, "metrics": APP_REPORTED}],
                },
                {
                    "name": "pdf-processor",
                    "defaults": {**fast, "thresholds": runbook_000},
                    "endpoints": [{"name": "metrics", "url": url, "metrics": APP_REPORTED}],
                },
            ]
        }
    )
    s = ex.wait_for(
        lambda s: all(probed("metrics", app=a)(s) for a in ("eden-erp", "pdf-processor")),
        timeout=15,
        what="both apps probed",
    )
    erp = {"app": "eden-erp", "endpoint": "metrics"}
    assert s.value("runbook_app_error_ratio", **erp) == 0.06
    assert s.value("runbook_app_latency_p95_seconds", **erp) == 2.5
    assert s.value("runbook_app_memory_ratio", **erp) == 0.8
    assert_promtool_clean(s.text)

    def fires(app: str, alert: str, severity: str) -> dict[str, str]:
        return {"alertname": alert, "severity": severity, "app": app, "endpoint": "metrics"}

    assert_promtool_fires(
        [RULES],
        scrape_series(s.samples, "runbook_app_"),
        [
            fires("eden-erp", "AppErrorRatioHigh", "critical"),
            fires("eden-erp", "AppErrorRatioHigh", "warning"),
            fires("eden-erp", "AppLatencyP95High", "warning"),
            fires("eden-erp", "AppMemoryHigh", "warning"),
            fires("pdf-processor", "AppErrorRatioHigh", "warning"),
            fires("pdf-processor", "AppLatencyP95High", "warning"),
        ],
        "20m",
        tmp_path,
    )


EXAMPLES = sorted((ROOT / "examples").glob("*.yml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_give_every_table_queue_a_dead_letter(path: Path) -> None:
    """QueueDeadLetterGrowing needs runbook_queue_dead_letter_jobs, which only a dead status or
    a DLQ table gives: an example without one teaches a queue that can never alert on it."""
    cfg = parse_config(path.read_text(), path.name)
    for target in cfg.targets:
        for q in target.queues:
            if hasattr(q, "statuses"):  # a table queue (pgmq names its DLQ queue instead)
                assert q.statuses.dead or q.dead_letter_table, f"{target.name}/{q.name}"
