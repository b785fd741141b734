"""End to end: incident -> metric -> alert -> Alertmanager -> webhook.

A real PostgreSQL (fixtures), the sample app, the exporter, a real Prometheus (scrape and
evaluation every second) loaded with the shipped alerts/*.rules.yml, whose `for:` is cut to 2 s
by a test-time rewrite only, and a real Alertmanager loaded with the shipped
alerts/alertmanager.yml, whose receivers are rewritten to post to a local webhook sink (group
wait and interval 1 s). Each scenario injects an incident, waits for its notification at the
sink (right alert, labels, severity, and the receiver the shipped routing names for them), then
resolves it and waits for the resolved notification. The time from incident to notification is
printed at the end of the module (see docs/dashboards.md for the figures).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from exporter.demo.devstack import AlertmanagerTimers, DevStack, SinkAlert
from exporter.demo.sampleapp import SampleApp
from tests import incidents
from tests.helpers import tool

ROOT = Path(__file__).resolve().parent.parent
AM_CONFIG = ROOT / "alerts" / "alertmanager.yml"
TARGET, QUEUE, APP = "shop", "processing_jobs", "shop-web"
FIRING_TIMEOUT = 60.0  # seconds; typical figures are under 10
RESOLVED_TIMEOUT = 60.0
HEALTHY_WATCH = 20.0  # seconds of a healthy run during which nothing may be sent

pytestmark = pytest.mark.slow


@dataclass
class Timing:
    scenario: str
    alert: str
    severity: str
    to_firing: float
    to_resolved: float


TIMINGS: list[Timing] = []


@pytest.fixture(scope="module", autouse=True)
def report_timings(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if not TIMINGS:
        return
    lines = [
        "",
        "incident -> notification at the webhook sink (collect 2 s, scrape/eval 1 s, for: 2 s, "
        "group_wait/group_interval 1 s):",
        f"  {'scenario':<24} {'alert':<30} {'severity':<9} {'firing':>8} {'resolved':>9}",
    ]
    lines += [
        f"  {t.scenario:<24} {t.alert:<30} {t.severity:<9} {t.to_firing:>7.1f}s "
        f"{t.to_resolved:>8.1f}s"
        for t in TIMINGS
    ]
    # shown even when output is captured (the default): pytest's own reporter, capture paused
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print("\n".join(lines))
        return
    with capture.global_and_fixture_disabled():
        for line in lines:
            reporter.write_line(line)


@dataclass
class Env:
    dsn: str
    app: SampleApp
    stack: DevStack

    @property
    def sink(self) -> Any:
        return self.stack.sink


def routed_receivers(config: Path, labels: dict[str, str]) -> set[str]:
    """The receivers the routing tree of `config` names for an alert with these labels."""
    r = subprocess.run(
        [tool("amtool"), "config", "routes", "test", f"--config.file={config}"]
        + [f"{k}={v}" for k, v in sorted(labels.items())],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return {x.strip() for x in r.stdout.strip().split(",") if x.strip()}


@pytest.fixture
def make_env(
    fresh_db: str, run_exporter: Callable[[dict], Any]
) -> Iterator[Callable[..., Env]]:  # fmt: skip
    """Build the healthy stack; keyword arguments are target thresholds for the config."""
    apps: list[SampleApp] = []
    stacks: list[DevStack] = []

    def make(**thresholds: Any) -> Env:
        incidents.create_queue(fresh_db)
        incidents.use_queue_indexes(fresh_db)
        app = SampleApp(host="127.0.0.1", port=0).start()
        apps.append(app)
        target = incidents.target_config(fresh_db, **thresholds)
        # every 2 s: RunbookCollectorStale fires when the last success is older than 3
        # intervals, and with 1 s the scrape and evaluation lag alone comes close to 3 s
        target["collect_interval"] = "2s"
        # the slow table and statement collectors need no second-by-second freshness
        target["collectors"] = {"tables": {"interval": "5s"}, "statements": {"interval": "5s"}}
        endpoints = incidents.sample_app_endpoints(app.url)
        app_cfg = incidents.app_config(APP, endpoints)
        # EndpointDown counts downtime from the probes: 1 min / 5 min by default, lowered
        # through the config (not the rules) so the scenario takes seconds
        app_cfg["defaults"]["thresholds"] = {"downtime_warning": "2s", "downtime_critical": "4s"}
        exp = run_exporter({"targets": [target], "apps": [app_cfg]})
        stack = DevStack(
            [f"127.0.0.1:{exp.server.port}"],
            alertmanager_config=AM_CONFIG,
            interval=1.0,
            max_for=2.0,
            timers=AlertmanagerTimers(
                group_wait=1.0, group_interval=1.0, repeat_interval=3600.0, resolve_timeout=10.0
            ),
        )
        stacks.append(stack)
        stack.start()
        stack.wait_scraped()
        prom = stack.prom
        for series in (
            f'runbook_queue_jobs{{target="{TARGET}",queue="{QUEUE}",status="pending"}}',
            f'runbook_pg_connections{{target="{TARGET}"}}',
            f'runbook_probe_success{{app="{APP}"}}',
            f'runbook_app_pool_in_use{{app="{APP}"}}',
        ):
            prom.wait_until(lambda s=series: prom.query(s), 30, f"{series} in Prometheus")
        return Env(fresh_db, app, stack)

    yield make
    for s in stacks:
        s.stop()
    for a in apps:
        a.stop()


def run_incident(
    env: Env,
    scenario: str,
    inject: Callable[[], None],
    resolve: Callable[[], None],
    alert: str,
    severity: str,
    labels: dict[str, str],
) -> tuple[SinkAlert, SinkAlert]:
    sink = env.sink
    before = [a for a in sink.alerts() if a.name == alert]
    assert not before, f"{alert} was sent before the incident: {before}"

    def matches(status: str) -> Callable[[SinkAlert], bool]:
        return lambda a: (
            a.name == alert
            and a.status == status
            and a.labels.get("severity") == severity
            and labels.items() <= a.labels.items()
        )

    started = time.monotonic()
    inject()
    try:
        fired = sink.wait_for_alert(
            matches("firing"), FIRING_TIMEOUT, since=started, what=f"{alert} {severity} firing"
        )
    except AssertionError as e:
        raise AssertionError(f"{e}\nPrometheus alerts: {env.stack.prom.alerts()}") from None
    # the notification came through the receiver the shipped routing tree names
    am_file = env.stack.workdir / "alertmanager.yml"
    assert fired.receiver in routed_receivers(am_file, fired.labels), fired
    assert fired.annotations.get("runbook_url", "").endswith(f"/docs/runbooks/{alert}.md")
    resolving = time.monotonic()
    resolve()
    resolved = sink.wait_for_alert(
        matches("resolved"),
        RESOLVED_TIMEOUT,
        since=resolving,
        what=f"{alert} {severity} resolved",
    )
    TIMINGS.append(
        Timing(
            scenario,
            alert,
            severity,
            fired.received_at - started,
            resolved.received_at - resolving,
        )
    )
    return fired, resolved


def test_healthy_run_sends_nothing(make_env: Callable[..., Env]) -> None:
    env = make_env()
    prom = env.stack.prom
    groups = prom.rule_groups()
    rules = [r for g in groups for r in g["rules"]]
    assert sum(r["type"] == "alerting" for r in rules) >= 20
    first = {g["name"]: g["lastEvaluation"] for g in groups}
    time.sleep(HEALTHY_WATCH)
    # every shipped rule evaluated again, without error, against the real exporter's series
    groups = prom.rule_groups()
    assert all(g["lastEvaluation"] > first[g["name"]] for g in groups)
    broken = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"]]
    broken = [b for b in broken if b[1]]
    assert not broken, broken
    assert [r["health"] for g in groups for r in g["rules"] if r["health"] != "ok"] == []
    assert prom.alerts() == [], "alerts pending or firing in a healthy run"
    assert env.sink.notifications == [], [n.payload for n in env.sink.notifications]


def test_queue_backlog(make_env: Callable[..., Env]) -> None:
    env = make_env()

    def inject() -> None:  # above runbook 000's critical depth of 200
        incidents.execute(env.dsn, (incidents.BACKLOG, (250,)))

    def resolve() -> None:  # the workers caught up
        incidents.execute(
            env.dsn,
            "UPDATE processing_jobs SET status = 'completed', updated_at = now()"
            " WHERE status = 'pending'",
        )

    run_incident(
        env,
        "queue backlog",
        inject,
        resolve,
        "QueueBacklogHigh",
        "critical",
        {"target": TARGET, "queue": QUEUE},
    )


def test_stuck_jobs(make_env: Callable[..., Env]) -> None:
    env = make_env()

    def inject() -> None:  # processing, not updated for 45 min (stuck after 30 min)
        incidents.execute(env.dsn, (incidents.STUCK, (3,)))

    def resolve() -> None:  # runbook 000: reset stuck jobs to pending, and a worker takes them
        incidents.execute(
            env.dsn,
            "UPDATE processing_jobs SET status = 'completed', updated_at = now()"
            " WHERE status = 'processing'",
        )

    run_incident(
        env,
        "stuck jobs",
        inject,
        resolve,
        "QueueJobsStuck",
        "warning",
        {"target": TARGET, "queue": QUEUE},
    )


def test_endpoint_down(make_env: Callable[..., Env]) -> None:
    env = make_env()
    run_incident(
        env,
        "endpoint down",
        lambda: env.app.set_incident("down"),
        lambda: env.app.set_incident(None),
        "EndpointDown",
        "critical",
        {"app": APP, "endpoint": "health"},
    )


def test_app_pool_exhausted(make_env: Callable[..., Env]) -> None:
    env = make_env()
    run_incident(
        env,
        "app pool exhausted",
        lambda: env.app.set_incident("pool_exhausted"),
        lambda: env.app.set_incident(None),
        "AppPoolExhausted",
        "critical",
        {"app": APP, "endpoint": "monitoring"},
    )


def test_connections_near_limit(make_env: Callable[..., Env], fresh_db: str) -> None:
    """The warning ratio is lowered through the config to a few sessions above what the
    server has now, rather than opening 50 connections."""
    usable = incidents.usable_connections(fresh_db)
    baseline = incidents.client_sessions(fresh_db)
    warning = (baseline + 3.5) / usable
    critical = min(1.0, (baseline + 30.5) / usable)
    env = make_env(connections_warning_ratio=warning, connections_critical_ratio=critical)
    held: list[psycopg.Connection] = []

    def inject() -> None:
        held.extend(psycopg.connect(fresh_db, application_name="e2e-pool") for _ in range(6))

    def resolve() -> None:
        while held:
            held.pop().close()

    try:
        run_incident(
            env,
            "connections near limit",
            inject,
            resolve,
            "PostgresConnectionsNearLimit",
            "warning",
            {"target": TARGET},
        )
    finally:
        resolve()
