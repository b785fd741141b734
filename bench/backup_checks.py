"""Measure what one backup check costs: the file source's bounded directory scan and a command
source's run, output cap included. Run by hand (not in CI; it creates 100,000 empty files):

    .venv/bin/python bench/backup_checks.py [--files 100000] [--runs 5]

Prints the median wall time of each (docs/backups.md, "Measured").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from exporter.backups import runner
from exporter.backups.base import SourceFailure
from exporter.config import parse_config

TOOL = str(Path(__file__).resolve().parent.parent / "tests" / "backup_tool.py")


def check(item: dict) -> None:
    b = parse_config(json.dumps({"backups": [item]})).backups[0]
    # the flood case fails at the cap, which is what is timed
    with contextlib.suppress(SourceFailure):
        asyncio.run(runner.source_of(b).read())


def median_ms(item: dict, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        check(item)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        for i in range(args.files):
            Path(d, f"backup-{i:06}.sql").touch()
        for cap in (10_000, args.files):
            item = {"name": "d", "file": {"directory": d, "max_entries": cap, "min_size": 0}}
            print(
                f"file: {args.files} files, max_entries {cap}: {median_ms(item, args.runs):.0f} ms"
            )
    cmd = [sys.executable, TOOL, "pgbackrest", str(int(time.time()))]
    ms = median_ms({"name": "p", "pgbackrest": {"command": cmd}}, args.runs)
    print(f"pgbackrest command: {ms:.0f} ms")
    flood = {"argv": [sys.executable, TOOL, "flood"], "max_output": "4MiB"}
    ms = median_ms({"name": "w", "walg": {"command": flood}}, args.runs)
    print(f"command printing 8 MiB, cut at 4 MiB: {ms:.0f} ms")
    print(f"(python {sys.version.split()[0]}, {os.cpu_count()} cpus)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
