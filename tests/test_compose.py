"""deploy/compose.yaml without Docker: every mounted file exists, the ports and addresses of
the services agree, Prometheus' and Alertmanager's files pass promtool and amtool as mounted,
and the PostgreSQL init scripts and the exporter config work against a real PostgreSQL."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from exporter.demo.pgserver import find_bin_dir
from exporter.demo.run import init_sql
from exporter.demo.sampleapp import SampleApp
from exporter.server import DEFAULT_PORT
from tests.helpers import tool

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def service(name: str) -> dict[str, Any]:
    return compose()["services"][name]


def mounts(svc: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of every bind mount (short syntax, relative to deploy/)."""
    out = {}
    for v in svc.get("volumes", []):
        src, dst = v.split(":")[:2]
        assert src.startswith("."), f"{v}: only bind mounts of repository files are expected"
        out[dst] = (DEPLOY / src).resolve()
    return out


def host_path(svc: dict[str, Any], container_path: str) -> Path:
    """Where a path inside the container comes from on the host, through the bind mounts."""
    for dst, src in sorted(mounts(svc).items(), key=lambda m: -len(m[0])):
        if container_path == dst or container_path.startswith(dst.rstrip("/") + "/"):
            return src / os.path.relpath(container_path, dst)
    raise AssertionError(f"{container_path} is not mounted")


def flag(svc: dict[str, Any], name: str) -> str:
    args = [*svc.get("entrypoint", []), *svc.get("command", [])]
    for a in args:
        if a.startswith(f"{name}="):
            return a.split("=", 1)[1]
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
    raise AssertionError(f"{name} not given in {args}")


def container_ports(svc: dict[str, Any]) -> set[int]:
    return {int(str(p).rsplit(":", 1)[1]) for p in svc.get("ports", [])}


