"""bench/compare's smoke mode end to end (tiny sizes and windows): every measurement is in the
result file with a sane value. No timing thresholds: the figures are benchmarks
(docs/benchmarks.md), this only proves the command works on a clean checkout with the Debian
tools scripts/setup.sh installs (a missing one fails the run, it is never skipped)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.compare import report

ROOT = Path(__file__).resolve().parent.parent
EXPORTERS = ("runbook-exporter", "postgres_exporter", "postgres_exporter + queue SQL")
COLLECTORS = ("connections", "database", "queues", "tables", "statements")
SETUPS = ("primary key only", "doctor's indexes")


def positive(x: float) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def check_wrk(name: str, w: dict) -> None:
    assert positive(w["rps"]) and positive(w["requests"]), (name, w)
    assert positive(w["p50_ms"]) and w["p99_ms"] >= w["p50_ms"], (name, w)


def check_size(n: str, size: dict) -> None:
    counts = size["table"]["counts"]
    assert sum(counts.values()) == int(n)
    # 1 % failed and 0.1 % dead, less the few rows the active ones took
    assert 0.9 <= counts["failed"] / (int(n) / 100) <= 1, counts
    assert 0.9 <= counts["dead"] / (int(n) / 1000) <= 1, counts
    assert counts["pending"] > 0 and counts["processing"] > 0, counts
    assert any("CREATE INDEX" in s for s in size["doctor_indexes"])
    for setup in SETUPS:
        timed = size["collectors"][setup]
        for name in COLLECTORS:
            c = timed[name]
            assert "error" not in c, (setup, name, c)
            assert positive(c["ms"]) and positive(c["raw_sql_ms"]), (setup, name, c)
            assert c["statements"] >= 1 and len(c["sql"]) == c["statements"], (setup, name)
        scans = [
            e for e in timed["queues"]["explain"] if e["plan"] != "EXPLAIN only (planner estimate)"
        ]
        assert scans and all(e["buffers"] > 0 for e in scans), timed["queues"]["explain"]
    with_indexes = [e["plan"] for e in size["collectors"]["doctor's indexes"]["queues"]["explain"]]
    assert any("jobs_active_idx" in p for p in with_indexes), with_indexes
    by = size["exporters"]["by"]
    assert set(by) == set(EXPORTERS)
    for name, e in by.items():
        assert positive(e["start_to_complete_s"]) and e["start_to_complete_s"] < 60, (name, e)
        assert e["scrapes"] >= 3 and e["series"] > 50, (name, e)
        # each exporter queried the database in the window, under its own role
        assert positive(e["pg_calls_per_min"]) and positive(e["pg_ms_per_min"]), (name, e)
        assert e["cpu_s_per_min"] >= 0 and 1 < e["rss_mib"] < 1024, (name, e)
        check_wrk(name, e["wrk_c1"])
        check_wrk(name, e["wrk_c200"])
    ours = by["runbook-exporter"]
    assert ours["failing_collectors"] == []
    check_wrk("runbook-exporter, new connections", ours["wrk_c1_new_connections"])
    assert set(COLLECTORS) <= set(ours["self_reported_ms"]), ours["self_reported_ms"]


def check_probes(p: dict) -> None:
    assert p["endpoints"] == 50 and p["delay_ms"] == 200
    for name in ("runbook-exporter", "blackbox_exporter"):
        e = p[name]
        # reported - true: never much below 0 (an answer cannot come before the delay), and
        # far below the delay itself
        assert e["error"]["n"] >= 49, (name, e)
        assert (
            -1 < e["error"]["median_ms"] < 200 and e["error"]["p99_ms"] >= e["error"]["median_ms"]
        )
        assert e["refused"]["n"] >= 1 and 0 <= e["refused"]["median_ms"] < 1000, (name, e)
        assert positive(e["cpu_ms_per_probe"]) and positive(e["cpu_s_per_min"]), (name, e)
        assert 1 < e["rss_mib"] < 1024, (name, e)
        assert positive(e["start_to_complete_s"]) and e["series"] > 0
        check_wrk(name, e["wrk_c1"])
        check_wrk(name, e["wrk_c200"])
    assert p["runbook-exporter"]["refused"]["reported_reason"] == "connect"
    assert p["blackbox_exporter"]["refused"]["reported_success"] == 0
    assert p["server_late_ms"]["n"] > 0


@pytest.mark.slow
def test_compare_smoke_measures_everything(tmp_path):
    out = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.compare", "--smoke", "--output", str(out), "--no-doc"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["mode"] == "smoke"
    for tool in ("postgresql", "prometheus-postgres-exporter", "prometheus-blackbox-exporter"):
        assert r["versions"][tool], tool
    assert r["versions"]["postgresql"].startswith("15.")
    assert sorted(r["sizes"], key=int) == ["2000", "20000"]
    for n, size in r["sizes"].items():
        check_size(n, size)
    check_probes(r["probes"])
    # every figure of the summary has its anchor's value and ratio; every target a verdict
    assert len(r["summary"]) >= 20
    for row in r["summary"]:
        assert math.isfinite(row["ours"]) and math.isfinite(row["anchor_value"]), row
        assert row["ratio"] is not None and math.isfinite(row["ratio"]), row
        assert (row["met"] is None) == (row["target"] is None), row
    targets = {row["target"] for row in r["summary"]}
    assert {"≤ 0.2x", "≥ 1x", "≤ 1.5x", "≤ 1.1x", "≤ 0.05x", "≤ 1x", "≤ 60 MB"} <= targets
    # the docs block renders from these results (the full run writes it)
    block = report.render(r)
    assert block.startswith(report.START) and block.endswith(report.END)
    for name in EXPORTERS:
        assert f"| {name} |" in block, name
