"""Endpoint configuration: errors that name path and value, app defaults, secrets kept out of
metrics and logs, the example config, and promtool on a scrape with endpoints configured."""

from __future__ import annotations

import base64
import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.config import ConfigError, parse_config
from exporter.logs import LogfmtFormatter
from exporter.secrets import redact
from tests.helpers import assert_declared, assert_promtool_clean
from tests.incidents import HTTPSHealth
from tests.test_probe_http import probed, reason_of
from tests.test_probe_support import apps_config, endpoint, json_route, send

ROOT = Path(__file__).resolve().parent.parent


def config_error(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config(text, "apps.yml")
    return str(e.value)


def one_endpoint(**fields: str) -> str:
    extra = "".join(f"        {k}: {v}\n" for k, v in fields.items())
    return (
        "apps:\n"
        "  - name: web\n"
        "    endpoints:\n"
        "      - name: health\n"
        "        url: http://127.0.0.1:8080/api/health\n" + extra
    )


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"timeout": "soon"}, "apps.yml:6: apps[0].endpoints[0].timeout: invalid duration 'soon'"),
        ({"interval": "-5s"}, "apps[0].endpoints[0].interval: invalid duration '-5s'"),
        ({"method": "FETCH"}, "apps[0].endpoints[0].method: Input should be 'GET'"),
        ({"expected_status": "[200, 99]"}, "apps[0].endpoints[0].expected_status[1]:"),
        ({"max_body_size": "lots"}, "max_body_size: invalid size 'lots'"),
        ({"follow_redirect": "true"}, "apps[0].endpoints[0].follow_redirect: unknown key"),
        (
            {"metrics": "[{name: responseTime, path: responseTime.p95}]"},
            "apps[0].endpoints[0].metrics[0].name: invalid metric name: lower-case letters",
        ),
        (
            {"metrics": "[{name: response_time_ms, path: x}]"},
            "metrics[0].name: invalid metric name: spell the unit out: 'ms' is an abbreviation "
            "(got 'response_time_ms')",
        ),
        (
            {"metrics": "[{name: latency_milliseconds, path: x}]"},
            "use the base unit seconds instead of milliseconds",
        ),
        ({"metrics": "[{name: hits_total, path: x}]"}, "must not end in _total"),
        (
            {"assertions": "[{path: 'checks[', equals: up}]"},
            "apps[0].endpoints[0].assertions[0].path: invalid JMESPath expression",
        ),
        (
            {"assertions": "[{path: status, equals: ok, min: 1}]"},
            "assertions[0]: give exactly one of equals, in, or min and/or max",
        ),
        ({"pool": "{path: pool}"}, "apps[0].endpoints[0].pool: give a preset"),
        ({"pool": "{preset: hikari}"}, "apps[0].endpoints[0].pool.preset: Input should be"),
        (
            {"thresholds": "{latency_warning: 5s, latency_critical: 3s}"},
            "apps[0].endpoints[0].thresholds: latency_warning (5.0) must not be above "
            "latency_critical (3.0)",
        ),
        (
            {"thresholds": "{tls_expiry_warning: 1d}"},
            "tls_expiry_critical (259200.0) must not be above tls_expiry_warning (86400.0)",
        ),
        (
            {"interval": "5s", "timeout": "10s"},
            "apps[0].endpoints[0]: timeout (10s) must not exceed interval (5s)",
        ),
        ({"headers": "{Authorization: {env: A, file: /b}}"}, "give exactly one of env or file"),
        ({"basic_auth": "{username: u, password: hunter2}"}, "basic_auth.password"),
        ({"tls": "{key_file: /k.pem}"}, "apps[0].endpoints[0].tls: key_file needs cert_file"),
    ],
)
def test_bad_endpoint_config_names_path_and_value(fields, expected):
    msg = config_error(one_endpoint(**fields))
    assert expected in msg, msg


def test_url_errors_never_echo_credentials():
    text = one_endpoint().replace(
        "http://127.0.0.1:8080", "https://ops:pa55word-xyz@app.example.com"
    )
    msg = config_error(text)
    assert "apps[0].endpoints[0]: url: put credentials in basic_auth" in msg
    assert "pa55word-xyz" not in msg
    msg = config_error(one_endpoint().replace("http://127.0.0.1:8080", "ftp://example.com"))
    assert "url: must be an absolute http:// or https:// URL" in msg


