"""Reloading the configuration while running: SIGHUP and POST /-/reload call Exporter.reload.

Real PostgreSQL (conftest) and real HTTP endpoints on 127.0.0.1 (LocalServer). Unchanged
targets keep their session (same backend pid), unchanged endpoints their counters; changed
ones are rebuilt, removed ones stop and their series go, a bad file keeps the old config.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import yaml

from exporter.config import load_config
from exporter.db import TargetDB
from exporter.runtime import Exporter
from exporter.server import HTTPServer
from tests.helpers import Scrape, scrape, wait_for
from tests.test_probe_support import endpoint, json_route


class Running:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.exporter = Exporter(load_config(path), str(path))
        self.server = HTTPServer(self.exporter, "127.0.0.1:0")
        self.exporter.start()
        self.server.start()
        self.url = f"http://127.0.0.1:{self.server.port}/metrics"

    def write(self, config: dict) -> None:
        self.path.write_text(yaml.safe_dump(config))

    def wait_for(self, predicate: Callable[[Scrape], object], what: str) -> Scrape:
        return wait_for(self.url, predicate, 20, what)

    def on_loop(self, coro) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.exporter._loop).result(10)

    def backend_pids(self, db: TargetDB) -> set[int]:
        """The server processes of the target's sessions: one taken for a run (opened if
        none is), and the idle ones (db.TargetDB keeps a small pool)."""

        async def pids() -> set[int]:
            async with db.connection(10) as conn:
                cur = await conn.execute("SELECT pg_backend_pid()")
                taken = (await cur.fetchone())[0]
            return {taken} | {c.info.backend_pid for c in db._idle}

        return self.on_loop(pids())


def server_pids(dsn: str) -> set[int]:
    with psycopg.connect(dsn, autocommit=True) as c:
        rows = c.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'runbook-exporter'"
        ).fetchall()
    return {r[0] for r in rows}


@pytest.fixture
def start(tmp_path) -> Iterator[Callable[[dict], Running]]:
    started: list[Running] = []

    def run(config: dict) -> Running:
        path = tmp_path / "runbook-exporter.yml"
        path.write_text(yaml.safe_dump(config))
        r = Running(path)
        started.append(r)
        return r

    yield run
    for r in started:
        r.server.stop()
        r.exporter.stop()


def target(name: str, dsn: str, **extra) -> dict:
    return {"name": name, "dsn": dsn, "collect_interval": "1s", **extra}


def requests(s: Scrape, ep: str) -> float | None:
    return s.value("runbook_probe_requests_total", app="web", endpoint=ep)


def test_reload_keeps_unchanged_rebuilds_changed_drops_removed_adds_new(fresh_db, server, start):
    for path in ("/same", "/changed", "/removed", "/added"):
        server.routes[path] = json_route({"status": "ok"})
    eps = {p: endpoint(p, server.url("/" + p)) for p in ("same", "changed", "removed", "added")}
    before = {
        "targets": [
            target("same", fresh_db),
            target("changed", fresh_db),
            target("gone", fresh_db),
        ],
        "apps": [{"name": "web", "endpoints": [eps["same"], eps["changed"], eps["removed"]]}],
    }
    ex = start(before)
    s = ex.wait_for(
        lambda s: (
            all(requests(s, e) >= 3 for e in ("same", "changed", "removed"))
            and all(s.value("runbook_target_up", target=t) == 1 for t in ("same", "changed"))
        ),
        "every source running",
    )
    exp = ex.exporter
    same_db, changed_db, gone_db = exp.dbs["same"], exp.dbs["changed"], exp.dbs["gone"]
    same_pids, changed_pids = ex.backend_pids(same_db), ex.backend_pids(changed_db)
    same_job = exp._probes[("web", "same")][1]
    same_requests = requests(s, "same")
    runs_before = s.value("runbook_collector_runs_total", target="same", collector="database")
    version = exp.store.version

    after = {
        "targets": [
            target("same", fresh_db),
            target("changed", fresh_db, statement_timeout="500ms", collect_interval="2s"),
            target("new", fresh_db),
        ],
        "apps": [
            {
                "name": "web",
                "endpoints": [
                    eps["same"],
                    {**eps["changed"], "thresholds": {"latency_warning": "0.7s"}},
                    eps["added"],
                ],
            }
        ],
    }
    ex.write(after)
    ok, message = exp.reload()
    assert ok, message
    assert "targets kept 1, targets rebuilt 1, targets added 1, targets removed 1" in message
    assert exp.store.version > version
    s = scrape(ex.url)
    assert requests(s, "same") >= same_requests  # not reset
    assert s.value("runbook_collector_runs_total", target="same", collector="database") >= (
        runs_before
    )

    # unchanged: the same sessions (backend pids, still open) and the same prober, history
    # running on
    open_now = server_pids(fresh_db)
    assert exp.dbs["same"] is same_db and same_pids <= open_now
    assert exp._probes[("web", "same")][1] is same_job
    # changed: new sessions with the new settings; the old ones closed
    assert exp.dbs["changed"] is not changed_db and changed_db.conn is None
    assert not ex.backend_pids(exp.dbs["changed"]) & changed_pids
    deadline = time.monotonic() + 5  # a closed session's backend exits a moment later
    while changed_pids & server_pids(fresh_db):
        assert time.monotonic() < deadline, "the changed target's old sessions still open"
        time.sleep(0.1)
    assert exp._probes[("web", "changed")][1] is not None
    # removed: stopped and closed
    assert "gone" not in exp.dbs and gone_db.conn is None
    removed_count = server.count("/removed")

    s = ex.wait_for(
        lambda s: (
            s.value("runbook_target_up", target="new") == 1
            and requests(s, "added") >= 1
            and s.value("runbook_collector_success", target="changed", collector="database") == 1
            and requests(s, "same") > same_requests
            and s.value("runbook_collector_runs_total", target="same", collector="database")
            > runs_before
        ),
        "added sources serving",
    )
    # the unchanged sources' counters went on from their pre-reload values (a restart would
    # have begun again at 1), which the wait above saw them pass
    # removed sources' series are gone, thresholds and settings follow the new file
    assert requests(s, "removed") is None
    assert s.value("runbook_probe_success", app="web", endpoint="removed") is None
    assert s.value("runbook_target_up", target="gone") is None
    assert not [ls for ls in s.labelsets("runbook_collector_runs_total") if ls["target"] == "gone"]
    assert (
        s.value(
            "runbook_probe_latency_threshold_seconds",
            app="web",
            endpoint="changed",
            severity="warning",
        )
        == 0.7
    )
    assert (
        s.value("runbook_collector_interval_seconds", target="changed", collector="database") == 2
    )
    assert s.value("runbook_config_last_reload_successful") == 1
    time.sleep(0.5)
    assert server.count("/removed") <= removed_count + 1  # at most one probe in flight


def test_bad_file_keeps_the_running_config_and_says_why(fresh_db, server, start, caplog):
    caplog.set_level(logging.INFO, logger="exporter")
    server.routes["/h"] = json_route({"status": "ok"})
    good = {
        "targets": [target("db", fresh_db)],
        "apps": [{"name": "web", "endpoints": [endpoint("h", server.url("/h"))]}],
    }
    ex = start(good)
    s = ex.wait_for(lambda s: requests(s, "h") >= 2, "probing")
    loaded_at = s.value("runbook_config_last_reload_success_timestamp_seconds")
    assert s.value("runbook_config_last_reload_successful") == 1
    db = ex.exporter.dbs["db"]

    ex.path.write_text("targets:\n  - name: db\n    dsn: [unclosed\n")
    ok, message = ex.exporter.reload()
    assert not ok and str(ex.path) in message and "running configuration is kept" in message
    failed = [r for r in caplog.records if r.getMessage().startswith("configuration reload failed")]
    assert len(failed) == 1 and str(ex.path) in failed[0].error
    n = requests(ex.wait_for(lambda s: True, "scrape"), "h")
    s = ex.wait_for(
        lambda s: s.value("runbook_config_last_reload_successful") == 0 and requests(s, "h") > n,
        "old config still probing, reload reported failed",
    )
    assert s.value("runbook_config_last_reload_success_timestamp_seconds") == loaded_at
    assert ex.exporter.dbs["db"] is db and s.value("runbook_target_up", target="db") == 1

    # a file that parses but is invalid is refused the same way; a fixed file loads
    ex.write({"targets": [{**target("db", fresh_db), "collect_interval": "-1s"}]})
    assert not ex.exporter.reload()[0]
    ex.write(good)
    ok, message = ex.exporter.reload()
    assert ok, message
    s = scrape(ex.url)
    assert s.value("runbook_config_last_reload_successful") == 1
    assert s.value("runbook_config_last_reload_success_timestamp_seconds") > loaded_at


def test_an_exception_in_a_probe_job_is_a_failed_probe_not_vanished_series(server, start, caplog):
    """The safety net under the prober: whatever escapes a probe run reads success 0 and is
    logged (the prober's own judging is expected to catch it first)."""
    caplog.set_level(logging.WARNING, logger="exporter.scheduler")
    server.routes["/h"] = json_route({"status": "ok"})
    ex = start({"apps": [{"name": "web", "endpoints": [endpoint("h", server.url("/h"))]}]})
    ex.wait_for(lambda s: s.value("runbook_probe_success", app="web", endpoint="h") == 1, "up")
    job = ex.exporter._probes[("web", "h")][1]

    async def explode() -> list:
        raise RecursionError("maximum recursion depth exceeded while decoding a JSON array")

    before = scrape(ex.url).value("runbook_probe_failures_total", app="web", endpoint="h")
    job.run = explode
    s = ex.wait_for(
        lambda s: s.value("runbook_probe_success", app="web", endpoint="h") == 0, "down"
    )
    # counted and served as a failed probe with its reason, the endpoint's series all kept
    assert s.value("runbook_probe_failures_total", app="web", endpoint="h") > before
    assert s.value("runbook_probe_failure_reason", app="web", endpoint="h", reason="check_error")
    assert s.value("runbook_probe_requests_total", app="web", endpoint="h") is not None
    assert s.value("runbook_probe_consecutive_failures", app="web", endpoint="h") >= 1
    failed = [r for r in caplog.records if r.getMessage() == "probe failed"]
    by_scheduler = [r for r in failed if r.name == "exporter.scheduler"]
    assert by_scheduler and by_scheduler[0].job == ("web", "h")
    assert "RecursionError" in by_scheduler[0].error
    by_prober = [r for r in failed if r.name == "exporter.probes"]
    assert by_prober and by_prober[0].reason == "check_error"


# --- the real command line: SIGHUP reloads, SIGTERM stops --------------------------------


class Process:
    """`python -m exporter` with its stderr (the log) read in a thread, lines kept."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exporter",
                f"--config.file={config}",
                "--web.listen-address=127.0.0.1:0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, pattern: str, timeout: float = 20) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # bounded
            for line in list(self.lines):
                if m := re.search(pattern, line):
                    return m
            time.sleep(0.05)
        raise AssertionError(f"no log line matching {pattern!r}; log: {self.lines}")


@pytest.mark.slow
def test_sighup_reloads_the_real_cli_and_sigterm_stops_it(tmp_path, server):
    server.routes["/a"] = json_route({"status": "ok"})
    server.routes["/b"] = json_route({"status": "ok"})
    cfg = tmp_path / "runbook-exporter.yml"
    app = {"name": "web", "endpoints": [endpoint("a", server.url("/a"))]}
    cfg.write_text(yaml.safe_dump({"apps": [app]}))
    p = Process(cfg)
    try:
        port = p.wait_line(r"msg=listening .*port=(\d+)").group(1)
        url = f"http://127.0.0.1:{port}/metrics"
        wait_for(url, lambda s: requests(s, "a") >= 2, 20, "probing a")

        cfg.write_text("apps: [unclosed\n")
        p.proc.send_signal(signal.SIGHUP)
        p.wait_line(r"configuration reload failed")
        s = wait_for(url, lambda s: requests(s, "a") >= 3, 20, "still probing a after a bad file")
        assert p.proc.poll() is None and s.value("runbook_config_last_reload_successful") == 0

        app["endpoints"].append(endpoint("b", server.url("/b")))
        cfg.write_text(yaml.safe_dump({"apps": [app]}))
        p.proc.send_signal(signal.SIGHUP)
        p.wait_line(r"configuration reloaded")
        s = wait_for(url, lambda s: requests(s, "b") >= 1, 20, "probing b after SIGHUP")
        assert s.value("runbook_config_last_reload_successful") == 1
        assert requests(s, "a") >= 3  # a's prober kept its counters

        p.proc.send_signal(signal.SIGTERM)
        assert p.proc.wait(15) == 0
        assert not [line for line in p.lines if "Traceback" in line]
    finally:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(5)


@pytest.mark.slow
def test_ready_within_seconds_with_60s_probe_intervals(fresh_db, server, start):
    """With the default 60 s interval the jitter alone would delay some first probes by up to
    a minute; first runs are brought within scheduler.FIRST_RUN_WITHIN of start."""
    from exporter.scheduler import FIRST_RUN_WITHIN

    names = [f"ep{i}" for i in range(8)]
    for n in names:
        server.routes[f"/{n}"] = json_route({"status": "ok"})
    t0 = time.monotonic()
    ex = start(
        {
            "targets": [{"name": "db", "dsn": fresh_db, "collect_interval": "60s"}],
            "apps": [
                {
                    "name": "web",
                    "endpoints": [
                        {"name": n, "url": server.url(f"/{n}"), "interval": "60s"} for n in names
                    ],
                }
            ],
        }
    )
    deadline = t0 + FIRST_RUN_WITHIN + 5
    while not ex.exporter.ready() and time.monotonic() < deadline:  # bounded
        time.sleep(0.05)
    took = time.monotonic() - t0
    assert ex.exporter.ready(), f"not ready after {took:.1f}s"
    assert took < FIRST_RUN_WITHIN + 1.5
    assert all(server.count(f"/{n}") >= 1 for n in names)  # every endpoint probed
    s = scrape(ex.url)
    assert all(s.value("runbook_probe_success", app="web", endpoint=n) == 1 for n in names)
    assert s.value("runbook_collector_success", target="db", collector="database") == 1


def test_a_file_that_is_not_utf8_is_refused_like_any_bad_file(server, start):
    server.routes["/h"] = json_route({"status": "ok"})
    ex = start({"apps": [{"name": "web", "endpoints": [endpoint("h", server.url("/h"))]}]})
    ex.path.write_bytes("apps: []\n# caf\xe9\n".encode("latin-1"))
    ok, message = ex.exporter.reload()
    assert not ok and str(ex.path) in message
    assert ex.exporter.config.apps[0].endpoints[0].name == "h"
    assert scrape(ex.url).value("runbook_config_last_reload_successful") == 0


def test_reload_closes_http_clients_no_endpoint_uses(server, start):
    server.routes["/h"] = json_route({"status": "ok"})
    plain = endpoint("plain", server.url("/h"))
    lax = {**endpoint("lax", server.url("/h")), "tls": {"insecure_skip_verify": True}}
    ex = start({"apps": [{"name": "web", "endpoints": [plain, lax]}]})
    ex.wait_for(lambda s: requests(s, "plain") >= 1 and requests(s, "lax") >= 1, "probing")
    clients = ex.exporter.http_clients
    lax_client = clients.get(ex.exporter._probes[("web", "lax")][0].tls)
    ex.write({"apps": [{"name": "web", "endpoints": [plain]}]})
    ok, message = ex.exporter.reload()
    assert ok, message
    # the client of the removed TLS settings is closed; the one still used stays open
    assert lax_client.is_closed
    assert not clients.get(ex.exporter._probes[("web", "plain")][0].tls).is_closed
    ex.wait_for(lambda s: requests(s, "plain") >= 2, "still probing")
