"""Health JSON: assertions, components, the app's pool and app metrics, from real servers and
the sample app, checked through a real scrape."""

from __future__ import annotations

from tests.test_probe_http import probed, reason_of
from tests.test_probe_support import apps_config, endpoint, json_route, raw_route

STATUS_OK = [{"path": "status", "equals": "ok"}]


def test_garbage_truncated_and_missing_json(server, run_exporter):
    server.routes["/garbage"] = raw_route(b"<html>Bad gateway</html>", ctype="text/html")
    server.routes["/truncated"] = raw_route(b'{"status": "ok", "checks": {"database": {"sta')
    server.routes["/empty"] = raw_route(b"")
    server.routes["/missing"] = json_route({"healthy": True})
    server.routes["/wrong"] = json_route({"status": "degraded"})
    server.routes["/good"] = json_route({"status": "ok"})
    names = ("garbage", "truncated", "empty", "missing", "wrong", "good")
    ex = run_exporter(
        apps_config(*(endpoint(n, server.url(f"/{n}"), assertions=STATUS_OK) for n in names))
    )
    s = ex.wait_for(lambda s: all(probed(n)(s) for n in names), timeout=10)
    expected = {
        "garbage": "json",
        "truncated": "json",
        "empty": "json",
        "missing": "assertion",
        "wrong": "assertion",
        "good": None,
    }
    got = {n: reason_of(s, n) for n in names}
    assert got == expected
    for n in names:
        assert s.value("runbook_probe_status_code", app="web", endpoint=n) == 200
        want = 1 if expected[n] is None else 0
        assert s.value("runbook_probe_success", app="web", endpoint=n) == want, n


def test_assertion_kinds(server, run_exporter):
    doc = {"status": "ok", "db": {"latency_ms": 12, "state": "up"}, "version": "1.2"}
    server.routes["/h"] = json_route(doc)
    cases = {
        "equals": [{"path": "db.state", "equals": "up"}],
        "in": [{"path": "status", "in": ["ok", "degraded"]}],
        "range": [{"path": "db.latency_ms", "min": 0, "max": 50}],
        "above": [{"path": "db.latency_ms", "max": 10}],
        "not-number": [{"path": "status", "min": 1}],
        "not-in": [{"path": "status", "in": ["healthy"]}],
    }
    ex = run_exporter(
        apps_config(*(endpoint(n, server.url("/h"), assertions=a) for n, a in cases.items()))
    )
    s = ex.wait_for(lambda s: all(probed(n)(s) for n in cases), timeout=10)
    got = {n: s.value("runbook_probe_success", app="web", endpoint=n) for n in cases}
    assert got == {
        "equals": 1,
        "in": 1,
        "range": 1,
        "above": 0,
        "not-number": 0,
        "not-in": 0,
    }
    assert reason_of(s, "above") == "assertion"


def test_health_components_bounded_and_read_from_a_503(server, run_exporter):
    checks = {f"svc{i:02d}": {"status": "up"} for i in range(30)}
    checks["database"] = {"status": "down"}
    server.routes["/many"] = json_route({"status": "ok", "checks": checks})
    server.routes["/down"] = json_route(
        {"status": "error", "checks": {"database": {"status": "down"}, "cache": "ok"}}, code=503
    )
    server.routes["/flat"] = json_route(
        {"status": "ok", "database": "connected", "supabase": "disconnected", "ts": "x"}
    )
    ex = run_exporter(
        apps_config(
            endpoint("many", server.url("/many"), components={"max": 5}),
            endpoint("down", server.url("/down"), components={}),
            endpoint(
                "flat",
                server.url("/flat"),
                components={"path": "@", "include": ["database", "supabase"]},
            ),
        )
    )
    s = ex.wait_for(lambda s: all(probed(n)(s) for n in ("many", "down", "flat")), timeout=10)
    many = s.labelsets("runbook_health_component_up")
    assert len([lab for lab in many if lab["endpoint"] == "many"]) == 5  # the set is bounded
    assert s.value("runbook_health_component_up", endpoint="many", component="database") == 0
    # a 503 fails the probe, and its body still says which component is down
    assert reason_of(s, "down") == "status"
    assert s.value("runbook_health_component_up", endpoint="down", component="database") == 0
    assert s.value("runbook_health_component_up", endpoint="down", component="cache") == 1
    assert s.value("runbook_health_component_up", endpoint="flat", component="database") == 1
    assert s.value("runbook_health_component_up", endpoint="flat", component="supabase") == 0
    assert s.value("runbook_health_component_up", endpoint="flat", component="ts") is None