def test_app_level_errors():
    msg = config_error("apps:\n  - name: web\n    endpoints: []\n")
    assert "apps[0].endpoints: List should have at least 1 item" in msg
    dup = "apps:\n  - name: web\n    endpoints:\n" + (
        "      - {name: h, url: 'http://127.0.0.1:1/'}\n" * 2
    )
    assert "endpoint names must be unique within an app: ['h']" in config_error(dup)
    bad_defaults = (
        "apps:\n  - name: web\n    defaults: {timeout: never}\n    endpoints:\n"
        "      - {name: a, url: 'http://127.0.0.1:1/'}\n      - {name: b, url: 'http://127.0.0.1:1/'}\n"
    )
    msg = config_error(bad_defaults)
    # reported once, where it was written, not once per endpoint
    assert msg.count("invalid duration 'never'") == 1
    assert "apps[0].defaults.timeout" in msg


def test_app_defaults_apply_and_endpoints_override():
    cfg = parse_config(
        "apps:\n"
        "  - name: web\n"
        "    defaults:\n"
        "      interval: 30s\n"
        "      headers: {Accept: application/json, X-Team: ops}\n"
        "      thresholds: {latency_warning: 1s, latency_critical: 2s}\n"
        "    endpoints:\n"
        "      - name: a\n"
        "        url: http://127.0.0.1:1/a\n"
        "      - name: b\n"
        "        url: http://127.0.0.1:1/b\n"
        "        interval: 10s\n"
        "        headers: {X-Team: web}\n"
        "        thresholds: {latency_critical: 4s}\n",
        "apps.yml",
    )
    a, b = cfg.apps[0].endpoints
    assert (a.interval, a.probe_timeout, b.interval, b.probe_timeout) == (30, 10, 10, 10)
    assert a.headers == {"Accept": "application/json", "X-Team": "ops"}
    assert b.headers == {"Accept": "application/json", "X-Team": "web"}
    assert (a.thresholds.latency_warning, a.thresholds.latency_critical) == (1, 2)
    assert (b.thresholds.latency_warning, b.thresholds.latency_critical) == (1, 4)
    # the runbooks' defaults where nothing is set
    th = a.thresholds
    assert (th.latency_p95_warning, th.latency_p95_critical) == (2, 5)
    assert (th.error_ratio_warning, th.error_ratio_critical) == (0.01, 0.05)
    assert (th.downtime_warning, th.downtime_critical, th.consecutive_failures) == (60, 300, 3)
    assert a.slo_objective == 0.999 and a.expected_status == [200]
    assert a.max_body_size == 1024 * 1024 and a.follow_redirects is False


RUNBOOK_EXAMPLES = {  # examples/<runbook>.yml -> its app
    "000-pdf-processing": "pdf-processor",
    "001-ops-backend": "ops-backend",
    "002-pourtrait": "pourtrait",
    "003-jobsheet-auditor": "jobsheet-auditor",
    "004-eden-erp": "eden-erp",
}


