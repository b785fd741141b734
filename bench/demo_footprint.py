"""Measure the demo exporter: /metrics latency and resident memory. Run by hand:

    .venv/bin/python bench/demo_footprint.py [--scrapes 500] [--warmup 20]

Starts `runbook-exporter demo` as a subprocess (throwaway PostgreSQL, sample app, exporter),
waits for every collector to report, then scrapes /metrics sequentially and reports latency
percentiles, body size and the exporter's RSS (VmRSS of the process, which also holds the demo
worker and sample app threads, so it is an upper bound for the exporter alone).
Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import time

import httpx

from exporter.demo.pgserver import free_port


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scrapes", type=int, default=500)
    ap.add_argument("--warmup", type=float, default=20.0, help="seconds before measuring")
    args = ap.parse_args()
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter",
            "demo",
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--no-stack",  # measure the exporter, not Prometheus scraping it
            "--duration",
            str(args.warmup + 120),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                print(f"error: {url} did not answer 200 within 60 s", file=sys.stderr)
                return 1
            time.sleep(0.5)
        time.sleep(args.warmup)
        text = httpx.get(url, timeout=5).text
        failing = [
            ln
            for ln in text.splitlines()
            if ln.startswith("runbook_collector_success") and ln.endswith(" 0.0")
        ]
        lat = []
        with httpx.Client() as c:
            for _ in range(args.scrapes):
                t0 = time.perf_counter()
                r = c.get(url)
                lat.append((time.perf_counter() - t0) * 1000)
                r.raise_for_status()
        lat.sort()
        samples = sum(1 for ln in text.splitlines() if ln and not ln.startswith("#"))
        print(f"scrapes: {len(lat)}  body: {len(text)} bytes, {samples} samples")
        print(
            f"/metrics latency ms: p50 {statistics.median(lat):.2f}  "
            f"p90 {lat[int(len(lat) * 0.9)]:.2f}  p99 {lat[int(len(lat) * 0.99)]:.2f}  "
            f"max {lat[-1]:.2f}"
        )
        print(f"demo process RSS: {rss_kib(proc.pid) / 1024:.1f} MiB")
        print(f"collectors failing: {failing or 'none'}")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
