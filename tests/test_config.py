"""Configuration: defaults from the runbooks, strict validation, errors with file/path/value."""

from __future__ import annotations

import pytest

from exporter.config import ConfigError, load_config, parse_config
from exporter.configtypes import parse_duration
from exporter.secrets import redact
from tests.helpers import encrypted_key_pem

BASE = "targets:\n  - name: app\n    dsn: postgresql://monitor@localhost/app\n"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30),
        ("5m", 300),
        ("1h30m", 5400),
        ("2d", 172800),
        ("1w", 604800),  # Prometheus units too: devstack reads rule files with it
        ("1y", 31536000),
        (45, 45),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5", "5 minutes", "m5", "-1s", "1h 30m", True])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_runbook_defaults():
    cfg = parse_config(BASE + "    queues:\n      - table: processing_jobs\n")
    q = cfg.targets[0].queues[0]
    assert q.table == "public.processing_jobs" and q.label == "processing_jobs"
    assert (q.thresholds.depth_warning, q.thresholds.depth_critical) == (50, 200)
    assert q.stuck_after == 1800 and q.max_retries == 3
    th = cfg.targets[0].thresholds
    assert (th.long_query_warning, th.long_query_critical) == (300, 600)
    assert (th.connections_warning_ratio, th.connections_critical_ratio) == (0.8, 0.9)
    assert th.slow_statement_mean == 1.0