SQLA_HEALTHY = {"pool_size": 5, "checked_in": 3, "checked_out": 2, "overflow": -3}
SQLA_EXHAUSTED = {"pool_size": 5, "checked_in": 0, "checked_out": 15, "overflow": 10}


def test_pool_presets_healthy_and_exhausted(server, run_exporter):
    server.routes["/sqla-ok"] = json_route({"pool": {**SQLA_HEALTHY, "max_overflow": 10}})
    server.routes["/sqla-full"] = json_route({"pool": {**SQLA_EXHAUSTED, "max_overflow": 10}})
    server.routes["/pg-ok"] = json_route(
        {"db": {"totalCount": 4, "idleCount": 3, "waitingCount": 0, "max": 10}}
    )
    server.routes["/pg-full"] = json_route(
        {"db": {"totalCount": 10, "idleCount": 0, "waitingCount": 6, "max": 10}}
    )
    server.routes["/explicit"] = json_route(
        {"database": {"connections": {"active": 7, "idle": 1, "waiting": 2}, "poolMax": 8}}
    )
    sqla = {"preset": "sqlalchemy"}
    pg = {"preset": "node_postgres", "path": "db"}
    explicit = {
        "path": "database",
        "in_use": "connections.active",
        "idle": "connections.idle",
        "waiting": "connections.waiting",
        "size": "poolMax",
    }
    ex = run_exporter(
        apps_config(
            endpoint("sqla-ok", server.url("/sqla-ok"), pool=sqla),
            endpoint("sqla-full", server.url("/sqla-full"), pool=sqla),
            endpoint("pg-ok", server.url("/pg-ok"), pool=pg),
            endpoint("pg-full", server.url("/pg-full"), pool=pg),
            endpoint("explicit", server.url("/explicit"), pool=explicit),
        )
    )
    names = ("sqla-ok", "sqla-full", "pg-ok", "pg-full", "explicit")
    s = ex.wait_for(lambda s: all(probed(n)(s) for n in names), timeout=10)

    def pool(ep: str) -> dict[str, float | None]:
        fields = ("size", "in_use", "idle", "waiting", "overflow", "max_overflow")
        return {f: s.value(f"runbook_app_pool_{f}", app="web", endpoint=ep) for f in fields}

    def exhausted(p: dict) -> bool:  # runbook 001: checked_out >= pool_size + max_overflow
        return p["in_use"] >= p["size"] + (p["max_overflow"] or 0)

    ok, full = pool("sqla-ok"), pool("sqla-full")
    assert ok == {
        "size": 5,
        "in_use": 2,
        "idle": 3,
        "waiting": None,
        "overflow": 0,  # SQLAlchemy's -3 (pool not yet full) clamped
        "max_overflow": 10,
    }
    assert full["in_use"] == 15 and full["overflow"] == 10
    assert not exhausted(ok) and exhausted(full)
    pg_ok, pg_full = pool("pg-ok"), pool("pg-full")
    assert pg_ok == {
        "size": 10,
        "in_use": 1,
        "idle": 3,
        "waiting": 0,
        "overflow": None,
        "max_overflow": None,
    }
    assert pg_full["in_use"] == 10 and pg_full["waiting"] == 6
    assert not exhausted(pg_ok) and exhausted(pg_full)
    assert pool("explicit") == {
        "size": 8,
        "in_use": 7,
        "idle": 1,
        "waiting": 2,
        "overflow": None,
        "max_overflow": None,
    }
    # pool numbers are readings, not pass/fail: the probes themselves succeeded
    assert all(s.value("runbook_probe_success", app="web", endpoint=n) == 1 for n in names)


