"""The configuration examples of docs/supabase.md are valid: the exporter's target loads, and
the Prometheus scrape configuration for Supabase's Metrics API passes `promtool check config`."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from exporter.config import parse_config
from tests.helpers import tool

DOC = Path(__file__).resolve().parent.parent / "docs" / "supabase.md"


def yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.DOTALL)


def test_the_transaction_mode_target_loads():
    [block] = [b for b in yaml_blocks() if b.startswith("targets:")]
    target = parse_config(block, "docs/supabase.md").targets[0]
    assert target.pooler == "transaction"
    assert "port=6543" in target.dsn and "sslmode=verify-full" in target.dsn


def test_the_metrics_api_scrape_config_passes_promtool(tmp_path: Path):
    [block] = [b for b in yaml_blocks() if b.startswith("# prometheus.yml")]
    assert "password:" not in block  # the key only ever in a file
    key = tmp_path / "supabase-secret-key"
    key.write_text("sb_secret_placeholder\n")
    config = tmp_path / "prometheus.yml"
    config.write_text(block.replace("/etc/prometheus/secrets/supabase-secret-key", str(key)))
    r = subprocess.run(
        [tool("promtool"), "check", "config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_supavisor_scrape_config_passes_promtool(tmp_path: Path):
    [block] = [b for b in yaml_blocks() if b.startswith("# Supavisor's own /metrics")]
    assert "credentials:" not in block  # the JWT only ever in a file
    token = tmp_path / "supavisor-metrics.jwt"
    token.write_text("header.payload.signature\n")
    config = tmp_path / "prometheus.yml"
    config.write_text(block.replace("/etc/prometheus/secrets/supavisor-metrics.jwt", str(token)))
    r = subprocess.run(
        [tool("promtool"), "check", "config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
