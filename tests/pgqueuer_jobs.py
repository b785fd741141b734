"""A pgqueuer database made and worked by pgqueuer itself (PyPI `pgqueuer`, the test extra),
for tests/test_preset_pgqueuer.py and bench/queue_presets.py.

`install` runs pgqueuer's own install command (`python -m pgqueuer install`); `seed` enqueues
through `Queries.enqueue`, works jobs with a real `QueueManager` (its entrypoints complete,
fail, hold or ask for a retry), and takes one job with `Queries.dequeue` that is never finished,
as a worker that died leaves it. Entrypoints are the exporter's queue labels:

    send_email       40 queued and due, 3 queued to run in an hour
    resize_image     5 successful, 1 asking for a retry in an hour (queued, attempts 1),
                     1 failed for good and held (on_failure="hold": status failed)
    notify           2 successful, 1 raised (on_failure="delete": deleted, logged exception)
    generate_report  1 picked by a queue manager that is gone
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
# pgqueuer 1.0.0, the oldest release the preset covers, beside the test extra's 1.6.0
# (scripts/setup.sh installs it there)
PGQUEUER_1_0 = ROOT / ".venv" / "pgqueuer-1.0.0"

SEEDED = {
    "send_email": {"pending": 40, "scheduled": 3},
    "resize_image": {"successful": 5, "retrying": 1, "held": 1},
    "notify": {"successful": 2, "exception": 1},
    "generate_report": {"picked": 1},
}


def install(dsn: str, schema: str | None = None, prefix: str | None = None) -> None:
    """pgqueuer's own install command on the database (in `schema`, its table names prefixed
    with `prefix`: its --schema and --prefix options)."""
    args = [sys.executable, "-m", "pgqueuer", "--pg-dsn", dsn]
    if schema:
        args += ["--schema", schema]
    if prefix:
        args += ["--prefix", prefix]
    r = subprocess.run([*args, "install"], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise AssertionError(f"pgqueuer install failed: {r.stdout}{r.stderr}")


async def _seed(dsn: str) -> None:
    from pgqueuer import PsycopgDriver, QueueManager
    from pgqueuer.errors import RetryRequested
    from pgqueuer.models import Job
    from pgqueuer.queries import Queries
    from pgqueuer.types import QueueExecutionMode

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        q = Queries(PsycopgDriver(conn))
        await q.enqueue(["send_email"] * 40, [b"to"] * 40, [0] * 40)
        await q.enqueue(["send_email"] * 3, [b"digest"] * 3, [0] * 3, [timedelta(hours=1)] * 3)
        await q.enqueue(
            ["resize_image"] * 7,
            [b"ok"] * 5 + [b"flaky", b"doomed"],
            [0] * 7,
        )
        await q.enqueue(["notify"] * 3, [b"ok", b"ok", b"boom"], [0] * 3)
        await q.enqueue("generate_report", b"2026-10")

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        qm = QueueManager(Queries(PsycopgDriver(conn)))
        seen: list[str] = []

        @qm.entrypoint("resize_image", on_failure="hold")
        async def resize_image(job: Job) -> None:
            seen.append(f"resize_image:{job.payload!r}")
            if job.payload == b"flaky":
                raise RetryRequested(delay=timedelta(hours=1), reason="thumbnail service busy")
            if job.payload == b"doomed":
                raise ValueError("not an image")

        @qm.entrypoint("notify")
        async def notify(job: Job) -> None:
            seen.append(f"notify:{job.payload!r}")
            if job.payload == b"boom":
                raise RuntimeError("push gateway refused")

        async def stop_when_done() -> None:
            for _ in range(600):  # at most 60 s
                if len(seen) >= 10:
                    await asyncio.sleep(0.5)  # let the status buffer flush its last batch
                    break
                await asyncio.sleep(0.1)
            qm.shutdown.set()

        stopper = asyncio.create_task(stop_when_done())
        await qm.run(mode=QueueExecutionMode.continuous, dequeue_timeout=timedelta(seconds=1))
        await stopper
        if len(seen) < 10:
            raise AssertionError(f"pgqueuer worked only {seen}")

    # a queue manager takes generate_report and is never heard of again
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        from pgqueuer.ports.repository import EntrypointExecutionParameter

        q = Queries(PsycopgDriver(conn))
        taken = await q.dequeue(
            batch_size=1,
            entrypoints={"generate_report": EntrypointExecutionParameter(concurrency_limit=0)},
            queue_manager_id=uuid.uuid4(),
            global_concurrency_limit=None,
            heartbeat_timeout=timedelta(seconds=30),
        )
        if len(taken) != 1:
            raise AssertionError(f"generate_report was not taken: {taken}")


def seed(dsn: str) -> None:
    """The jobs of SEEDED, through pgqueuer's API (the schema must be installed)."""
    asyncio.run(_seed(dsn))


def install_and_seed_with(dsn: str, release_dir: Path | None) -> None:
    """install() and seed() in a process of their own that imports pgqueuer from
    `release_dir` (None: the test extra's pgqueuer); fails (never skips) when it is missing."""
    env = dict(os.environ)
    if release_dir is not None:
        if not (release_dir / "pgqueuer").is_dir():
            raise AssertionError(f"{release_dir} is missing: scripts/setup.sh installs it")
        env["PYTHONPATH"] = os.pathsep.join([str(release_dir), str(ROOT)])
    else:
        env["PYTHONPATH"] = str(ROOT)
    code = (
        "import sys; from tests import pgqueuer_jobs as p;"
        " p.install(sys.argv[1]); p.seed(sys.argv[1])"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, dsn], env=env, capture_output=True, text=True, timeout=180
    )
    if r.returncode != 0:
        raise AssertionError(f"pgqueuer seeding failed: {r.stdout}{r.stderr}")