def test_app_metrics_become_named_gauges(server, run_exporter):
    server.routes["/metrics"] = json_route(
        {"responseTime": {"p95": 2500, "p99": "4100"}, "errorRate": 0.02, "label": "x"}
    )
    metrics = [
        {"name": "response_time_p95_seconds", "path": "responseTime.p95", "scale": 0.001},
        {"name": "response_time_p99_seconds", "path": "responseTime.p99", "scale": 0.001},
        {"name": "failed_ratio", "path": "errorRate", "help": "Share of requests that failed."},
        {"name": "not_a_number", "path": "label"},
        {"name": "absent", "path": "nowhere.at.all"},
    ]
    ex = run_exporter(apps_config(endpoint("m", server.url("/metrics"), metrics=metrics)))
    s = ex.wait_for(probed("m"), timeout=10)
    assert s.value("runbook_app_response_time_p95_seconds", app="web", endpoint="m") == 2.5
    assert s.value("runbook_app_response_time_p99_seconds", app="web", endpoint="m") == 4.1
    assert s.value("runbook_app_failed_ratio", app="web", endpoint="m") == 0.02
    assert s.families["runbook_app_failed_ratio"].documentation == "Share of requests that failed."
    assert "runbook_app_not_a_number" not in s.families
    assert "runbook_app_absent" not in s.families


def test_sample_app_end_to_end_with_incidents(sample_app, run_exporter):
    base = sample_app.url
    config = {
        "apps": [
            {
                "name": "sample",
                "defaults": {"interval": "300ms", "timeout": "250ms"},
                "endpoints": [
                    {"name": "health", "url": f"{base}/api/health", "assertions": STATUS_OK},
                    {"name": "live", "url": f"{base}/api/health/live"},
                    {
                        "name": "monitoring",
                        "url": f"{base}/api/monitoring/health",
                        "pool": {"preset": "sqlalchemy"},
                        "components": {},
                    },
                    {
                        "name": "metrics",
                        "url": f"{base}/api/health/metrics",
                        "metrics": [
                            {
                                "name": "response_time_p95_seconds",
                                "path": "responseTime.p95",
                                "scale": 0.001,
                            },
                            {"path": "errorRate", "meaning": "error_ratio", "unit": "ratio"},
                        ],
                    },
                ],
            }
        ]
    }
    ex = run_exporter(config)
    names = ("health", "live", "monitoring", "metrics")
    s = ex.wait_for(lambda s: all(probed(n, app="sample")(s) for n in names), timeout=10)
    assert all(s.value("runbook_probe_success", app="sample", endpoint=n) == 1 for n in names)
    assert s.value("runbook_app_pool_in_use", app="sample", endpoint="monitoring") == 2
    assert s.value("runbook_health_component_up", endpoint="monitoring", component="database") == 1

    sample_app.set_incident("pool_exhausted")
    s = ex.wait_for(
        lambda s: s.value("runbook_app_pool_in_use", app="sample", endpoint="monitoring") == 15,
        timeout=10,
    )
    size = s.value("runbook_app_pool_size", app="sample", endpoint="monitoring")
    extra = s.value("runbook_app_pool_max_overflow", app="sample", endpoint="monitoring")
    in_use = s.value("runbook_app_pool_in_use", app="sample", endpoint="monitoring")
    assert in_use >= size + extra  # runbook 001's rule fires

    sample_app.set_incident("down")
    s = ex.wait_for(
        lambda s: s.value("runbook_probe_status_code", app="sample", endpoint="health") == 503,
        timeout=10,
    )
    assert reason_of(s, "health", app="sample") == "status"
    assert s.value("runbook_probe_success", app="sample", endpoint="live") == 1
    s = ex.wait_for(
        lambda s: (
            s.value("runbook_health_component_up", endpoint="monitoring", component="database") == 0
        ),
        timeout=10,
    )

    sample_app.set_incident("slow")  # 3.5 s answers against a 250 ms timeout
    s = ex.wait_for(lambda s: reason_of(s, "live", app="sample") == "timeout", timeout=10)
    assert s.value("runbook_probe_consecutive_failures", app="sample", endpoint="live") >= 1

    sample_app.set_incident(None)
    s = ex.wait_for(
        lambda s: all(
            s.value("runbook_probe_success", app="sample", endpoint=n) == 1 for n in names
        ),
        timeout=10,
    )
    assert s.value("runbook_app_error_ratio", app="sample", endpoint="metrics") == 0.002


def test_sample_app_incident_switch_over_http(sample_app):
    import httpx

    r = httpx.post(f"{sample_app.url}/admin/incident", json={"incident": "errors"}, timeout=5)
    assert r.status_code == 204
    assert httpx.get(f"{sample_app.url}/api/health/metrics", timeout=5).json()["errorRate"] == 0.08
    r = httpx.post(f"{sample_app.url}/admin/incident", json={"incident": "bogus"}, timeout=5)
    assert r.status_code == 400
    httpx.post(f"{sample_app.url}/admin/incident", json={"incident": None}, timeout=5)
    assert sample_app.incident is None
