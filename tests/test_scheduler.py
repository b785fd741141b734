"""The background loop: own interval and timeout per job, no overlap, failures isolated."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time

from prometheus_client.core import GaugeMetricFamily

from exporter.logs import JsonFormatter, LogfmtFormatter
from exporter.scheduler import Job, PartialFailure, Scheduler, Store
from exporter.secrets import register_secret


def run_for(scheduler: Scheduler, seconds: float) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        await scheduler.run(stop)

    asyncio.run(main())


def test_jobs_never_overlap_and_overruns_skip_ticks():
    running, peak, starts = 0, 0, []

    async def slow() -> list:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        starts.append(time.monotonic())
        await asyncio.sleep(0.25)  # longer than the 0.1 s interval
        running -= 1
        return []

    s = Scheduler(Store())
    s.add(Job(("t", "slow"), interval=0.1, timeout=1, run=slow))
    run_for(s, 1.1)
    assert peak == 1
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps and min(gaps) >= 0.25  # the next run waits for the previous one
    assert len(starts) <= 5  # missed ticks are skipped, not run in a burst


def test_partial_failure_keeps_the_parts_that_worked_and_counts_as_failed():
    fam = GaugeMetricFamily("runbook_queue_up", "q", labels=["queue"])
    fam.add_metric(["good"], 1)
    fam.add_metric(["bad"], 0)

    async def half() -> list:
        raise PartialFailure("queues[1].table: table missing", [fam])

    store = Store()
    asyncio.run(Scheduler(store).run_once(Job(("t", "queues"), 1, 1, half)))
    st = store.states[("t", "queues")]
    assert st.last is not None and not st.last.success
    assert st.last.families == [fam]
    assert st.last.error == "queues[1].table: table missing"
    assert (st.errors_total, st.last_success_at) == (1, None)


def test_timeout_and_failure_are_recorded_and_isolated():
    fast_runs = 0

    async def hang() -> list:
        await asyncio.sleep(10)
        return []

    async def boom() -> list:
        raise RuntimeError("query failed")

    async def fast() -> list:
        nonlocal fast_runs
        fast_runs += 1
        fam = GaugeMetricFamily("runbook_x", "x", labels=["target"])
        fam.add_metric(["t"], 1)
        return [fam]

    store = Store()
    s = Scheduler(store)
    s.add(Job(("t", "hang"), interval=0.2, timeout=0.1, run=hang))
    s.add(Job(("t", "boom"), interval=0.2, timeout=1, run=boom))
    s.add(Job(("t", "fast"), interval=0.1, timeout=1, run=fast))
    run_for(s, 1.0)
    snap = store.snapshot()
    assert snap[("t", "hang")].last.error == "timed out after 0.1s"
    assert snap[("t", "boom")].last.error == "RuntimeError: query failed"
    assert not snap[("t", "boom")].last.success and snap[("t", "boom")].last.families == []
    assert snap[("t", "boom")].errors_total == snap[("t", "boom")].runs_total >= 3
    assert snap[("t", "fast")].last.success and fast_runs >= 8  # undisturbed by the others


def test_log_lines_redact_registered_secrets():
    register_secret("hunter2-pw")
    rec = logging.LogRecord("exporter", logging.WARNING, "", 0, "login as x:hunter2-pw", (), None)
    rec.dsn = "postgresql://x:hunter2-pw@db/app"
    line = LogfmtFormatter().format(rec)
    assert "hunter2-pw" not in line and "<redacted>" in line
    data = json.loads(JsonFormatter().format(rec))
    assert "hunter2-pw" not in json.dumps(data) and data["level"] == "warning"
