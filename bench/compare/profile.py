"""Where a collector's run spends its time: pyinstrument over many runs of the named
collectors on the exporter's own session, against bench/compare's jobs table in the doctor's
index state. Run by hand (`pip install -e '.[bench]'` brings pyinstrument):

    .venv/bin/python -m bench.compare.profile [--rows 20000] [--runs 300] queues statements
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from bench.compare import configs, dataset
from exporter import db, sources
from exporter.config import parse_config


async def profile(target, names: list[str], runs: int) -> None:
    from pyinstrument import Profiler

    conn = await db.open_connection(target)
    try:
        rtt = []
        for _ in range(200):  # a trivial statement's round trip, for scale
            started = time.perf_counter()
            await conn.execute("SELECT 1")
            rtt.append((time.perf_counter() - started) * 1000)
        print(f"round trip of SELECT 1: {statistics.median(rtt):.3f} ms (median of 200)")
        for name in names:
            collector = sources.collector(name)(target, getattr(target.collectors, name))

            async def one(c=collector) -> None:
                async with db.run_transaction(conn, target):
                    await c.collect(conn)

            await one()  # warm-up: catalog checks
            profiler = Profiler(interval=0.0002, async_mode="disabled")
            profiler.start()
            for _ in range(runs):
                await one()
            profiler.stop()
            print(f"===== {name}: {runs} runs")
            print(profiler.output_text(unicode=False, color=False))
    finally:
        await conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("collectors", nargs="+")
    args = ap.parse_args()
    server = dataset.start()
    try:
        dataset.build_jobs(server, args.rows)
        config = configs.runbook_main(server.dsn(dataset.ROLES["runbook-exporter"]), 15)
        path = configs.write(Path(tempfile.mkdtemp(prefix="bench-profile-")) / "c.yml", config)
        statements, _ = dataset.doctor_indexes(path)
        dataset.apply_indexes(server, statements)
        target = parse_config(path.read_text(), str(path)).targets[0]
        asyncio.run(profile(target, args.collectors, args.runs))
    finally:
        server.pg.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