def errors_of(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config(text, "conf.yml")
    return str(e.value)


def test_unknown_key_names_file_line_and_path_but_not_its_value():
    msg = errors_of(BASE + "    queues:\n      - table: jobs\n        stuck_afterr: 10m\n")
    # an unknown key's value is never echoed: it may be a misspelt password
    assert msg == "conf.yml:6: targets[0].queues[0].stuck_afterr: unknown key"


def test_bad_duration_names_path_and_value():
    msg = errors_of(BASE + "    queues:\n      - table: jobs\n        stuck_after: soon\n")
    assert "targets[0].queues[0].stuck_after" in msg and "'soon'" in msg


def test_warning_above_critical_is_rejected():
    msg = errors_of(
        BASE + "    queues:\n      - table: jobs\n        thresholds: {depth_warning: 300}\n"
    )
    assert "depth_warning (300) must not be above depth_critical (200)" in msg


@pytest.mark.parametrize(
    ("snippet", "expect"),
    [
        ("    queues:\n      - table: a.b.c\n", "invalid table name 'a.b.c'"),
        ("    queues:\n      - table: j\n      - table: j\n", "queue names must be unique"),
        (
            "    queues:\n      - table: j\n        statuses: {pending: x, failed: x}\n",
            "status value 'x' is given both for pending and failed",
        ),
    ],
)
def test_queue_errors(snippet, expect):
    assert expect in errors_of(BASE + snippet)


def test_structural_errors():
    assert "the file is empty" in errors_of("")
    assert "invalid YAML" in errors_of("targets: [\n")
    assert "nothing to do" in errors_of("targets: []\n")
    assert "give exactly one of dsn or dsn_env" in errors_of("targets:\n  - name: a\n")
    assert "target names must be unique" in errors_of(
        "targets:\n  - {name: a, dsn: 'host=x'}\n  - {name: a, dsn: 'host=y'}\n"
    )
    assert "targets[0].name" in errors_of("targets:\n  - {name: 'bad name', dsn: 'host=x'}\n")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yml")


def test_password_from_env_and_file_never_shown(tmp_path, monkeypatch):
    monkeypatch.setenv("APP_DB_PASSWORD", "env-s3cret")
    cfg = parse_config(BASE + "    password_env: APP_DB_PASSWORD\n")
    t = cfg.targets[0]
    assert "password=env-s3cret" in t.conninfo()
    assert "env-s3cret" not in t.safe_dsn()
    assert redact("auth failed for env-s3cret") == "auth failed for <redacted>"

    secret = tmp_path / "pw"
    secret.write_text("file-s3cret\n")
    t = parse_config(BASE + f"    password_file: {secret}\n").targets[0]
    assert "password=file-s3cret" in t.conninfo()
    inline = parse_config(
        "targets:\n  - name: a\n    dsn: postgresql://u:inline-s3cret@h/db\n"
    ).targets[0]
    assert "inline-s3cret" not in inline.safe_dsn()


def test_unset_password_env_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("NOPE_PW", raising=False)
    t = parse_config(BASE + "    password_env: NOPE_PW\n").targets[0]
    with pytest.raises(ConfigError, match="environment variable NOPE_PW is not set"):
        t.conninfo()


def test_dsn_env(monkeypatch):
    monkeypatch.setenv("APP_DSN", "postgresql://u:dsn-s3cret@db/app")
    t = parse_config("targets:\n  - name: a\n    dsn_env: APP_DSN\n").targets[0]
    assert "dsn-s3cret" in t.conninfo()
    assert t.safe_dsn() == "$APP_DSN"


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), "1e400s", 10**20, "99999999999d"])
def test_durations_are_finite_and_bounded(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def target_of(extra: str):
    return parse_config(BASE + extra).targets[0]


def test_unset_timeouts_follow_a_short_interval_down():
    t = target_of("    collect_interval: 1s\n")
    assert (t.collect_timeout, t.statement_timeout, t.lock_timeout, t.connect_timeout) == (
        1,
        1,
        1,
        1,
    )
    # tables and statements keep their 60 s interval; their timeout is the target's
    assert {n: t.timeout_of(s) for n, s in t.enabled_collectors()}["tables"] == 1
    t = target_of("    collect_interval: 30s\n    collect_timeout: 3s\n")
    assert (t.collect_timeout, t.statement_timeout, t.lock_timeout, t.connect_timeout) == (
        3,
        3,
        1,
        3,
    )
    t = target_of("")  # the documented defaults
    assert (t.collect_timeout, t.statement_timeout, t.lock_timeout, t.connect_timeout) == (
        10,
        5,
        1,
        5,
    )
    t = target_of("    collectors: {queues: {interval: 2s}}\n")
    assert {n: t.timeout_of(s) for n, s in t.enabled_collectors()}["queues"] == 2
    assert t.statement_timeout == 2  # within the shortest collector timeout


def test_disabled_collectors_are_not_checked():
    t = target_of("    collectors: {database: {enabled: false, interval: 0}}\n")
    assert "database" not in dict(t.enabled_collectors())


def with_dsn(dsn: str) -> str:
    return BASE.replace("postgresql://monitor@localhost/app", f"'{dsn}'")


@pytest.mark.parametrize(
    "dsn", ["host=a,b port=5432,5433", "postgresql://u@h:6543/db", "host=h port=", "dbname=x"]
)
def test_valid_dsns(dsn):
    assert parse_config(with_dsn(dsn)).targets[0].dsn == dsn


@pytest.mark.parametrize("dsn", ["x", "port=0", "port=65536", "host=a,b port=1,-2", "port=5432x"])
def test_invalid_dsns(dsn):
    msg = errors_of(with_dsn(dsn))
    assert msg.startswith("conf.yml:3: targets[0].dsn: the DSN")
    assert f"'{dsn}'" not in msg  # never echoed: a DSN may hold a password


def test_yaml_features_still_work():
    """Merge keys may override what they merge (not a duplicate); a UTF-8 BOM is fine."""
    cfg = parse_config(
        "\ufefftargets:\n"
        "  - &a {name: a, dsn: 'host=db', collect_interval: 30s}\n"
        "  - <<: *a\n"
        "    name: b\n"
        "    collect_interval: 20s\n"
    )
    assert [(t.name, t.collect_interval) for t in cfg.targets] == [("a", 30), ("b", 20)]


def test_environment_modes(tmp_path, monkeypatch):
    monkeypatch.delenv("NOPE_PW", raising=False)
    path = tmp_path / "c.yml"
    path.write_text(BASE + "    password_env: NOPE_PW\n")
    assert load_config(path, environment="skip").warnings == []
    warned = load_config(path, environment="warn").warnings
    assert warned == [f"{path}:4: targets[0].password_env: environment variable NOPE_PW is not set"]
    with pytest.raises(ConfigError, match="NOPE_PW is not set"):
        load_config(path)  # starting requires it
    monkeypatch.setenv("NOPE_PW", "")
    with pytest.raises(ConfigError, match="NOPE_PW is empty"):
        load_config(path)
    monkeypatch.setenv("NOPE_PW", "x")
    assert load_config(path).targets[0].password_env == "NOPE_PW"


def test_tls_files_are_loaded_as_the_prober_loads_them(tmp_path):
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "c.pem", tmp_path / "k.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    app = (
        "apps:\n  - name: web\n    endpoints:\n      - name: h\n"
        "        url: https://127.0.0.1:1/\n"
        "        tls: {{ca_file: {}, cert_file: {}, key_file: {}}}\n"
    )
    path = tmp_path / "apps.yml"
    path.write_text(app.format(ca_file, cert_file, key_file))
    assert load_config(path).apps[0].endpoints[0].tls.ca_file == ca_file
    key_file.write_bytes(encrypted_key_pem(cert.private_key_pem.bytes()))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert f"{path}:6: apps[0].endpoints[0].tls.key_file: " in str(e.value)
    assert "the key is encrypted" in str(e.value)
    # a missing CA file is an error even in --check-config (it is no secret: it ships with
    # the config)
    path.write_text(app.format(tmp_path / "nope.pem", cert_file, key_file))
    with pytest.raises(ConfigError, match=r"tls\.ca_file: .*nope\.pem: no such file"):
        load_config(path, environment="warn")


def test_errors_never_echo_values_under_secret_looking_keys():
    from exporter.config import _shown

    assert _shown(("targets", 0, "collect_interval"), "often", "value_error") == " (got 'often')"
    for loc in [
        ("targets", 0, "dsn"),
        ("targets", 0, "password_file"),
        ("apps", 0, "endpoints", 0, "headers", "X-Team", "str"),
        ("apps", 0, "endpoints", 0, "basic_auth", "username"),
        ("x", "api_token"),
        ("x", "Cookie"),
        ("x", "pwd"),
    ]:
        assert _shown(loc, "s3cret", "string_type") == "", loc
    assert _shown(("targets", 0, "anything"), "s3cret", "extra_forbidden") == ""
    assert len(_shown(("a",), "x" * 500, "value_error")) < 100


@pytest.mark.slow
def test_size_bounds(tmp_path):
    big = tmp_path / "big.yml"
    big.write_text(BASE + "    junk: [" + ",".join(["1"] * 100_001) + "]\n")
    with pytest.raises(ConfigError, match=r"big\.yml:4: the document holds more than 100000"):
        load_config(big)
    huge = tmp_path / "huge.yml"
    huge.write_text(BASE + "# " + "x" * 1024 * 1024 + "\n")
    with pytest.raises(ConfigError, match=r"huge\.yml: larger than 1 MiB"):
        load_config(huge)