@pytest.mark.parametrize(("example", "app"), RUNBOOK_EXAMPLES.items())
def test_example_config_passes_check_config(example: str, app: str):
    path = f"examples/{example}.yml"
    r = subprocess.run(
        [sys.executable, "-m", "exporter", "--config.file", path, "--check-config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"app {app}" in r.stdout


def test_runbook_004_example_alerts_on_what_the_app_reports():
    cfg = parse_config((ROOT / "examples/004-eden-erp.yml").read_text(), "004-eden-erp.yml")
    eden = {e.name: e for e in next(a for a in cfg.apps if a.name == "eden-erp").endpoints}
    assert set(eden) >= {"live", "ready", "detailed", "metrics"}
    assert eden["metrics"].thresholds.latency_p95_critical == 5
    assert eden["metrics"].thresholds.app_latency_average_critical == 2
    assert {m.meaning for m in eden["metrics"].metrics} >= {
        "latency_average",
        "latency_p95",
        "error_ratio",
    }
    assert eden["detailed"].metrics[0].meaning == "memory_ratio"
    ops = parse_config((ROOT / "examples/001-ops-backend.yml").read_text(), "001.yml").apps[0]
    assert ops.endpoints[1].pool is not None and ops.endpoints[1].pool.preset == "sqlalchemy"


def test_secrets_reach_the_app_but_never_metrics_or_logs(
    server, run_exporter, tmp_path, monkeypatch, caplog
):
    token = f"tok-{uuid.uuid4().hex}"
    password = f"pw-{uuid.uuid4().hex}"
    monkeypatch.setenv("PROBE_TEST_TOKEN", token)
    pw_file = tmp_path / "password"
    pw_file.write_text(password + "\n")

    def needs_token(h) -> None:
        ok = h.headers.get("Authorization") == token
        send(h, 200 if ok else 401, b'{"status": "ok"}')

    server.routes["/token"] = needs_token
    server.routes["/basic"] = json_route({"status": "ok"})
    server.routes["/fails"] = json_route({"status": "error"}, code=500)
    auth = {"Authorization": {"env": "PROBE_TEST_TOKEN"}}
    basic = {"username": "probe", "password": {"file": str(pw_file)}}
    caplog.set_level(logging.INFO, logger="exporter")
    ex = run_exporter(
        apps_config(
            endpoint("token", server.url("/token"), headers=auth),
            endpoint("basic", server.url("/basic"), basic_auth=basic),
            endpoint("fails", server.url("/fails"), headers=auth, basic_auth=basic),
            endpoint("unset", server.url("/basic"), headers={"X-Key": {"env": "PROBE_TEST_NOPE"}}),
        )
    )
    names = ("token", "basic", "fails", "unset")
    s = ex.wait_for(lambda s: all(probed(n)(s) for n in names), timeout=10)
    # the secrets were sent: the app accepted the token, the basic credentials arrived
    assert s.value("runbook_probe_success", app="web", endpoint="token") == 1
    with server.lock:
        sent = server.headers["/basic"][0]["Authorization"]
    assert base64.b64decode(sent.removeprefix("Basic ")).decode() == f"probe:{password}"
    # a missing secret fails the probe without a request and without a made-up reason
    assert s.value("runbook_probe_success", app="web", endpoint="unset") == 0
    assert reason_of(s, "unset") is None
    assert s.value("runbook_probe_status_code", app="web", endpoint="unset") == 0
    basic_token = sent.removeprefix("Basic ")
    for secret in (token, password, basic_token):
        assert secret not in s.text
        assert redact(f"x {secret} y") == "x <redacted> y"  # registered when loaded
    formatter = LogfmtFormatter()
    records = [r for r in caplog.records if r.name.startswith("exporter")]
    assert any(getattr(r, "endpoint", None) == "fails" for r in records), "no failure logged"
    unset = [r for r in records if getattr(r, "endpoint", None) == "unset"]
    assert unset and "PROBE_TEST_NOPE is not set" in unset[0].error
    for r in records:
        raw = " ".join(str(v) for v in vars(r).values())
        for secret in (token, password, basic_token):
            assert secret not in raw
            assert secret not in formatter.format(r)


@pytest.fixture
def tls_app(tmp_path) -> Iterator[HTTPSHealth]:
    with HTTPSHealth(tmp_path) as https:
        yield https


def test_scrape_with_endpoints_is_declared_and_promtool_clean(run_exporter, tls_app, sample_app):
    base = sample_app.url
    config = {
        "apps": [
            {
                "name": "sample",
                "defaults": {"interval": "300ms", "timeout": "250ms"},
                "endpoints": [
                    {
                        "name": "monitoring",
                        "url": f"{base}/api/monitoring/health",
                        "pool": {"preset": "sqlalchemy"},
                        "components": {},
                        "assertions": [{"path": "status", "equals": "ok"}],
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
                        "pool": {
                            "path": "database.connections",
                            "in_use": "active",
                            "idle": "idle",
                            "waiting": "waiting",
                        },
                    },
                    {
                        "name": "tls",
                        "url": tls_app.url,
                        "tls": {"ca_file": str(tls_app.ca_file)},
                    },
                    {"name": "missing", "url": f"{base}/nope"},
                ],
            }
        ]
    }
    ex = run_exporter(config)
    names = ("monitoring", "metrics", "tls", "missing")
    s = ex.wait_for(lambda s: all(probed(n, app="sample")(s) for n in names), timeout=10)
    assert s.value("runbook_probe_success", app="sample", endpoint="tls") == 1
    configured = {"runbook_app_response_time_p95_seconds", "runbook_app_error_ratio"}
    served = set(s.families)
    assert_declared(served, also=configured)
    for name in (
        "runbook_probe_success",
        "runbook_probe_request_duration_seconds",
        "runbook_probe_tls_cert_expiry_timestamp_seconds",
        "runbook_health_component_up",
        "runbook_app_pool_in_use",
        "runbook_probe_latency_threshold_seconds",
        "runbook_slo_objective",
        *configured,
    ):
        assert name in served, name
    assert_promtool_clean(s.text)
