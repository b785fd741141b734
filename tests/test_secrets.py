"""A recognisable secret in every place a secret can be configured, driven through every error
path we can reach: config errors of each kind, --check-config, and a running exporter whose
database refuses connections and whose endpoints fail, logging at debug. The secret must
appear in no error, log line, metric, HTTP response of the exporter, stdout or stderr.

Each test uses its own canary (the same recognisable prefix and a random suffix): a secret
registered for redaction by an earlier test must not hide a leak in a later one.
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from exporter import logs
from exporter.config import ConfigError, load_config
from exporter.demo.pgserver import free_port
from tests.test_probe_http import probed
from tests.test_probe_support import redirect_route, send

PREFIX = "S3cr3t-canary-7f3a"


@pytest.fixture
def canary() -> str:
    return f"{PREFIX}-{uuid.uuid4().hex[:8]}"


def assert_clean(text: str, canary: str, where: str) -> None:
    assert canary not in text, f"the secret reached {where}:\n{text}"
    assert PREFIX not in text, f"part of the secret reached {where}:\n{text}"


@pytest.fixture
def secret_config(tmp_path, monkeypatch, canary) -> dict:
    """A valid config with the canary in every secret position (the env vars and files exist)."""
    pw_file = tmp_path / "db-password"
    pw_file.write_text(canary + "-file\n")
    token_file = tmp_path / "token"
    token_file.write_text(canary + "-token-file\n")
    monkeypatch.setenv("CANARY_DB_PASSWORD", canary + "-env")
    dead = free_port()  # nothing listens: every connection is refused
    monkeypatch.setenv("CANARY_DSN", f"postgresql://mon:{canary}-dsn-env@127.0.0.1:{dead}/app")
    monkeypatch.setenv("CANARY_TOKEN", canary + "-token-env")
    return {
        "targets": [
            {"name": "uri", "dsn": f"postgresql://mon:{canary}-uri@127.0.0.1:{dead}/app"},
            {"name": "kv", "dsn": f"host=127.0.0.1 port={dead} user=mon password={canary}-kv"},
            {
                "name": "pwenv",
                "dsn": f"host=127.0.0.1 port={dead}",
                "password_env": "CANARY_DB_PASSWORD",
            },
            {"name": "pwfile", "dsn": f"host=127.0.0.1 port={dead}", "password_file": str(pw_file)},
            {"name": "dsnenv", "dsn_env": "CANARY_DSN"},
        ],
        "apps": [
            {
                "name": "web",
                "defaults": {"interval": "200ms", "timeout": "150ms"},
                "endpoints": [
                    {
                        "name": "inline",
                        "url": f"http://127.0.0.1:{dead}/health",
                        "headers": {"X-Api-Key": canary + "-header"},
                    },
                    {
                        "name": "ref",
                        "url": f"http://127.0.0.1:{dead}/health",
                        "headers": {
                            "Authorization": {"env": "CANARY_TOKEN"},
                            "X-Token": {"file": str(token_file)},
                        },
                    },
                    {
                        "name": "basic",
                        "url": f"http://127.0.0.1:{dead}/health",
                        "basic_auth": {"username": "probe", "password": {"file": str(pw_file)}},
                    },
                    {"name": "query", "url": f"http://127.0.0.1:{dead}/health?token={canary}-url"},
                ],
            }
        ],
    }


def write(tmp_path: Path, config: dict | str, name: str = "config.yml") -> Path:
    path = tmp_path / name
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    return path


# each breaks the valid config in one way; the canary must stay out of every message
BREAKAGES = {
    "unknown key in a target": lambda c: c["targets"][0].update(passwd=c["targets"][1]["dsn"]),
    "bad duration": lambda c: c["targets"][0].update(collect_interval="often"),
    "bad port in a URI DSN": lambda c: c["targets"][0].update(
        dsn=c["targets"][0]["dsn"].replace("@127.0.0.1:", "@127.0.0.1:x")
    ),
    "bad port in a key=value DSN": lambda c: c["targets"][1].update(
        dsn=c["targets"][1]["dsn"] + " port=notaport"
    ),
    "unparseable DSN": lambda c: c["targets"][1].update(dsn=c["targets"][1]["dsn"] + " garbage"),
    "DSN as a number": lambda c: c["targets"][1].update(dsn=12345),
    "timeouts": lambda c: c["targets"][2].update(collect_timeout="1h"),
    "password file missing": lambda c: c["targets"][3].update(password_file="/nonexistent/pw"),
    "dsn_env unset": lambda c: c["targets"][4].update(dsn_env="CANARY_UNSET"),
    "inline header wrong type": lambda c: c["apps"][0]["endpoints"][0]["headers"].update(
        {"X-Api-Key": [c["apps"][0]["endpoints"][0]["headers"]["X-Api-Key"]]}
    ),
    "header with a line break": lambda c: c["apps"][0]["endpoints"][0]["headers"].update(
        {"X-Api-Key": c["apps"][0]["endpoints"][0]["headers"]["X-Api-Key"] + "\r\nX: y"}
    ),
    "unknown key in a header ref": lambda c: c["apps"][0]["endpoints"][1]["headers"].update(
        {"Authorization": {"value": c["apps"][0]["endpoints"][0]["headers"]["X-Api-Key"]}}
    ),
    "inline basic_auth password": lambda c: c["apps"][0]["endpoints"][2]["basic_auth"].update(
        password=c["apps"][0]["endpoints"][0]["headers"]["X-Api-Key"]
    ),
    "bad scheme with a query token": lambda c: c["apps"][0]["endpoints"][3].update(
        url=c["apps"][0]["endpoints"][3]["url"].replace("http://", "gopher://")
    ),
    "credentials in the URL": lambda c: c["apps"][0]["endpoints"][3].update(
        url=c["apps"][0]["endpoints"][3]["url"].replace("//", "//u:" + PREFIX + "@")
    ),
    "other error next to a query token": lambda c: c["apps"][0]["endpoints"][3].update(
        interval="soon"
    ),
    "unknown key holding the URL": lambda c: c["apps"][0]["endpoints"][3].update(
        link=c["apps"][0]["endpoints"][3]["url"]
    ),
}


# missing secret sources are warnings in --check-config (environment="warn"), errors at start
WARNED_IN_CHECK_CONFIG = {"password file missing", "dsn_env unset"}


@pytest.mark.parametrize("breakage", BREAKAGES, ids=lambda b: b.replace(" ", "_"))
@pytest.mark.parametrize("environment", ["require", "warn"])
def test_config_errors_never_show_a_secret(breakage, environment, secret_config, tmp_path, canary):
    BREAKAGES[breakage](secret_config)
    path = write(tmp_path, secret_config)
    if environment == "warn" and breakage in WARNED_IN_CHECK_CONFIG:
        text = "\n".join(load_config(path, environment=environment).warnings)
    else:
        with pytest.raises(ConfigError) as e:
            load_config(path, environment=environment)
        text = str(e.value)
    assert str(path) in text
    assert_clean(text, canary, f"the error for {breakage}")


def test_yaml_level_errors_never_show_a_secret(secret_config, tmp_path, canary):
    valid = yaml.safe_dump(secret_config, width=1000)
    broken = {
        "syntax": valid.replace(f"{canary}-uri@", f"{canary}-uri: x@"),
        "unterminated quote": valid + f"extra: '{canary}\n",
        "duplicate key": valid + f"targets: {canary}\n",
        "tab": valid + f"\textra: {canary}\n",
        "bad date": valid.replace("name: uri", f"name: 2024-13-45 # {canary}"),
    }
    for what, text in broken.items():
        path = write(tmp_path, text, f"{what.replace(' ', '_')}.yml")
        with pytest.raises(ConfigError) as e:
            load_config(path)
        assert_clean(str(e.value), canary, f"the {what} error")
    latin1 = tmp_path / "latin1.yml"
    latin1.write_bytes(valid.encode() + f"extra: '{canary}\xe9'\n".encode("latin-1"))
    with pytest.raises(ConfigError) as e:
        load_config(latin1)
    assert_clean(str(e.value), canary, "the encoding error")


@pytest.mark.slow
def test_check_config_output_never_shows_a_secret(secret_config, tmp_path, canary):
    path = write(tmp_path, secret_config)
    ok = subprocess.run(
        [sys.executable, "-m", "exporter", "--check-config", f"--config.file={path}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert "configuration is valid" in ok.stdout and "endpoint query" in ok.stdout
    assert "http://127.0.0.1:" in ok.stdout and "/health" in ok.stdout  # the URL, less its query
    assert_clean(ok.stdout + ok.stderr, canary, "--check-config")
    secret_config["targets"][0]["password"] = canary
    bad = write(tmp_path, secret_config, "bad.yml")
    r = subprocess.run(
        [sys.executable, "-m", "exporter", "--check-config", f"--config.file={bad}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "targets[0].password: unknown key" in r.stderr
    assert_clean(r.stdout + r.stderr, canary, "--check-config's error")


@pytest.fixture
def debug_logging() -> Iterator[io.StringIO]:
    """The exporter's own logging set-up at debug (logfmt), its stream read by the test."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logs.setup("debug", "logfmt")
    lines = io.StringIO()
    for handler in root.handlers:
        handler.setStream(lines)
    yield lines
    root.handlers[:], level = saved
    root.setLevel(level)