def listen_port(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


def exporter_config() -> dict[str, Any]:
    return yaml.safe_load(
        host_path(service("exporter"), "/etc/runbook-exporter/config.yml").read_text()
    )


def test_every_mounted_file_and_the_build_context_exist() -> None:
    doc = compose()
    assert set(doc["services"]) >= {
        "postgres",
        "exporter",
        "sampleapp",
        "prometheus",
        "alertmanager",
        "grafana",
        "webhook",
    }
    count = 0
    for name, svc in doc["services"].items():
        for dst, src in mounts(svc).items():
            assert src.exists(), f"{name}: {src} (mounted at {dst}) does not exist"
            assert src.is_relative_to(ROOT), f"{name}: {src} is outside the repository"
            count += 1
    assert count >= 8
    build = service("exporter")["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert (context / build["dockerfile"]).is_file(), "the exporter image's Dockerfile is missing"
    image = service("exporter")["image"]
    for name in ("sampleapp", "webhook"):  # run the image the exporter service builds
        assert service(name)["image"] == image, name
    for name in ("postgres", "prometheus", "alertmanager", "grafana"):
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", service(name)["image"]), "pin image versions"


def test_exporter_port_and_config_path_agree_with_the_dockerfile() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    exposed = {
        int(p) for line in re.findall(r"^EXPOSE (.+)$", dockerfile, re.M) for p in line.split()
    }
    assert DEFAULT_PORT in exposed
    assert DEFAULT_PORT in container_ports(service("exporter"))
    (cmd,) = re.findall(r"^CMD (\[.*\])$", dockerfile, re.M)
    config_path = next(a for a in yaml.safe_load(cmd) if a.startswith("--config.file="))
    assert config_path.split("=", 1)[1] in mounts(service("exporter"))


def test_prometheus_scrapes_the_exporter_and_sends_to_alertmanager() -> None:
    prom = service("prometheus")
    cfg_path = host_path(prom, flag(prom, "--config.file"))
    cfg = yaml.safe_load(cfg_path.read_text())
    assert listen_port(flag(prom, "--web.listen-address")) in container_ports(prom)
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    exporter_jobs = [j for n, j in jobs.items() if "runbook" in n]  # what the exporter alerts use
    assert len(exporter_jobs) == 1
    (target,) = exporter_jobs[0]["static_configs"][0]["targets"]
    host, port = target.rsplit(":", 1)
    assert host == "exporter" and int(port) in container_ports(service("exporter"))
    (am,) = cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    host, port = am.rsplit(":", 1)
    am_svc = service(host)
    assert int(port) == listen_port(flag(am_svc, "--web.listen-address"))
    # the rules Prometheus loads are the shipped ones
    (pattern,) = cfg["rule_files"]
    rules_dir = host_path(prom, os.path.dirname(pattern))
    loaded = sorted(p.name for p in rules_dir.glob(os.path.basename(pattern)))
    shipped = sorted(p.name for p in (ROOT / "alerts").glob("*.rules.yml"))
    assert loaded == shipped and shipped


def test_prometheus_config_passes_promtool_as_mounted(tmp_path: Path) -> None:
    promtool = tool("promtool")
    prom = service("prometheus")
    cfg = yaml.safe_load(host_path(prom, flag(prom, "--config.file")).read_text())
    cfg["rule_files"] = [str(host_path(prom, p)) for p in cfg["rule_files"]]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(cfg))
    r = subprocess.run(
        [promtool, "check", "config", str(local)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rule files found" in r.stdout + r.stderr or "SUCCESS" in r.stdout + r.stderr


def test_alertmanager_config_and_webhook_sink_agree() -> None:
    amtool = tool("amtool")
    am = service("alertmanager")
    am_cfg_path = host_path(am, flag(am, "--config.file"))
    r = subprocess.run(
        [amtool, "check-config", str(am_cfg_path)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert listen_port(flag(am, "--web.listen-address")) in container_ports(am)
    # the webhook service shares Alertmanager's network and listens where the receivers post
    hook = service("webhook")
    assert hook["network_mode"] == "service:alertmanager"
    listen = flag(hook, "--listen")
    urls = [
        w["url"]
        for rcv in yaml.safe_load(am_cfg_path.read_text())["receivers"]
        for w in rcv.get("webhook_configs", [])
    ]
    assert urls
    for u in urls:
        parts = urlsplit(u)
        assert f"{parts.hostname}:{parts.port}" == listen, u


def test_grafana_provisioning_matches_the_mounts() -> None:
    g = service("grafana")
    m = mounts(g)
    ds = yaml.safe_load(
        host_path(g, "/etc/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    by_type = {d["type"]: d for d in ds["datasources"]}
    for kind, name, flag_name in (
        ("prometheus", "prometheus", "--web.listen-address"),
        ("alertmanager", "alertmanager", "--web.listen-address"),
    ):
        url = urlsplit(by_type[kind]["url"])
        assert url.hostname == name
        assert url.port == listen_port(flag(service(name), flag_name))
    providers = yaml.safe_load(
        host_path(g, "/etc/grafana/provisioning/dashboards/runbook-exporter.yml").read_text()
    )["providers"]
    (provider,) = providers
    dash_dir = provider["options"]["path"]
    assert m[dash_dir] == (ROOT / "grafana" / "dashboards").resolve()
    home = g["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path(g, home).is_file()
    assert container_ports(g) == {3000}


def test_exporter_config_agrees_with_postgres_and_the_sample_app() -> None:
    from exporter.config import parse_config

    cfg = exporter_config()
    parse_config(yaml.safe_dump(cfg), "deploy/exporter/config.yml")  # valid
    pg, exp, app = service("postgres"), service("exporter"), service("sampleapp")
    (target,) = cfg["targets"]
    dsn = conninfo_to_dict(target["dsn"])
    assert dsn["host"] == "postgres" and int(dsn.get("port", 5432)) == 5432
    assert dsn["dbname"] == pg["environment"]["POSTGRES_DB"]
    assert dsn["user"] == "runbook_monitor"  # deploy/sql/monitoring-role.sql
    assert exp["environment"][target["password_env"]] == pg["environment"]["MONITOR_PASSWORD"]
    # the sample app runs in the exporter's network namespace on the port it is given
    assert app["network_mode"] == "service:exporter"
    assert app["entrypoint"][-1] == "exporter.demo.sampleapp"
    port = int(flag(app, "--port"))
    for a in cfg["apps"]:
        for ep in a["endpoints"]:
            u = urlsplit(ep["url"])
            assert (u.hostname, u.port) == ("127.0.0.1", port), ep["url"]
    # every flag compose passes to the sample app exists
    r = subprocess.run(
        [sys.executable, "-m", "exporter.demo.sampleapp", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0 and "--port" in r.stdout, r.stdout + r.stderr
    # queues the exporter counts are granted to the monitoring role by the init script
    init = (DEPLOY / "postgres" / "initdb" / "02-monitoring-role.sh").read_text()
    for q in target["queues"]:
        for table in (q["table"], q.get("dead_letter_table")):
            if table:
                assert table in init, f"{table} is not granted to runbook_monitor"


def test_postgres_init_seeds_the_same_queue_as_the_demo() -> None:
    """One sample queue: the compose stack's init script is rendered from the demo's SQL."""
    script = DEPLOY / "postgres" / "initdb" / "01-queue.sql"
    assert script.read_text() == init_sql(), f"regenerate {script} (see its second line)"


def test_postgres_init_and_exporter_config_work_against_a_real_postgres(
    fresh_db: str,
    run_exporter: Callable[[dict], Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Run the compose stack's PostgreSQL init scripts as the postgres image would (psql with
    POSTGRES_USER / POSTGRES_DB), then the exporter with the stack's config, as runbook_monitor:
    every collector succeeds and the sample app is probed."""
    pg = service("postgres")
    env = pg["environment"]
    params = conninfo_to_dict(fresh_db)
    bin_dir = find_bin_dir()
    run_env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
        "PGHOST": str(params["host"]),
        "PGPORT": str(params["port"]),
        "PGUSER": str(params.get("user", "postgres")),  # docker_process_sql's --username
        "PGDATABASE": str(params["dbname"]),  # and --dbname
        "POSTGRES_USER": str(params.get("user", "postgres")),
        "POSTGRES_DB": str(params["dbname"]),
        "MONITOR_PASSWORD": env["MONITOR_PASSWORD"],
    }
    initdb = host_path(pg, "/docker-entrypoint-initdb.d")
    scripts = sorted(initdb.iterdir())
    assert [s.suffix for s in scripts] == [".sql", ".sh"]
    try:
        for script in scripts:
            if script.suffix == ".sql":
                cmd = ["psql", "-v", "ON_ERROR_STOP=1", "-q", "-f", str(script)]
            else:
                assert os.access(script, os.X_OK), f"{script} must be executable"
                # the script reads the role file where compose mounts it
                text = script.read_text().replace(
                    "/opt/runbook-exporter/monitoring-role.sql",
                    str(host_path(pg, "/opt/runbook-exporter/monitoring-role.sql")),
                )
                cmd = ["sh", "-c", text]
            r = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, f"{script.name}: {r.stdout}{r.stderr}"
        with psycopg.connect(fresh_db, autocommit=True) as c:
            stored = c.execute(
                "SELECT count(*) FROM pg_stat_statements WHERE query ILIKE %s",
                ("%" + env["MONITOR_PASSWORD"] + "%",),
            ).fetchone()
            assert stored == (0,), "the monitoring password reached pg_stat_statements"
        with SampleApp(host="127.0.0.1", port=0) as app:
            cfg = exporter_config()
            (target,) = cfg["targets"]
            target["dsn"] = (
                f"postgresql://runbook_monitor@{params['host']}:{params['port']}/"
                f"{params['dbname']}?sslmode=disable"
            )
            target["collect_interval"] = "1s"
            monkeypatch.setenv(target["password_env"], env["MONITOR_PASSWORD"])
            port = int(flag(service("sampleapp"), "--port"))
            for a in cfg["apps"]:
                a["defaults"]["interval"] = "1s"
                for ep in a["endpoints"]:
                    ep["url"] = ep["url"].replace(f"127.0.0.1:{port}", f"127.0.0.1:{app.port}")
            exp = run_exporter(cfg)
            collectors = ("connections", "database", "queues", "tables", "statements")
            s = exp.wait_for(
                lambda s: (
                    all(
                        s.value("runbook_collector_success", target="app", collector=c) == 1
                        for c in collectors
                    )
                    and s.values("runbook_probe_success") == [1.0, 1.0, 1.0]
                ),
                timeout=30,
                what="every collector and probe of the compose config to succeed",
            )
            pending = s.value(
                "runbook_queue_jobs", target="app", queue="processing_jobs", status="pending"
            )
            assert pending == 20  # seeded by 01-queue.sql
            assert s.value("runbook_queue_dead_letter_jobs", target="app") == 1
    finally:
        with (
            psycopg.connect(fresh_db, autocommit=True) as c,
            suppress(psycopg.errors.UndefinedObject),
        ):
            c.execute("DROP OWNED BY runbook_monitor")
            # the role is cluster-wide: leave the server as it was, unless another database
            # still holds grants to it (then DROP ROLE refuses, and that is fine)
            with suppress(psycopg.errors.DependentObjectsStillExist):
                c.execute("DROP ROLE runbook_monitor")
