"""Background collection: every job runs on its own interval, bounded by its timeout.

A job never overlaps itself (its loop awaits the run before sleeping), a slow or failing job
never delays another (one asyncio task each), and missed ticks are skipped rather than run in
a burst. Results go to the Store; /metrics reads only the Store and never waits on a job.

A job's loop is supervised: if it dies (an exception from anywhere in it, not just the run),
the death is stored as a failed run, logged, and the loop restarts after a backoff. Jobs can be
replaced while running (a configuration reload): unchanged jobs keep their task and history.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client.core import Metric

from exporter.secrets import redact

log = logging.getLogger("exporter.scheduler")

# a dead job loop restarts after RESTART_BACKOFF, doubling while it keeps dying before
# completing a run, up to RESTART_BACKOFF_MAX
RESTART_BACKOFF = 1.0
RESTART_BACKOFF_MAX = 30.0
# the first run of every job starts within this many seconds of start (see _first_delays)
FIRST_RUN_WITHIN = 5.0
# seconds a run cut by its timeout gets to finish cancelling before it is abandoned
CANCEL_GRACE = 1.0
# safety net for intervals and timeouts the config should have refused (0, negative, NaN, inf)
MIN_INTERVAL = 1.0
MAX_INTERVAL = 86400.0


@dataclass(frozen=True)
class JobResult:
    families: list[Metric]
    success: bool
    duration: float  # seconds the run took, its wait for a database session excluded
    finished_at: float  # unix time
    error: str | None = None
    wait: float = 0.0  # seconds the run waited for a database session before its own work


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
    # families to serve when a run raised, timed out or its loop died (a probe's success 0),
    # so the job's series say "failed" instead of vanishing; None: serve nothing
    on_error: Callable[[str], list[Metric]] | None = None
    # completes when the job should run before its next tick (its database is back), so fresh
    # data follows a reconnect within seconds instead of up to one interval later
    wake: Callable[[], Awaitable[None]] | None = None
    # the seconds the last run waited for a resource it shares (a target's session) before
    # its own work began: left out of the run's duration, reported apart
    waited: Callable[[], float] | None = None

    @property
    def kind(self) -> str:
        return "collector" if self.self_metrics else "probe"


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
    # changes whenever what the exporter serves may have changed (readers re-render on change)
    version: int = 0

    def put(self, key: tuple[str, str], result: JobResult) -> None:
        with self.lock:
            st = self.states.setdefault(key, JobState())
            st.last = result
            st.runs_total += 1
            if result.success:
                st.last_success_at = result.finished_at
            else:
                st.errors_total += 1
            self.version += 1

    def drop(self, keys: Iterable[tuple[str, str]]) -> None:
        """Forget removed jobs, so their series disappear."""
        with self.lock:
            for key in keys:
                self.states.pop(key, None)
            self.version += 1

    def touch(self) -> None:
        """Something served outside the store changed (a reload swapped jobs or thresholds)."""
        with self.lock:
            self.version += 1

    def snapshot(self) -> dict[tuple[str, str], JobState]:
        with self.lock:
            return {
                k: JobState(v.last, v.last_success_at, v.errors_total, v.runs_total)
                for k, v in self.states.items()
            }


def sane_timing(interval: float, timeout: float) -> tuple[float, float]:
    """A job's interval and timeout, clamped into what the loop can run: a non-positive or
    NaN interval would spin or divide by zero, an infinite one would freeze the job for ever."""
    if not interval > 0:  # also NaN
        interval = MIN_INTERVAL
    interval = min(interval, MAX_INTERVAL)
    if not timeout > 0:
        timeout = interval
    return interval, min(timeout, MAX_INTERVAL)


@dataclass
class _Running:
    """A job's supervised task and what readiness needs to know about it."""

    job: Job
    task: asyncio.Task | None = None
    # monotonic time by which its first run has finished or timed out; unknown (never) until
    # its task has started: readiness is read from another thread in between
    ready_at: float = math.inf
    completed: int = 0  # runs completed by the current loop (reset the restart backoff)


