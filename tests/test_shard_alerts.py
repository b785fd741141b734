"""The shard alerts in a real Prometheus scraping real sharded exporters: replicas 0/3, 1/3 and
1/3 leave index 2 uncollected (RunbookExporterShardMissing) and serve index 1 twice
(RunbookExporterShardDuplicated). The promtool tests in exporter/rules/tests/exporter.test.yml
cover the timing and the quiet cases; this checks the expressions and annotation templates
against the series the exporter really serves, with the labels a real scrape adds."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from exporter.config import parse_config
from exporter.demo.devstack import DevStack
from exporter.runtime import Exporter
from exporter.server import HTTPServer
from exporter.shard import Shard
from tests.test_probe_support import LocalServer, json_route

ROOT = Path(__file__).resolve().parent.parent
SHARD_ALERTS = {"RunbookExporterShardMissing", "RunbookExporterShardDuplicated"}


@pytest.mark.slow
def test_a_missing_and_a_duplicated_shard_fire_in_a_real_prometheus(server: LocalServer) -> None:
    # one healthy endpoint (the owner's slice has it; the shard series come from every replica)
    server.routes["/health"] = json_route({"status": "ok"})
    config = {
        "apps": [{"name": "shop", "endpoints": [{"name": "health", "url": server.url("/health")}]}]
    }
    cfg = parse_config(yaml.safe_dump(config), "shards.yml")
    running = []
    try:
        for shard in (Shard(0, 3), Shard(1, 3), Shard(1, 3)):
            exp = Exporter(shard.select(cfg), shard=shard)  # as the CLI starts it
            srv = HTTPServer(exp, "127.0.0.1:0")
            exp.start()
            srv.start()
            running.append((exp, srv))
        addresses = [f"127.0.0.1:{srv.port}" for _, srv in running]
        rules = [ROOT / "alerts" / "exporter.rules.yml"]
        with DevStack(addresses, rules=rules, interval=1.0, with_alertmanager=False) as stack:
            stack.wait_scraped()
            prom = stack.prom

            def firing() -> dict[str, dict]:
                got = {a["labels"]["alertname"]: a for a in prom.alerts()}
                return (
                    got
                    if {n for n, a in got.items() if a["state"] == "firing"} >= (SHARD_ALERTS)
                    else {}
                )

            alerts = prom.wait_until(firing, 30, "both shard alerts to fire")
    finally:
        for exp, srv in running:
            srv.stop()
            exp.stop()

    missing = alerts["RunbookExporterShardMissing"]
    assert missing["labels"] == {
        "alertname": "RunbookExporterShardMissing",
        "job": "runbook-exporter",
        "severity": "warning",
    }
    assert (
        missing["annotations"]["summary"]
        == "runbook-exporter job runbook-exporter serves 2 of its 3 shards"
    )
    assert (
        "only 2 distinct shard indexes (0, 1, 1) of the 3" in missing["annotations"]["description"]
    )
    dup = alerts["RunbookExporterShardDuplicated"]
    assert dup["labels"] == {
        "alertname": "RunbookExporterShardDuplicated",
        "job": "runbook-exporter",
        "shard": "1",
        "severity": "warning",
    }
    assert dup["annotations"]["summary"] == (
        "2 runbook-exporter replicas of job runbook-exporter claim shard 1"
    )
    # the replicas are all scraped: nothing else of the exporter group fires
    assert set(alerts) == SHARD_ALERTS, sorted(alerts)
