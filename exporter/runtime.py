"""The running exporter: jobs for every target's collectors and every app's endpoints, the
background loop that runs them, and the Prometheus collector that serves their last results.

A reload (SIGHUP, POST /-/reload) reads the configuration file again. A file that does not load
keeps the running configuration. Otherwise targets and endpoints whose settings are equal by
value keep their jobs, connection (TargetDB) and history (Prober, store state); changed ones are
rebuilt, removed ones stop and their series disappear, added ones start.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from exporter import __version__, sources
from exporter.backups import runner as backup_runner
from exporter.backups.config import Backup
from exporter.collectors import thresholds
from exporter.config import Config, ConfigError, load_config
from exporter.db import TargetDB
from exporter.metrics import merge, spec
from exporter.poolers import pgbouncer
from exporter.poolers.config import Pooler
from exporter.probes import thresholds as probe_thresholds
from exporter.probes.config import Endpoint
from exporter.probes.http import Clients
from exporter.probes.runner import probe_jobs
from exporter.scheduler import Job, Scheduler, Store, sane_timing
from exporter.secrets import redact
from exporter.shard import UNSHARDED, Shard

log = logging.getLogger("exporter")
SRC = "runtime.py"
RELOAD_TIMEOUT = 30.0  # seconds to wait for the loop to swap jobs and close old connections
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
    "How long the collector's last run took, its wait for a database session excluded.",
    TC,
    SRC,
)
COLLECTOR_WAIT = spec(
    "runbook_collector_wait_seconds",
    "gauge",
    "How long the collector's last run waited for a session of its target (a free one of "
    "max_sessions, or a new connection) before its own work; not part of "
    "runbook_collector_duration_seconds.",
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


RELOAD_OK = spec(
    "runbook_config_last_reload_successful",
    "gauge",
    "1 when the last configuration reload succeeded (or none was tried), 0 when it failed and "
    "the exporter kept running the previous configuration.",
    (),
    SRC,
)
RELOAD_SUCCESS_AT = spec(
    "runbook_config_last_reload_success_timestamp_seconds",
    "gauge",
    "Unix time of the last successful configuration load (start or reload).",
    (),
    SRC,
)


def _db_job(db: TargetDB, name: str, settings, delay: float) -> Job:
    t = db.target
    # made per target (and again when its settings change): it holds the collector's state
    collector = sources.collector(name)(t, settings)

    interval, timeout = t.interval_of(settings), t.timeout_of(settings)
    # the run's budget as the scheduler enforces it, so the connection's watchdog fires just
    # before the scheduler gives up (see db.TargetDB.connection)
    budget = sane_timing(interval, timeout)[1]

    waited = [0.0]  # the last run's wait for a session (see scheduler.Job.waited)

    def record(seconds: float) -> None:
        waited[0] = seconds

    async def run() -> list[Metric]:
        waited[0] = 0.0
        async with db.connection(budget, on_wait=record) as conn:
            return await collector.collect(conn)

    return Job(
        (t.name, name),
        interval,
        timeout,
        run,
        delay,
        wake=db.reconnected,
        waited=lambda: waited[0],
    )


def _target_jobs(db: TargetDB) -> list[Job]:
    # stagger a target's collectors a little so they mostly share one session (db.TargetDB)
    return [
        _db_job(db, name, settings, delay=0.05 * i)
        for i, (name, settings) in enumerate(db.target.enabled_collectors())
    ]


@dataclass
class _Plan:
    """What a configuration runs: built off the loop, swapped in on it."""

    config: Config
    dbs: dict[str, TargetDB]
    target_jobs: dict[str, list[Job]]
    probes: dict[tuple[str, str], tuple[Endpoint, Job]]
    static: list[Metric]
    closing: list[TargetDB]  # connections of changed and removed targets
    changes: dict[str, int]  # for the log: targets/endpoints kept, rebuilt, added, removed
    # backup name -> (its config, the TargetDB an sql source uses, its job)
    backups: dict[str, tuple[Backup, TargetDB | None, Job]] = field(default_factory=dict)
    poolers: dict[str, tuple[Pooler, Job]] = field(default_factory=dict)

    @property
    def jobs(self) -> list[Job]:
        return (
            [j for js in self.target_jobs.values() for j in js]
            + [j for _, j in self.probes.values()]
            + [j for _, _, j in self.backups.values()]
            + [j for _, j in self.poolers.values()]
        )


class Exporter(Collector):
    def __init__(
        self, config: Config, config_file: str | None = None, shard: Shard | None = None
    ) -> None:
        self.config_file = config_file  # what a reload reads
        self.shard = shard or UNSHARDED  # `config` is its part already; a reload selects it
        self.store = Store()
        self.scheduler = Scheduler(self.store)
        # shared by all endpoints with the same TLS and redirect settings, closed on stop
        self.http_clients = Clients()
        self.dbs: dict[str, TargetDB] = {}
        self._target_jobs: dict[str, list[Job]] = {}
        self._probes: dict[tuple[str, str], tuple[Endpoint, Job]] = {}
        self._backups: dict[str, tuple[Backup, TargetDB | None, Job]] = {}
        self._poolers: dict[str, tuple[Pooler, Job]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._reload_lock = threading.Lock()
        self.last_reload_ok = True
        self.last_reload_success_at = time.time()
        plan = self._plan(config)
        self._install(plan)
        self.scheduler.jobs = plan.jobs
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    # --- building and swapping what runs ------------------------------------------------

    def _plan(self, config: Config) -> _Plan:
        """The jobs of `config`, reusing the running ones whose settings are unchanged."""
        dbs: dict[str, TargetDB] = {}
        target_jobs: dict[str, list[Job]] = {}
        for t in config.targets:
            old = self.dbs.get(t.name)
            if old is not None and old.target == t:
                dbs[t.name], target_jobs[t.name] = old, self._target_jobs[t.name]
            else:
                db = dbs[t.name] = TargetDB(t)
                target_jobs[t.name] = _target_jobs(db)
        closing = [db for name, db in self.dbs.items() if dbs.get(name) is not db]
        endpoints = {(a.name, e.name): e for a in config.apps for e in a.endpoints}
        changed = {
            k for k, e in endpoints.items() if k not in self._probes or self._probes[k][0] != e
        }
        fresh = {}
        if changed:
            apps = [
                a.model_copy(
                    update={"endpoints": [e for e in a.endpoints if (a.name, e.name) in changed]}
                )
                for a in config.apps
            ]
            for job in probe_jobs([a for a in apps if a.endpoints], self.http_clients):
                fresh[job.key] = job
        probes = {
            k: (e, fresh[k] if k in changed else self._probes[k][1]) for k, e in endpoints.items()
        }
        static = thresholds.families(config)
        if config.apps:
            static += probe_thresholds.families(config.apps)
        changes = {
            **_changes("targets", self.dbs, dbs, lambda a, b: a is b),
            **_changes("endpoints", self._probes, probes, lambda a, b: a[1] is b[1]),
        }
        plan = _Plan(config, dbs, target_jobs, probes, static, closing, changes)
        plan.backups = self._plan_backups(config, dbs)
        plan.static += backup_runner.families(config.backups)
        # an unchanged pooler keeps its job (and the last failure reason it logged)
        plan.poolers = {
            p.name: old
            if (old := self._poolers.get(p.name)) and old[0] == p
            else (p, pgbouncer.pooler_job(p))
            for p in config.poolers
        }
        plan.static += pgbouncer.threshold_families(config.poolers)
        plan.static += _job_settings(plan.jobs) + self.shard.families()
        return plan

    def _plan_backups(
        self, config: Config, dbs: dict[str, TargetDB]
    ) -> dict[str, tuple[Backup, TargetDB | None, Job]]:
        """A job per backup; an unchanged backup (and, for sql sources, the same target
        session) keeps its job and the last backup it found."""
        out = {}
        for b in config.backups:
            db = dbs[b.sql.target] if b.sql is not None else None
            old = self._backups.get(b.name)
            if old is not None and old[0] == b and old[1] is db:
                out[b.name] = old
            else:
                out[b.name] = (b, db, backup_runner.backup_job(b, db))
        return out

    def _install(self, plan: _Plan) -> None:
        """Swap in what scrapes read; each attribute is rebound whole, so a concurrent scrape
        sees the old or the new one, never a half-built one."""
        self.config, self.dbs, self._static = plan.config, plan.dbs, plan.static
        self._target_jobs, self._probes = plan.target_jobs, plan.probes
        self._backups, self._poolers = plan.backups, plan.poolers

    async def _apply(self, plan: _Plan) -> None:
        await self.scheduler.replace(plan.jobs)
        self._install(plan)
        self.store.touch()
        for db in plan.closing:
            await db.close()
        await self.http_clients.retain({e.tls for e, _ in plan.probes.values()})

    def reload(self) -> tuple[bool, str]:
        """Read the configuration file again and run it; on any failure keep the running
        configuration. Returns (ok, message) for POST /-/reload; safe from any thread but the
        collection loop's."""
        with self._reload_lock:
            source = self.config_file
            if source is None:
                return self._reload_failed("no configuration file to reload from")
            try:
                config = self.shard.select(load_config(source))
            except ConfigError as e:
                return self._reload_failed(str(e))
            except Exception as e:  # a loader bug must not take the running config with it
                return self._reload_failed(f"{source}: cannot load: {type(e).__name__}: {e}")
            try:
                plan = self._plan(config)
                if self._loop is not None and self._loop.is_running():
                    future = asyncio.run_coroutine_threadsafe(self._apply(plan), self._loop)
                    future.result(RELOAD_TIMEOUT)
                else:
                    asyncio.run(self._apply(plan))
            except Exception as e:  # keep what runs; say why
                return self._reload_failed(f"{source}: cannot apply: {type(e).__name__}: {e}")
            self.last_reload_ok, self.last_reload_success_at = True, time.time()
            self.store.touch()
            log.info("configuration reloaded", extra={"file": source, **plan.changes})
            return True, f"configuration reloaded from {source}: " + ", ".join(
                f"{k.replace('_', ' ')} {v}" for k, v in plan.changes.items()
            )

    def _reload_failed(self, why: str) -> tuple[bool, str]:
        why = redact(why)
        self.last_reload_ok = False
        self.store.touch()
        log.error(
            "configuration reload failed; keeping the running configuration",
            extra={"file": self.config_file, "error": why},
        )
        return False, f"reload failed, the running configuration is kept: {why}"

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        ready = threading.Event()

        def main() -> None:
            asyncio.run(self._main(ready))

        # a reload (SIGHUP) arriving while the loop starts waits until its jobs run
        with self._reload_lock:
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
        """Ready once every job has completed its first run or its first run's timeout has
        passed (first runs all start within scheduler.FIRST_RUN_WITHIN seconds)."""
        return self.scheduler.ready()

    # --- Prometheus collector: only reads the store ------------------------------------

    def collect(self) -> Iterator[Metric]:
        yield from merge(self.families())

    def families(self) -> list[Metric]:
        """Every family served, before families of one name are merged: the store's own family
        objects stay the same between the runs of their job, so the render cache can reuse
        their text (exporter/exposition.py)."""
        jobs, dbs = self.scheduler.jobs, self.dbs  # a reload rebinds these; read them once
        snap = self.store.snapshot()
        fams: list[Metric] = list(self._static)
        up = TARGET_UP.family()
        for name, db in dbs.items():
            up.add_metric([name], db.up)
        fams.append(up)
        fams.append(RELOAD_OK.one(1 if self.last_reload_ok else 0))
        fams.append(RELOAD_SUCCESS_AT.one(self.last_reload_success_at))
        own = {
            s: s.family()
            for s in (
                COLLECTOR_SUCCESS,
                COLLECTOR_DURATION,
                COLLECTOR_WAIT,
                COLLECTOR_LAST_SUCCESS,
                COLLECTOR_RUNS,
                COLLECTOR_ERRORS,
            )
        }
        for job in jobs:
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
                if job.waited is not None:
                    own[COLLECTOR_WAIT].add_metric(labels, st.last.wait)
                if st.last_success_at is not None:
                    own[COLLECTOR_LAST_SUCCESS].add_metric(labels, st.last_success_at)
            # a failed run's old series are dropped, not served as if fresh (docs/metrics.md)
            fams.extend(st.last.families)
        fams.extend(f for f in own.values() if f.samples)
        return fams


def _changes(what: str, old: dict, new: dict, same) -> dict[str, int]:
    kept = sum(1 for k in new if k in old and same(old[k], new[k]))
    added = sum(1 for k in new if k not in old)
    return {
        f"{what}_kept": kept,
        f"{what}_rebuilt": len(new) - kept - added,
        f"{what}_added": added,
        f"{what}_removed": sum(1 for k in old if k not in new),
    }


def _job_settings(jobs: list[Job]) -> list[Metric]:
    """Series that change only with the configuration, built once per load, not per scrape."""
    interval, timeout = COLLECTOR_INTERVAL.family(), COLLECTOR_TIMEOUT.family()
    for job in jobs:
        if job.self_metrics:
            interval.add_metric(list(job.key), job.interval)
            timeout.add_metric(list(job.key), job.timeout)
    return [
        BUILD_INFO.one(1, __version__, platform.python_version()),
        *(f for f in (interval, timeout) if f.samples),
    ]
