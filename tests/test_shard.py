"""--shard=i/N: N replicas over one configuration cover every item exactly once (exporter/shard.py).

The fast tests check the selection on a parsed configuration and through a reload; the slow one
runs the real CLI as 2 sharded processes and 1 unsharded one against a real PostgreSQL and a
local HTTP server, and compares what their /metrics serve.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import psycopg
import pytest
import yaml

from exporter.cli import main
from exporter.config import Config, ConfigError, parse_config
from exporter.runtime import Exporter
from exporter.shard import Shard, owner, parse
from tests.helpers import Scrape, wait_for
from tests.test_probe_support import json_route

UNREACHABLE = "host=127.0.0.1 port=1 dbname=app user=monitor"


def fleet_config(targets: int = 40, endpoints: int = 120, dsn: str = UNREACHABLE) -> dict:
    """Targets, endpoints over 3 apps, file and SQL backups, poolers: every per-item list."""
    return {
        "targets": [{"name": f"db-{i}", "dsn": dsn} for i in range(targets)],
        "apps": [
            {
                "name": f"app-{a}",
                "endpoints": [
                    {"name": f"ep-{i}", "url": f"http://127.0.0.1:1/{a}/{i}"}
                    for i in range(a, endpoints, 3)
                ],
            }
            for a in range(3)
        ],
        "backups": [
            {"name": f"files-{i}", "file": {"directory": "/nonexistent"}} for i in range(10)
        ]
        + [
            {"name": f"sql-{i}", "sql": {"target": f"db-{i}", "query": "SELECT now(), 1"}}
            for i in range(10)
        ],
        "poolers": [
            {"name": f"bouncer-{i}", "dsn": "host=127.0.0.1 port=1 user=stats"} for i in range(8)
        ],
    }


def items(c: Config) -> list[tuple[str, ...]]:
    return (
        [("target", t.name) for t in c.targets]
        + [("endpoint", a.name, e.name) for a in c.apps for e in a.endpoints]
        + [("backup", b.name) for b in c.backups]
        + [("pooler", p.name) for p in c.poolers]
    )


@pytest.fixture(scope="module")
def fleet() -> Config:
    return parse_config(yaml.safe_dump(fleet_config()), "fleet.yml")


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_n_replicas_cover_every_item_exactly_once(fleet, n):
    parts = [Shard(i, n).select(fleet) for i in range(n)]
    seen = Counter(item for part in parts for item in items(part))
    assert sorted(seen) == sorted(items(fleet))
    assert set(seen.values()) == {1}
    for part in parts:
        # an SQL backup reads through its target's session: it is where its target is
        names = {t.name for t in part.targets}
        assert all(b.sql.target in names for b in part.backups if b.sql)
        assert all(a.endpoints for a in part.apps)  # no app left without endpoints
    if n > 1:  # and the slices are real slices, not all on one replica
        assert all(part.targets for part in parts)


def test_an_items_shard_depends_only_on_its_name_and_n(fleet):
    before = {t.name: owner("target", t.name, 4) for t in fleet.targets}
    grown = fleet_config(targets=60)
    grown["targets"].reverse()  # order does not matter either
    after = {
        t.name: owner("target", t.name, 4) for t in parse_config(yaml.safe_dump(grown)).targets
    }
    assert {k: after[k] for k in before} == before


def test_growing_n_moves_only_what_goes_to_the_new_replica():
    names = [f"db-{i}" for i in range(600)]
    moved = [n for n in names if owner("target", n, 5) != owner("target", n, 4)]
    assert all(owner("target", n, 5) == 4 for n in moved)
    # about 1/5 of them (hash mod N would move about 4/5)
    assert 80 <= len(moved) <= 160, len(moved)


def test_endpoints_of_one_app_spread_over_replicas(fleet):
    per_replica = [sum(len(a.endpoints) for a in Shard(i, 3).select(fleet).apps) for i in range(3)]
    assert sum(per_replica) == 120 and min(per_replica) >= 25, per_replica


@pytest.mark.parametrize(
    ("value", "environ", "expected"),
    [
        ("0/1", {}, Shard(0, 1)),
        ("2/3", {}, Shard(2, 3)),
        (" 1 / 2 ", {}, Shard(1, 2)),
        ("auto/4", {"POD_NAME": "runbook-exporter-3"}, Shard(3, 4)),
        ("auto/4", {"POD_NAME": "web-ops-exporter-0"}, Shard(0, 4)),
    ],
)
def test_parse_accepts(value, environ, expected):
    assert parse(value, environ) == expected


@pytest.mark.parametrize(
    ("value", "environ", "message"),
    [
        ("3/3", {}, "--shard=3/3: shard index 3 must be below N=3: shards are numbered 0 to 2"),
        ("0/0", {}, "--shard=0/0: N must be at least 1"),
        ("1", {}, "--shard=1: expected i/N or auto/N with whole numbers, e.g. 0/3"),
        ("-1/2", {}, "--shard=-1/2: expected i/N or auto/N"),
        ("a/b", {}, "--shard=a/b: expected i/N"),
        (
            "auto/3",
            {"POD_NAME": "runbook-exporter-3"},
            "--shard=auto/3: shard index 3 (the ordinal of $POD_NAME 'runbook-exporter-3') must "
            "be below N=3",
        ),
        (
            "auto/3",
            {"POD_NAME": "runbook-exporter-7d9f-x2k4q"},
            "--shard=auto/3: $POD_NAME 'runbook-exporter-7d9f-x2k4q' does not end in -<ordinal>",
        ),
    ],
)
def test_parse_refuses_with_a_message_that_says_what_to_give(value, environ, message):
    with pytest.raises(ConfigError) as e:
        parse(value, environ)
    assert str(e.value).startswith(message)


def test_cli_exits_2_on_a_bad_shard_and_prints_the_slice_on_check_config(tmp_path, capsys):
    cfg = tmp_path / "fleet.yml"
    cfg.write_text(yaml.safe_dump(fleet_config()))
    with pytest.raises(SystemExit) as e:
        main([f"--config.file={cfg}", "--shard=2/2", "--check-config"])
    assert e.value.code == 2
    assert "--shard=2/2: shard index 2 must be below N=2" in capsys.readouterr().err

    assert main([f"--config.file={cfg}", "--shard=1/2", "--check-config"]) == 0
    out = capsys.readouterr().out
    mine = Shard(1, 2).select(parse_config(cfg.read_text()))
    assert f"shard 1/2: owns targets {len(mine.targets)}/40, endpoints " in out
    for t in parse_config(cfg.read_text()).targets:
        assert (f"target {t.name} (" in out) == (t in mine.targets)


def test_a_reload_selects_the_shards_part_of_the_new_file(tmp_path):
    cfg = tmp_path / "fleet.yml"
    cfg.write_text(yaml.safe_dump(fleet_config(targets=10, endpoints=9)))
    shard = Shard(0, 2)
    exp = Exporter(shard.select(parse_config(cfg.read_text())), str(cfg), shard)
    first = set(exp.dbs)
    cfg.write_text(yaml.safe_dump(fleet_config(targets=30, endpoints=30)))
    ok, message = exp.reload()
    assert ok, message
    expected = {f"db-{i}" for i in range(30) if owner("target", f"db-{i}", 2) == 0}
    assert set(exp.dbs) == expected and first <= expected
    assert {k for k in exp._probes} == {
        (f"app-{i % 3}", f"ep-{i}")
        for i in range(30)
        if owner("endpoint", f"app-{i % 3}\0ep-{i}", 2) == 0
    }
    asyncio_close(exp)


def asyncio_close(exp: Exporter) -> None:
    import asyncio

    async def close() -> None:
        for db in exp.dbs.values():
            await db.close()
        await exp.http_clients.aclose()

    asyncio.run(close())


# --- the real thing: 2 sharded processes and an unsharded one ---------------------------

# per process by design: the same in every replica, told apart by Prometheus' instance label
PER_PROCESS = {
    "runbook_exporter_build_info",
    "runbook_exporter_shard",
    "runbook_exporter_shards",
    "runbook_config_last_reload_successful",
    "runbook_config_last_reload_success_timestamp_seconds",
}
OWNER_LABELS = ("target", "app", "backup", "pooler")
LISTEN = "--web.listen-address=127.0.0.1:0"


class Process:
    def __init__(
        self, config: Path, name: str, *flags: str, env: dict[str, str] | None = None
    ) -> None:
        self.log = config.parent / f"{name}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", f"--config.file={config}", *flags, LISTEN],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("w"),
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )

    def port(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # bounded
            for line in self.log.read_text().splitlines():
                if "msg=listening" in line:
                    return int(line.split("port=")[1].split()[0])
            time.sleep(0.05)
        raise AssertionError(f"no listening line: {self.log.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)


def series(s: Scrape) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """Which configured item each family's samples belong to: (name, the item's labels).
    Coarser than whole label sets (a top-N statement's queryid may differ between two
    processes' scrapes), so disjoint items mean disjoint series."""
    out = set()
    for x in s.samples:
        owned = tuple((k, x.labels[k]) for k in (*OWNER_LABELS, "endpoint") if k in x.labels)
        if x.name not in PER_PROCESS and owned:
            out.add((x.name, owned))
    return out


def wait_for_ready(port: int, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:  # bounded
        try:
            if httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"exporter on port {port} not ready within {within:g}s")


def complete(s: Scrape, targets: int, endpoints: int, backups: int) -> bool:
    return (
        len(s.values("runbook_collector_success")) > 0
        and sum(1 for x in s.samples if x.name == "runbook_probe_success") == endpoints
        and len(s.values("runbook_target_up")) == targets
        and all(v == 1 for v in s.values("runbook_target_up"))
        and len(s.values("runbook_queue_up")) == targets
        and len(s.labelsets("runbook_backup_found")) == backups
    )


@pytest.mark.slow
def test_two_sharded_processes_serve_the_unsharded_set_once(tmp_path, fresh_db, server):
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(
            "CREATE TABLE jobs (id bigserial PRIMARY KEY, status text NOT NULL, "
            "retry_count int NOT NULL DEFAULT 0, created_at timestamptz NOT NULL DEFAULT now(), "
            "updated_at timestamptz NOT NULL DEFAULT now());"
            "INSERT INTO jobs (status) SELECT 'pending' FROM generate_series(1, 5)"
        )
    for i in range(12):
        server.routes[f"/health/{i}"] = json_route({"status": "ok"})
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    (backup_dir / "nightly.sql").write_bytes(b"x" * 100)
    config = {
        "targets": [
            {
                "name": f"db-{i}",
                "dsn": fresh_db,
                "collect_interval": "2s",
                "queues": [{"name": "jobs", "table": "public.jobs"}],
            }
            for i in range(6)
        ],
        "apps": [
            {
                "name": f"app-{a}",
                "endpoints": [
                    {"name": f"ep-{i}", "url": server.url(f"/health/{i}"), "interval": "1s"}
                    for i in range(a, 12, 2)
                ],
            }
            for a in range(2)
        ],
        "backups": [
            {"name": f"files-{i}", "file": {"directory": str(backup_dir)}} for i in range(3)
        ]
        + [
            {
                "name": f"sql-{i}",
                "sql": {"target": f"db-{i}", "query": "SELECT now(), 1"},
            }
            for i in range(3)
        ],
    }
    cfg = tmp_path / "fleet.yml"
    cfg.write_text(yaml.safe_dump(config))
    procs = [
        Process(cfg, "whole"),
        Process(cfg, "shard0", "--shard=0/2"),
        Process(cfg, "shard1", "--shard=auto/2", env={"POD_NAME": "runbook-exporter-1"}),
    ]
    try:
        ports = [p.port() for p in procs]
        parsed = parse_config(cfg.read_text())
        parts = [None, Shard(0, 2).select(parsed), Shard(1, 2).select(parsed)]
        scrapes = []
        for port, part in zip(ports, parts, strict=True):
            c = part or parsed
            n_endpoints = sum(len(a.endpoints) for a in c.apps)
            # ready: every job has finished its first run, so no collector's series are missing
            wait_for_ready(port)
            scrapes.append(
                wait_for(
                    f"http://127.0.0.1:{port}/metrics",
                    lambda s, c=c, n=n_endpoints: complete(s, len(c.targets), n, len(c.backups)),
                    30,
                    f"every series of {len(c.targets)} targets and {n_endpoints} endpoints",
                )
            )
        whole, a, b = (series(s) for s in scrapes)
        assert a and b and not (a & b)  # no item's series served twice
        assert a | b == whole  # and together everything
        for s, shard in zip(scrapes, ["0", "0", "1"], strict=True):
            assert s.value("runbook_exporter_shard") == float(shard)
        assert [s.value("runbook_exporter_shards") for s in scrapes] == [1, 2, 2]
    finally:
        for p in procs:
            p.stop()
    for p in procs:
        assert "Traceback" not in p.log.read_text()


def test_a_replica_that_owns_nothing_serves_only_its_own_series_and_is_ready():
    small = {
        "targets": [{"name": "db-0", "dsn": UNREACHABLE}],
        "apps": [{"name": "web", "endpoints": [{"name": "up", "url": "http://127.0.0.1:1/"}]}],
    }
    config = parse_config(yaml.safe_dump(small))
    owners = {owner(*item[:1], "\0".join(item[1:]), 6) for item in items(config)}
    idle = next(i for i in range(6) if i not in owners)
    mine = Shard(idle, 6).select(config)
    assert not items(mine)
    exp = Exporter(mine, None, Shard(idle, 6))
    exp.start()
    try:
        deadline = time.monotonic() + 10
        while not exp.ready() and time.monotonic() < deadline:  # bounded
            time.sleep(0.05)
        assert exp.ready()
        names = {m.name for m in exp.collect() if m.samples}
        assert {"runbook_exporter_shard", "runbook_exporter_shards"} <= names
        assert not names & {"runbook_target_up", "runbook_probe_success"}
    finally:
        exp.stop()
