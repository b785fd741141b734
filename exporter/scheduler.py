"""Background collection: every job runs on its own interval, bounded by its timeout.

A job never overlaps itself (its loop awaits the run before sleeping), a slow or failing job
never delays another (one asyncio task each), and missed ticks are skipped rather than run in
a burst. Results go to the Store; /metrics reads only the Store and never waits on a job.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from prometheus_client.core import Metric

from exporter.secrets import redact

log = logging.getLogger("exporter.scheduler")


@dataclass(frozen=True)
class JobResult:
    families: list[Metric]
    success: bool
    duration: float  # seconds the run took
    finished_at: float  # unix time
    error: str | None = None


class PartialFailure(Exception):
    """A run that failed for part of what it measures (one queue of several): the families of
    the parts that worked are served, the run still counts as failed, the message says why."""

    def __init__(self, message: str, families: list[Metric]) -> None:
        super().__init__(message)
        self.families = families


@dataclass
class Job:
    key: tuple[str, str]  # (target or app, collector or endpoint)
    interval: float
    timeout: float
    run: Callable[[], Awaitable[list[Metric]]]
    first_delay: float = 0.0  # spreads jobs so they do not all fire at once
    # DB collectors get runbook_collector_* self-metrics; probes report their own success
    self_metrics: bool = True


@dataclass
class JobState:
    last: JobResult | None = None
    last_success_at: float | None = None
    errors_total: int = 0
    runs_total: int = 0


@dataclass
class Store:
    """Last completed result of every job; written by the loop, read by scrapes."""

    states: dict[tuple[str, str], JobState] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # bumped by every put: the HTTP server re-renders /metrics only when it changed
    version: int = 0

    def put(self, key: tuple[str, str], result: JobResult) -> None:
        with self.lock:
            self.version += 1
            st = self.states.setdefault(key, JobState())
            st.last = result
            st.runs_total += 1
            if result.success:
                st.last_success_at = result.finished_at
            else:
                st.errors_total += 1

    def snapshot(self) -> dict[tuple[str, str], JobState]:
        with self.lock:
            return {
                k: JobState(v.last, v.last_success_at, v.errors_total, v.runs_total)
                for k, v in self.states.items()
            }


class Scheduler:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.jobs: list[Job] = []

    def add(self, job: Job) -> None:
        self.jobs.append(job)

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [asyncio.create_task(self._loop(j), name=f"job {j.key}") for j in self.jobs]
        try:
            await stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def run_once(self, job: Job) -> JobResult:
        started = time.monotonic()
        families: list[Metric] = []
        error: str | None = None
        try:
            async with asyncio.timeout(job.timeout):
                families = await job.run()
        except PartialFailure as e:
            families, error = e.families, redact(str(e))
        except TimeoutError:
            error = f"timed out after {job.timeout:g}s"
        except Exception as e:  # one failing job must never stop the others
            error = redact(f"{type(e).__name__}: {e}".strip())
        result = JobResult(families, error is None, time.monotonic() - started, time.time(), error)
        self.store.put(job.key, result)
        return result

    async def _loop(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(job.first_delay)
        next_at = loop.time()
        was_ok: bool | None = None
        while True:
            result = await self.run_once(job)
            if result.success != was_ok and job.self_metrics:
                if result.success:
                    if was_ok is not None:
                        log.info("collector recovered", extra={"job": job.key})
                else:
                    log.warning("collector failed", extra={"job": job.key, "error": result.error})
            was_ok = result.success
            next_at += job.interval
            now = loop.time()
            if next_at <= now:  # overran: skip the missed ticks instead of bursting
                next_at += math.ceil((now - next_at) / job.interval) * job.interval
            await asyncio.sleep(next_at - now)
