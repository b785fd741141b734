"""A Procrastinate app for tests/test_preset_procrastinate.py and bench/queue_presets.py:
Procrastinate (PyPI, the test extra) creates its schema with its own schema manager and defers,
runs, fails and retries jobs through its own API, as an application does."""

from __future__ import annotations

import asyncio

import procrastinate
import psycopg

RETRY_LATER = procrastinate.RetryStrategy(max_attempts=3, wait=3600)


def make_app(dsn: str) -> procrastinate.App:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name="ok", queue="emails")
    def ok(n: int = 0) -> None:
        return None

    @app.task(name="boom", queue="emails")
    def boom() -> None:
        raise RuntimeError("boom")

    @app.task(name="flaky", queue="emails", retry=RETRY_LATER)
    def flaky() -> None:
        raise RuntimeError("flaky")

    return app


async def _seed(dsn: str) -> None:
    app = make_app(dsn)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        ok, boom, flaky = (app.tasks[n] for n in ("ok", "boom", "flaky"))
        # finished: 4 succeeded, 1 failed for good, 1 failed and deferred for retry in an hour
        for n in range(4):
            await ok.defer_async(n=n)
        await boom.defer_async()
        await flaky.defer_async()
        await app.run_worker_async(
            queues=["emails"], wait=False, install_signal_handlers=False, listen_notify=False
        )
        # running: 2, each held by a registered worker (the test stalls one worker)
        await ok.configure(task_kwargs={"n": 100}).defer_async()
        await ok.configure(task_kwargs={"n": 101}).defer_async()
        for _ in range(2):
            worker = await app.job_manager.register_worker()
            assert await app.job_manager.fetch_job(queues=["emails"], worker_id=worker)
        # the backlog: 60 due now, 2 scheduled in an hour; other queues
        await ok.batch_defer_async(*({"n": n} for n in range(60)))
        for n in range(2):
            await ok.configure(schedule_in={"hours": 1}).defer_async(n=n)
        for n in range(2):
            await ok.configure(queue="reports").defer_async(n=n)
        await ok.configure(queue="misc").defer_async(n=0)


def seed(dsn: str) -> None:
    """Procrastinate's schema and the test's jobs; then, with SQL, the backlog made 20 minutes
    old and one of the two running jobs' worker silent for 2 hours."""
    asyncio.run(_seed(dsn))
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(
            "UPDATE procrastinate_events e SET at = now() - interval '20 minutes'"
            " FROM procrastinate_jobs j WHERE j.id = e.job_id AND e.type = 'deferred'"
            " AND j.status = 'todo' AND j.scheduled_at IS NULL AND j.queue_name = 'emails'"
        )
        c.execute(
            "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '2 hours'"
            " WHERE id = (SELECT min(worker_id) FROM procrastinate_jobs WHERE status = 'doing')"
        )
        c.execute("ANALYZE procrastinate_jobs, procrastinate_events")