def test_running_exporter_never_shows_a_secret(
    secret_config, run_exporter, server, debug_logging, capsys, canary
):
    # the endpoints fail in different ways: refused (as configured), a 500, a redirect to
    # another origin that is down, a body that is not JSON where JSON is needed
    server.routes["/500"] = lambda h: send(h, 500, b'{"status": "down"}')
    server.routes["/moved"] = redirect_route(f"http://localhost:{free_port()}/elsewhere?x=1")
    server.routes["/text"] = lambda h: send(h, 200, b"not json", "text/plain")
    eps = secret_config["apps"][0]["endpoints"]
    eps[1]["url"] = server.url("/500") + f"?token={canary}-url500"
    eps[2].update(url=server.url("/moved"), follow_redirects=True)
    eps[3]["assertions"] = [{"path": "status", "equals": "ok"}]
    eps[3]["url"] = server.url("/text") + f"?token={canary}-urltext"
    ex = run_exporter(secret_config)
    names = [e["name"] for e in eps]
    targets = [t["name"] for t in secret_config["targets"]]

    def done(s) -> bool:
        return all(probed(n, 2)(s) for n in names) and all(
            s.value("runbook_target_up", target=t) == 0 for t in targets
        )

    s = ex.wait_for(done, timeout=20, what="every endpoint probed twice, every target down")
    assert s.value("runbook_probe_success", app="web", endpoint="ref") == 0
    bodies = {"/metrics": s.text}
    for path in ("/", "/-/ready", "/-/healthy"):
        bodies[path] = httpx.get(ex.base + path, timeout=5).text
    for path, body in bodies.items():
        assert_clean(body, canary, path)
    # the requests carried the secrets: this is not a test of a config that sent nothing
    with server.lock:
        sent = server.headers["/500"][0]
    assert sent["Authorization"].startswith(canary)
    log = debug_logging.getvalue()
    assert 'msg="probe failed" app=web endpoint=ref' in log
    assert 'msg="cannot connect to target" target=uri' in log
    assert_clean(log, canary, "the log (at debug)")
    out, err = capsys.readouterr()
    assert_clean(out + err, canary, "stdout/stderr")