class Scheduler:
    def __init__(
        self,
        store: Store,
        restart_backoff: float = RESTART_BACKOFF,
        first_run_within: float = FIRST_RUN_WITHIN,
        cancel_grace: float = CANCEL_GRACE,
    ) -> None:
        self.store = store
        self.jobs: list[Job] = []
        self.restart_backoff = restart_backoff
        self.first_run_within = first_run_within
        self.cancel_grace = cancel_grace
        self._running: dict[tuple[str, str], _Running] = {}
        self._started = False
        self._ready = False

    def add(self, job: Job) -> None:
        self.jobs.append(job)

    async def run(self, stop: asyncio.Event) -> None:
        self._started = True
        for job in self.jobs:
            self._start(job)
        try:
            await stop.wait()
        finally:
            self._started = False
            running, self._running = list(self._running.values()), {}
            await self._cancel(running)

    async def replace(self, jobs: list[Job]) -> None:
        """Run `jobs` from now on. A job passed again (the same object) keeps its task and
        state; a new object under an existing key restarts with the key's history (runs and
        errors counted on); a key no longer present stops and its state is dropped."""
        keys = {j.key for j in jobs}
        if len(keys) != len(jobs):
            raise ValueError("jobs must have unique keys")
        kept = {id(j) for j in jobs}
        stale = [r for r in self._running.values() if id(r.job) not in kept]
        for r in stale:
            del self._running[r.job.key]
        await self._cancel(stale)
        self.store.drop([j.key for j in self.jobs if j.key not in keys])
        self.jobs = list(jobs)
        if self._started:
            for job in self.jobs:
                if job.key not in self._running:
                    self._start(job)

    def ready(self) -> bool:
        """True once every job has finished its first run or its first run's timeout has
        passed; it stays true afterwards (a reload does not make a serving exporter unready)."""
        if self._ready:
            return True
        if not self._started:
            return False
        done = self.store.snapshot().keys()
        now = time.monotonic()
        for job in self.jobs:
            r = self._running.get(job.key)
            if r is None or (job.key not in done and now < r.ready_at):
                return False
        self._ready = True
        return True

    async def run_once(self, job: Job) -> JobResult:
        started = time.monotonic()
        families: list[Metric] = []
        error: str | None = None
        _, timeout = sane_timing(job.interval, job.timeout)
        try:
            families = await self._bounded(job, timeout)
        except PartialFailure as e:
            families, error = e.families, redact(str(e))
        except TimeoutError:
            error = f"timed out after {timeout:g}s"
        except Exception as e:  # one failing job must never stop the others
            error = redact(f"{type(e).__name__}: {e}".strip())
        if error is not None and not families:
            families = _error_families(job, error)
        took = time.monotonic() - started
        wait = min(max(job.waited(), 0.0), took) if job.waited is not None else 0.0
        result = JobResult(families, error is None, took - wait, time.time(), error, wait)
        self.store.put(job.key, result)
        return result

    # --- internals -------------------------------------------------------------------

    async def _bounded(self, job: Job, timeout: float) -> list[Metric]:
        """The run's result within `timeout`, else TimeoutError. The run is its own task and is
        cancelled at the timeout; if it ignores the cancellation for `cancel_grace` seconds it
        is abandoned, so a run that swallows CancelledError cannot freeze its job's loop."""
        task = asyncio.ensure_future(job.run())
        # an outcome nobody waits for any more (cut or stopped) must not warn as unretrieved
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
        except asyncio.CancelledError:  # the job is being stopped (reload, shutdown)
            task.cancel()
            await asyncio.wait({task}, timeout=self.cancel_grace)
            raise
        if done:
            return task.result()
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=self.cancel_grace)
        if not done:
            log.error(
                f"{job.kind} run ignored its cancellation; abandoned",
                extra={"job": job.key, "timeout": timeout},
            )
        raise TimeoutError

    def _start(self, job: Job) -> None:
        r = _Running(job)
        self._running[job.key] = r
        r.task = asyncio.create_task(self._supervise(r), name=f"job {job.key}")

    @staticmethod
    async def _cancel(running: list[_Running]) -> None:
        tasks = [r.task for r in running if r.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _first_delays(self, job: Job, interval: float) -> tuple[float, float]:
        """(delay of the first run, phase of the runs after it). Jitter spreads jobs over their
        whole interval; so that every source reports soon after start, a first delay beyond
        first_run_within is scaled into that window for the first run only, and the later
        runs keep the jittered phase."""
        phase = job.first_delay if 0 <= job.first_delay < interval else 0.0
        first = phase
        if phase > self.first_run_within:
            first = self.first_run_within * phase / interval
        return first, phase

    async def _supervise(self, r: _Running) -> None:
        job = r.job
        interval, timeout = sane_timing(job.interval, job.timeout)
        if (interval, timeout) != (job.interval, job.timeout):
            log.warning(
                f"{job.kind} interval or timeout not usable; clamped",
                extra={
                    "job": job.key,
                    "interval": job.interval,
                    "timeout": job.timeout,
                    "used_interval": interval,
                    "used_timeout": timeout,
                },
            )
        first, phase = self._first_delays(job, interval)
        r.ready_at = time.monotonic() + first + timeout
        backoff = self.restart_backoff
        while True:
            r.completed = 0
            try:
                await self._loop(r, interval, first, phase)
            except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
                raise
            except BaseException as e:  # anything else: the job must come back
                if r.completed:
                    backoff = self.restart_backoff
                error = redact(f"job loop died: {type(e).__name__}: {e}".strip())
                log.error(
                    f"{job.kind} job died; restarting",
                    extra={"job": job.key, "error": error, "at": _where(e), "restart_in": backoff},
                )
                self._store_death(job, error)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RESTART_BACKOFF_MAX)
                first = phase = 0.0

    def _store_death(self, job: Job, error: str) -> None:
        try:
            result = JobResult(_error_families(job, error), False, 0.0, time.time(), error)
            self.store.put(job.key, result)
        except Exception as e:  # the store itself failing: the log line is all we can give
            log.error(
                "cannot record the job's failure",
                extra={"job": job.key, "error": redact(f"{type(e).__name__}: {e}")},
            )

    async def _loop(self, r: _Running, interval: float, first: float, phase: float) -> None:
        job = r.job
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(first)
        # an early first run (see _first_delays) is followed by the run at the jittered phase
        next_at = start + phase if first < phase else loop.time() + interval
        was_ok: bool | None = None
        while True:
            result = await self.run_once(job)
            if result.success != was_ok:
                if result.success:
                    if was_ok is not None:
                        log.info(f"{job.kind} recovered", extra={"job": job.key})
                else:
                    log.warning(f"{job.kind} failed", extra={"job": job.key, "error": result.error})
            was_ok = result.success
            r.completed += 1
            now = loop.time()
            if next_at <= now:  # overran: skip the missed ticks instead of bursting
                next_at += math.ceil((now - next_at) / interval) * interval
            if not await _pause(job, next_at - now):
                next_at += interval  # reached the tick; a wake keeps it for the run after


async def _pause(job: Job, seconds: float) -> bool:
    """Sleep until the next tick; True when the job's wake came first."""
    if job.wake is None:
        await asyncio.sleep(seconds)
        return False
    try:
        async with asyncio.timeout(seconds):
            await job.wake()
    except TimeoutError:
        return False
    return True


def _error_families(job: Job, error: str) -> list[Metric]:
    if job.on_error is None:
        return []
    try:
        return job.on_error(error)
    except Exception as e:  # a broken hook must not take the failure record with it
        log.error(
            "cannot build the failed job's families",
            extra={"job": job.key, "error": redact(f"{type(e).__name__}: {e}"), "at": _where(e)},
        )
        return []


def _where(e: BaseException) -> str:
    """file:line where the exception was raised, for the log (no full traceback)."""
    frames = traceback.extract_tb(e.__traceback__)
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
