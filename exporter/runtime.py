"""The running exporter: jobs for every target's collectors and every app's endpoints, the
background loop that runs them, and the Prometheus collector that serves their last results.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import threading
from collections.abc import Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from exporter import __version__, collectors
from exporter.collectors import thresholds
from exporter.config import Config, Target
from exporter.db import TargetDB
from exporter.metrics import merge, spec
from exporter.probes import thresholds as probe_thresholds
from exporter.probes.http import Clients
from exporter.probes.runner import probe_jobs
from exporter.scheduler import Job, Scheduler, Store

log = logging.getLogger("exporter")
SRC = "runtime.py"
TC = ("target", "collector")

BUILD_INFO = spec(
    "runbook_exporter_build_info",
    "gauge",
    "runbook-exporter build information.",
    ("version", "python_version"),
    SRC,
)
TARGET_UP = spec(
    "runbook_target_up",
    "gauge",
    "1 when the exporter holds a working connection to the target database.",
    ("target",),
    SRC,
)
COLLECTOR_SUCCESS = spec(
    "runbook_collector_success", "gauge", "1 when the collector's last run succeeded.", TC, SRC
)
COLLECTOR_DURATION = spec(
    "runbook_collector_duration_seconds",
    "gauge",
    "How long the collector's last run took.",
    TC,
    SRC,
)
COLLECTOR_LAST_SUCCESS = spec(
    "runbook_collector_last_success_timestamp_seconds",
    "gauge",
    "Unix time of the collector's last successful run.",
    TC,
    SRC,
)
COLLECTOR_INTERVAL = spec(
    "runbook_collector_interval_seconds",
    "gauge",
    "Configured interval of the collector, to tell a stale one.",
    TC,
    SRC,
)
COLLECTOR_TIMEOUT = spec(
    "runbook_collector_timeout_seconds", "gauge", "Configured timeout of the collector.", TC, SRC
)
COLLECTOR_RUNS = spec("runbook_collector_runs", "counter", "Runs of the collector.", TC, SRC)
COLLECTOR_ERRORS = spec(
    "runbook_collector_errors", "counter", "Failed runs of the collector.", TC, SRC
)


def _db_job(db: TargetDB, name: str, settings, delay: float) -> Job:
    collect = collectors.get(name)
    t = db.target

    async def run() -> list[Metric]:
        async with db.connection() as conn:
            return await collect(conn, t, settings)

    return Job((t.name, name), t.interval_of(settings), t.timeout_of(settings), run, delay)


class Exporter(Collector):
    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = Store()
        self.scheduler = Scheduler(self.store)
        self.dbs: dict[str, TargetDB] = {}
        self._static = thresholds.families(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        for t in config.targets:
            self._add_target(t)
        # shared by all endpoints with the same TLS and redirect settings, closed on stop
        self.http_clients = Clients()
        if config.apps:
            for job in probe_jobs(config.apps, self.http_clients):
                self.scheduler.add(job)
            self._static += probe_thresholds.families(config.apps)
        self._static += self._job_settings()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def _add_target(self, t: Target) -> None:
        db = self.dbs[t.name] = TargetDB(t)
        for i, (name, settings) in enumerate(t.enabled_collectors()):
            # stagger a target's collectors a little so they do not queue on the connection
            self.scheduler.add(_db_job(db, name, settings, delay=0.05 * i))

    def _job_settings(self) -> list[Metric]:
        """Series that do not change while the exporter runs, built once, not per scrape."""
        interval, timeout = COLLECTOR_INTERVAL.family(), COLLECTOR_TIMEOUT.family()
        for job in self.scheduler.jobs:
            if job.self_metrics:
                interval.add_metric(list(job.key), job.interval)
                timeout.add_metric(list(job.key), job.timeout)
        return [
            BUILD_INFO.one(1, __version__, platform.python_version()),
            *(f for f in (interval, timeout) if f.samples),
        ]

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        ready = threading.Event()

        def main() -> None:
            asyncio.run(self._main(ready))

        self._thread = threading.Thread(target=main, name="collection-loop", daemon=True)
        self._thread.start()
        ready.wait(10)

    async def _main(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        ready.set()
        try:
            await self.scheduler.run(self._stop)
        finally:
            for db in self.dbs.values():
                await db.close()
            await self.http_clients.aclose()

    def stop(self, timeout: float = 10) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def ready(self) -> bool:
        """Ready once every job has completed its first run (successful or not)."""
        snap = self.store.snapshot()
        return all(j.key in snap for j in self.scheduler.jobs)

    # --- Prometheus collector: only reads the store ------------------------------------

    def collect(self) -> Iterator[Metric]:
        snap = self.store.snapshot()
        fams: list[Metric] = list(self._static)
        up = TARGET_UP.family()
        for name, db in self.dbs.items():
            up.add_metric([name], db.up)
        fams.append(up)
        own = {
            s: s.family()
            for s in (
                COLLECTOR_SUCCESS,
                COLLECTOR_DURATION,
                COLLECTOR_LAST_SUCCESS,
                COLLECTOR_RUNS,
                COLLECTOR_ERRORS,
            )
        }
        for job in self.scheduler.jobs:
            st = snap.get(job.key)
            if job.self_metrics:
                labels = list(job.key)
                own[COLLECTOR_RUNS].add_metric(labels, st.runs_total if st else 0)
                own[COLLECTOR_ERRORS].add_metric(labels, st.errors_total if st else 0)
            if st is None or st.last is None:
                continue
            if job.self_metrics:
                own[COLLECTOR_SUCCESS].add_metric(labels, 1 if st.last.success else 0)
                own[COLLECTOR_DURATION].add_metric(labels, st.last.duration)
                if st.last_success_at is not None:
                    own[COLLECTOR_LAST_SUCCESS].add_metric(labels, st.last_success_at)
            # a failed run's old series are dropped, not served as if fresh (docs/metrics.md)
            fams.extend(st.last.families)
        fams.extend(f for f in own.values() if f.samples)
        yield from merge(fams)
