"""`discover` finds River, Oban, Solid Queue and GoodJob: one real database holding each
library's tables made from its documented migrations (tests/queue_libs/*_schema.py), each in a
schema of its own, with a few jobs, plus an Oban too old for the preset. The configuration
written is served by the real exporter as it is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml

from exporter.discover import run_discover
from tests.queue_libs import good_job_schema as gj
from tests.queue_libs import oban_schema as oban
from tests.queue_libs import river_schema as river
from tests.queue_libs import solid_queue_schema as sq


@pytest.fixture(scope="module")
def libraries_db(pg_server: str) -> Iterator[str]:
    from tests.conftest import new_database

    with new_database(pg_server) as dsn:
        with psycopg.connect(dsn, autocommit=True) as c:
            river.install(c)
            river.insert(c, "email", 3)
            oban.install(c, "oban")
            oban.insert(c, "mailers", 2, prefix="oban")
            oban.install(c, "old_oban", version=8)
            sq.install(c, "queue")
            sq.enqueue(c, "default", 2, schema="queue")
            gj.install(c, "gj")
            gj.enqueue(c, "default", 4, schema="gj")
        yield dsn


def test_discover_writes_river_oban_solid_queue_and_good_job(
    libraries_db, tmp_path: Path, capsys, run_exporter
) -> None:
    out = tmp_path / "found.yml"
    assert run_discover(libraries_db, "app", str(out)) == 0
    text = out.read_text()
    err = capsys.readouterr().err
    items = yaml.safe_load(text)["targets"][0]["queues"]
    assert {"river": "*"} in items
    assert {"oban": "*", "schema": "oban"} in items
    assert {"solid_queue": "*", "schema": "queue"} in items
    assert {"good_job": "*", "schema": "gj"} in items
    # the libraries' own tables are never hand-rolled queues
    assert not [i for i in items if "table" in i], items
    for line in (
        "# River found in schema public: River migration 7 (River 0.40+; river_migration)",
        "# Oban found in schema oban: Oban migration 14 (Oban 2.21 to 2.23; oban_jobs comment)",
        "# Solid Queue found in schema queue: Solid Queue 0.6 to 1.5 schema",
        "# GoodJob found in schema gj: GoodJob 4.18+ schema",
        "# Oban found in schema old_oban: unsupported Oban version: migration 8",
    ):
        assert line in text, text
    # GoodJob's `default` labels its series first: Solid Queue's is named apart
    named = {"solid_queue": "default", "name": "solid_queue_default", "schema": "queue"}
    assert named in items, items
    assert "Oban found in schema oban: Oban migration 14" in err  # the doctor ran on it

    exp = run_exporter(text)
    s = exp.wait_for(
        lambda s: (
            s.value("runbook_queue_jobs", queue="solid_queue_default", status="pending") is not None
            and s.value("runbook_queue_jobs", queue="mailers", status="pending") is not None
            and s.value("runbook_queue_jobs", queue="email", status="pending") is not None
            and s.value("runbook_queue_jobs", queue="default", status="pending") is not None
        ),
        what="every discovered queue collected",
    )
    assert s.value("runbook_queue_jobs", queue="email", status="pending") == 3
    assert s.value("runbook_queue_jobs", queue="mailers", status="pending") == 2
    assert s.value("runbook_queue_jobs", queue="default", status="pending") == 4
    assert s.value("runbook_queue_jobs", queue="solid_queue_default", status="pending") == 2
    assert s.value("runbook_collector_success", collector="queues") == 1
