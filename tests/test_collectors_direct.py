"""Every registered collector, called directly on a real PostgreSQL session as the exporter
opens it: no scheduler, no HTTP, no scrape. A collector that breaks fails here with its own
exception, in well under a second, instead of as a missing series in an end-to-end test."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from prometheus_client.core import Metric

from exporter import sources
from exporter.config import parse_config
from exporter.db import open_connection
from tests import incidents
from tests.conftest import new_database


def run_collector(dsn: str, name: str) -> list[Metric]:
    config = parse_config(
        "targets:\n"
        f"  - name: app\n    dsn: '{dsn}'\n"
        "    queues:\n      - table: public.processing_jobs\n"
    )
    target = config.targets[0]
    settings = dict(target.enabled_collectors())[name]

    async def main() -> list[Metric]:
        conn = await open_connection(target)
        try:
            return await sources.collector(name)(target, settings).collect(conn)
        finally:
            await conn.close()

    return asyncio.run(main())


@pytest.fixture(scope="module")
def queue_db(pg_server: str) -> Iterator[str]:
    """One database with the demo's queue in trouble, shared by the collectors below."""
    with new_database(pg_server) as dsn:
        incidents.create_queue(dsn)
        incidents.seed_queue_incident(dsn)
        yield dsn


# collectors of an extension this server lacks: quiet (no series, no error) without it, and
# tested on a server that has it in their own test file (tests/test_cron.py)
QUIET_WITHOUT_EXTENSION = {"cron"}
# collectors of what the target's config lists (its retention tables, its queries): quiet
# without it, tested with it in tests/test_retention.py and tests/test_custom_queries.py
QUIET_WITHOUT_CONFIG = {"retention", "custom"}


@pytest.mark.parametrize("name", sources.collector_names())
def test_collector_returns_declared_families_with_the_target_label(queue_db: str, name: str):
    families = run_collector(queue_db, name)
    declared = {s.name for s in sources.collector(name).specs()}
    assert families or name in QUIET_WITHOUT_EXTENSION | QUIET_WITHOUT_CONFIG, (
        f"{name} returned nothing"
    )
    served = {f.name.removesuffix("_total") if f.type == "counter" else f.name for f in families}
    declared_names = {d.removesuffix("_total") for d in declared}
    assert served <= declared_names, f"{name} served undeclared {served - declared_names}"
    for f in families:
        for s in f.samples:
            assert s.labels.get("target") == "app", (f.name, s.labels)


def test_the_queue_collector_sees_the_seeded_incident_directly(queue_db: str):
    families = {f.name: f for f in run_collector(queue_db, "queues")}
    stuck = families["runbook_queue_stuck_jobs"].samples
    assert stuck and stuck[0].value > 0
    exhausted = families["runbook_queue_retries_exhausted_jobs"].samples
    assert exhausted and exhausted[0].value > 0
