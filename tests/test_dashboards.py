"""The Grafana dashboards (exporter/dashboards, on grafana-foundation-sdk): the checked-in
grafana/ is the default render, every render is valid for current Grafana, every query valid
PromQL over declared metrics, every shipped alert linked to its runbook, the CLI writes them
for import or provisioning, and every query is answered by a real Prometheus scraping the real
exporter during a seeded incident."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from exporter import cli
from exporter.dashboards import DashboardsOptionError, Options, render, shipped_rule_files
from exporter.dashboards import promql as status
from exporter.dashboards.links import SCRAPE, expr_metrics, linkable, load_alerts
from exporter.demo.devstack import DevStack, iter_rules
from exporter.metrics import load_all_specs
from exporter.shipped import RUNBOOK_URL_BASE
from tests import incidents
from tests.helpers import server_version, unavailable_series

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "grafana"
RUNBOOK_BASE = RUNBOOK_URL_BASE
PANEL_TYPES = {"row", "timeseries", "stat", "table", "heatmap", "state-timeline", "bargauge"}
BUILTIN_VARS = {"__rate_interval", "__interval", "__range"}
# what Grafana substitutes, for a 1 s scrape interval and "All" selected
SUBSTITUTE = {"__rate_interval": "10s", "__interval": "1s", "__range": "1h"}
VAR_RE = re.compile(r"\$\{?(\w+)\}?")
# dashboards whose data needs a server this incident's PostgreSQL is not: pg_cron runs on
# Debian's PostgreSQL 15 (tests/test_cron.py answers every query of this one there); the
# poolers' needs a real PgBouncer with clients queued (tests/test_pgbouncer.py answers it)
ANSWERED_ELSEWHERE = {"runbook-scheduled.json", "runbook-poolers.json"}
PROMETHEUS_SERIES = {"ALERTS", "up", "scrape_duration_seconds"}
# Supavisor's own metrics, scraped by Prometheus beside the exporter (docs/supabase.md)
SUPAVISOR_SERIES = {"supavisor_pool_checkout_duration_bucket", "supavisor_connections_active"}
OTHER_BASE = "https://wiki.example.internal/runbooks/"


@cache
def rendered(provisioning: bool = False, base: str = RUNBOOK_BASE) -> dict[str, dict[str, Any]]:
    """File name -> dashboard of one render (for import by default)."""
    files = render(Options(runbook_url_base=base, provisioning=provisioning))
    return {n.removeprefix("dashboards/"): json.loads(t) for n, t in files.items() if ".json" in n}


def dashboards() -> dict[str, dict[str, Any]]:
    """The default render's dashboards (their queries are the same in every render)."""
    return rendered()


def panels(d: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in d["panels"]:
        yield p
        yield from p.get("panels", [])  # panels of collapsed rows


def queries(d: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and Prometheus annotation of a dashboard."""
    for p in panels(d):
        for t in p.get("targets", []):
            yield f"{p['title']} [{t['refId']}]", t["expr"]
    for a in d["annotations"]["list"]:
        if "expr" in a:
            yield f"annotation {a['name']}", a["expr"]


def variable_queries(d: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(name, series selector, label) of every label_values() query variable."""
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q)
            assert m, f"variable {v['name']}: unsupported query {q!r}"
            yield v["name"], m.group(1), m.group(2)


def substitute(expr: str) -> str:
    """Grafana's interpolation with every template variable at "All" (regex .*)."""

    def one(m: re.Match[str]) -> str:
        return SUBSTITUTE.get(m.group(1), ".*")

    return VAR_RE.sub(one, expr)


def selectors(expr: str) -> list[tuple[str | None, dict[str, str]]]:
    found: list[tuple[str | None, dict[str, str]]] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append((node.name, {m.name: m.value for m in node.matchers.matchers}))

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def links(ds: dict[str, dict[str, Any]]) -> list[str]:
    return [link["url"] for d in ds.values() for p in panels(d) for link in p.get("links", [])]


# --- static checks --------------------------------------------------------------------------


def test_checked_in_grafana_is_the_default_provisioning_render() -> None:
    """grafana/ is `runbook-exporter dashboards --provisioning --output grafana`, and the CLI
    writes exactly what render() returns."""
    built = render(Options(provisioning=True))
    on_disk = {
        str(p.relative_to(GRAFANA)): p.read_text()
        for p in GRAFANA.rglob("*")
        if p.is_file() and p.suffix in (".json", ".yml")
    }
    fix = "run: runbook-exporter dashboards --provisioning --output grafana"
    assert set(on_disk) == set(built), f"extra or missing files: {fix}"
    stale = sorted(n for n in built if built[n] != on_disk[n])
    assert not stale, f"stale {stale}: {fix}"


@pytest.mark.parametrize("provisioning", [False, True], ids=["import", "provisioning"])
def test_dashboards_are_valid_for_current_grafana(provisioning: bool) -> None:
    ds = rendered(provisioning)
    assert len(ds) == 8
    uids = [d["uid"] for d in ds.values()]
    assert len(set(uids)) == len(uids)
    for name, d in ds.items():
        assert name == f"{d['uid']}.json"
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", d["uid"]), name
        assert d["title"].startswith("runbook-exporter / "), name
        assert d["schemaVersion"] >= 39, name  # the SDK's schema: 42, Grafana 12
        assert "runbook-exporter" in d["tags"]
        assert d.get("id") is None  # Grafana assigns the id
        variables = {v["name"]: v for v in d["templating"]["list"]}
        dsv = variables["datasource"]
        assert (dsv["type"], dsv["query"]) == ("datasource", "prometheus"), name
        ids = [p["id"] for p in panels(d)]
        assert len(ids) == len(set(ids)) and 0 not in ids, f"{name}: panel ids {ids}"
        boxes: list[tuple[int, int, int, int, str]] = []
        for p in panels(d):
            assert p["type"] in PANEL_TYPES, (name, p["type"])
            assert p["title"], name
            g = p["gridPos"]
            assert all(isinstance(g[k], int) and g[k] >= 0 for k in "hwxy"), (name, p["title"])
            assert g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= 24, (name, p["title"])
            for x, y, w, h, other in boxes:
                overlap = (
                    g["x"] < x + w
                    and x < g["x"] + g["w"]
                    and g["y"] < y + h
                    and y < g["y"] + g["h"]
                )
                assert not overlap, f"{name}: {p['title']} overlaps {other}"
            boxes.append((g["x"], g["y"], g["w"], g["h"], p["title"]))
            if p["type"] == "row":
                assert not p["panels"] and not p["collapsed"], (name, p["title"])
                continue
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert p["targets"], f"{name}: {p['title']} has no query"
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs)), (name, p["title"])
            for t in p["targets"]:
                assert t["datasource"]["uid"] == "${datasource}"
                assert t["expr"].strip()
            for link in p.get("links", []):
                assert link["url"].startswith(RUNBOOK_BASE) and link["url"].endswith(".md")
        # links and annotations where Grafana shows them, not in the controls menu
        assert "placement" not in json.dumps([d["links"], d["annotations"]]), name
        # every variable a query uses is defined on the dashboard (or is Grafana's own)
        used = {m for _, q in queries(d) for m in VAR_RE.findall(q) if m not in BUILTIN_VARS}
        used |= {m for _, sel, _ in variable_queries(d) for m in VAR_RE.findall(sel)}
        assert used <= set(variables), f"{name}: undefined variables {used - set(variables)}"


def test_import_asks_for_the_data_source_and_provisioning_needs_none() -> None:
    """For an import (grafana.com style) Grafana asks for DS_PROMETHEUS and writes its uid into
    the datasource variable; a provisioned dashboard has no import step, so it has no input and
    the variable starts empty (Grafana's default Prometheus data source)."""
    for name, d in rendered(provisioning=False).items():
        (only,) = d["__inputs"]
        assert (only["name"], only["type"], only["pluginId"]) == (
            "DS_PROMETHEUS",
            "datasource",
            "prometheus",
        ), name
        dsv = d["templating"]["list"][0]
        assert dsv["current"]["value"] == "${DS_PROMETHEUS}", name
        text = json.dumps(d)
        assert text.count("${DS_PROMETHEUS}") == 2, name  # the variable's value and text only
    for name, d in rendered(provisioning=True).items():
        assert "__inputs" not in d and "DS_PROMETHEUS" not in json.dumps(d), name
        assert not d["templating"]["list"][0].get("current"), name
    # the same panels and queries either way
    for name, d in rendered(provisioning=True).items():
        assert list(queries(d)) == list(queries(rendered()[name])), name


def test_template_variables_cover_every_entity() -> None:
    ds = dashboards()
    names = {v["name"] for d in ds.values() for v in d["templating"]["list"]}
    assert {"datasource", "target", "queue", "app", "endpoint"} <= names
    for d in ds.values():
        for v in d["templating"]["list"]:
            if v["type"] == "query":
                assert v["datasource"]["uid"] == "${datasource}"
                assert v["includeAll"] and v["multi"] and v["allValue"] == ".*"


def test_every_query_is_valid_promql_over_declared_metrics() -> None:
    specs = load_all_specs()
    declared = set()
    for s in specs.values():
        declared.add(s.exposed_name)
        if s.kind == "histogram":
            declared |= {f"{s.name}_bucket", f"{s.name}_sum", f"{s.name}_count"}
    count = 0
    for name, d in dashboards().items():
        exprs = list(queries(d))
        exprs += [(f"variable {v}", sel) for v, sel, _ in variable_queries(d)]
        for where, expr in exprs:
            try:
                sels = selectors(substitute(expr))
            except Exception as e:  # the parser raises its own exception types
                pytest.fail(f"{name}: {where}: invalid PromQL ({e}):\n{expr}")
            for metric, matchers in sels:
                metric = metric or matchers.get("__name__")
                assert metric, f"{name}: {where}: selector without a metric name"
                if metric.startswith("runbook_"):
                    assert metric in declared, f"{name}: {where}: {metric} is not declared"
                else:  # Prometheus' own series (alerts, the scrape) and Supavisor's own
                    allowed = PROMETHEUS_SERIES | SUPAVISOR_SERIES
                    assert metric in allowed, f"{name}: {where}: unexpected {metric}"
            count += 1
    assert count > 60


def test_link_series_names_agree_with_a_promql_parser() -> None:
    """The links read series names with a regex (no compiled dependency at run time): on every
    panel query and every shipped rule it finds what promql-parser finds, among the series the
    links compare (the exporter's, recording rules', the scrape's)."""
    exprs = [e for d in dashboards().values() for _, e in queries(d)]
    for text in shipped_rule_files():
        for g in yaml.safe_load(text)["groups"]:
            exprs += [str(r["expr"]) for r in g["rules"]]
    assert len(exprs) > 150
    for expr in exprs:
        parsed = {m or sel.get("__name__") for m, sel in selectors(substitute(expr))}
        relevant = {
            n for n in parsed if n and (n.startswith("runbook_") or ":" in n or n in SCRAPE)
        }
        assert expr_metrics(expr) == relevant, expr


def test_every_shipped_alert_links_to_its_runbook_from_a_panel() -> None:
    """Every alert on the exporter's series is one click from a panel that shows them (host
    alerts on node_exporter's series are left to a node_exporter dashboard)."""
    every = load_alerts(shipped_rule_files())
    assert {r["alert"] for r in iter_rules()} == set(every)
    alerts = {a for a, metrics in every.items() if linkable(metrics)}
    assert len(alerts) >= 20, "too few alert rules in alerts/*.rules.yml"
    linked = {u.removeprefix(RUNBOOK_BASE).removesuffix(".md") for u in links(dashboards())}
    assert alerts <= linked, f"alerts without a panel link: {sorted(alerts - linked)}"
    assert linked <= alerts, f"links to alerts without a rule: {sorted(linked - alerts)}"
    missing = sorted(a for a in linked if not (ROOT / "docs" / "runbooks" / f"{a}.md").is_file())
    assert not missing, f"panels link to runbooks that do not exist: {missing}"


def test_another_runbook_url_base_moves_every_link() -> None:
    other = rendered(base=OTHER_BASE)
    urls = links(other)
    assert urls and all(u.startswith(OTHER_BASE) and u.endswith(".md") for u in urls)
    assert [u.removeprefix(OTHER_BASE) for u in urls] == [
        u.removeprefix(RUNBOOK_BASE) for u in links(dashboards())
    ]
    text = json.dumps(other)
    assert RUNBOOK_BASE not in text  # the Runbooks link and the alert table's links too
    assert f"{OTHER_BASE}${{__value.raw}}.md" in text


def test_threshold_lines_are_the_threshold_series() -> None:
    """Every dashed threshold line is a query on the exporter's threshold series."""
    seen = 0
    for d in dashboards().values():
        for p in panels(d):
            if p["type"] != "timeseries":
                continue
            for t in p["targets"]:
                if "threshold" in t["legendFormat"]:
                    metrics = {m for m, _ in selectors(substitute(t["expr"])) if m}
                    assert any("threshold" in m or m == "runbook_slo_objective" for m in metrics), (
                        p["title"],
                        t["expr"],
                    )
                    seen += 1
    assert seen >= 20


def test_provisioning_files() -> None:
    files = render(Options(provisioning=True))
    ds = yaml.safe_load(files["provisioning/datasources/prometheus.yml"])
    assert ds["apiVersion"] == 1
    prom = [d for d in ds["datasources"] if d["type"] == "prometheus"]
    assert len(prom) == 1 and prom[0]["url"].startswith("http://")
    dash = yaml.safe_load(files["provisioning/dashboards/runbook-exporter.yml"])
    assert dash["apiVersion"] == 1
    (provider,) = dash["providers"]
    assert provider["type"] == "file" and provider["folder"]
    assert provider["options"]["path"].startswith("/")
    assert not any(n.startswith("provisioning/") for n in render())


def test_cli_writes_the_dashboards(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "grafana"
    argv = ["dashboards", "--output", str(out), "--runbook-url-base", OTHER_BASE]
    assert cli.main([*argv, "--job-selector", 'job="exporter"']) == 0
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert written == {f"dashboards/{n}" for n in dashboards()}
    overview = json.loads((out / "dashboards/runbook-overview.json").read_text())
    assert 'up{job="exporter"}' in [e for _, e in queries(overview)]
    assert overview["__inputs"][0]["name"] == "DS_PROMETHEUS"
    assert all(u.startswith(OTHER_BASE) for u in links({"o": overview}))
    assert cli.main(["dashboards", "--output", str(out), "--job", 'pg "mon"']) == 0
    overview = json.loads((out / "dashboards/runbook-overview.json").read_text())
    assert 'up{job="pg \\"mon\\""}' in [e for _, e in queries(overview)]
    assert cli.main(["dashboards", "--output", str(out), "--provisioning"]) == 0
    assert (out / "provisioning/datasources/prometheus.yml").is_file()
    capsys.readouterr()
    # bad options: exit 2 with the option and value named, nothing written
    bad = tmp_path / "bad"
    assert cli.main(["dashboards", "--output", str(bad), "--runbook-url-base", "wiki/"]) == 2
    assert "--runbook-url-base: 'wiki/' is not a URL" in capsys.readouterr().err
    assert cli.main(["dashboards", "--output", str(bad), "--job-selector", "exporter"]) == 2
    assert "--job-selector: 'exporter'" in capsys.readouterr().err
    assert not bad.exists()
    with pytest.raises(DashboardsOptionError, match="runbook-url-base"):
        render(Options(runbook_url_base=""))


# --- every query answers during a seeded incident ------------------------------------------


def wait_all(pending: dict[str, Callable[[], bool]], timeout: float) -> tuple[list[str], float]:
    """Poll every check until each has held once; the names that never held."""
    started = time.monotonic()
    deadline = started + timeout
    left = dict(pending)
    while left and time.monotonic() < deadline:
        for name, check in list(left.items()):
            try:
                if check():
                    del left[name]
            except Exception:  # a query that errors stays pending and is reported below
                pass
        if left:
            time.sleep(1)
    return sorted(left), time.monotonic() - started


def assert_status_levels(prom: Any, timeout: float = 20) -> None:
    """The overview's red/amber/green tiles say what the seeded incident is."""

    def levels(expr: str, *labels: str) -> dict[tuple[str, ...], float]:
        got = prom.query(substitute(expr))
        return {tuple(r["metric"][k] for k in labels): float(r["value"][1]) for r in got}

    def check() -> None:
        # queue: 60 old pending (warning), stuck, exhausted, dead letters (warning), and 3 of
        # the 15 recently finished jobs failed (20 % > 10 %: critical)
        assert levels(status.QUEUE_STATUS, "target", "queue") == {("shop", "processing_jobs"): 2}
        # database: a query running past long_query_critical (2 s)
        assert levels(status.DB_STATUS, "target") == {("shop",): 2}
        pools = levels(status.POOL_STATUS, "app", "endpoint")
        # monitoring: checked out = size + max overflow; metrics: requests waiting
        assert pools == {("shop-web", "monitoring"): 2, ("shop-web", "metrics"): 1}, pools
        eps = levels(status.ENDPOINT_STATUS, "app", "endpoint")
        assert eps[("shop-web", "missing")] == 2, eps  # 404 for more than 4 s: down
        assert eps[("shop-web", "health")] == 0 and eps[("shop-web", "tls")] == 0, eps

    deadline = time.monotonic() + timeout
    while True:
        try:
            check()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


@pytest.mark.slow
def test_every_panel_query_returns_data_during_a_seeded_incident(
    fresh_db: str, run_exporter: Callable[[dict], Any], tmp_path: Path
) -> None:
    """Backlog, stuck jobs, retries exhausted, dead letters, idle in transaction, a lock wait,
    a long query, bloat, slow statements, rollbacks, the app's pool exhausted, a failing
    endpoint and a TLS endpoint: then every query of every panel, annotation and variable
    must return at least one series from a real Prometheus scraping the exporter."""
    with incidents.seeded_incident(fresh_db, tmp_path, seconds=90) as seeded:
        app, tls = seeded.app, seeded.https
        endpoints = [
            *incidents.sample_app_endpoints(app.url),
            {
                "name": "missing",
                "url": f"{app.url}/api/not-there",
                "thresholds": {"downtime_warning": "2s", "downtime_critical": "4s"},
            },
            {"name": "tls", "url": tls.url, "tls": {"ca_file": str(tls.ca_file)}},
        ]
        target = incidents.target_config(
            fresh_db,
            long_query_warning="1s",
            long_query_critical="2s",
            idle_in_transaction_warning="1s",
            slow_statement_mean="50ms",
            dead_tuple_min_rows=1000,
        )
        # retention, backups and a custom query (the Retention, backups, custom queries board)
        incidents.execute(fresh_db, *incidents.ERROR_LOGS)
        target["retention"] = [
            {"table": "public.error_logs", "column": "timestamp", "period": "1d"}
        ]
        target["queries"] = [incidents.ERROR_LOGS_QUERY]
        dumps = tmp_path / "backups"
        dumps.mkdir()
        old_dump = dumps / "backup-2026-01-01.sql"
        old_dump.write_bytes(b"-- pg_dump\n" * 200)
        os.utime(old_dump, (time.time() - 3 * 86400, time.time() - 3 * 86400))
        config = {
            "targets": [target],
            "apps": [incidents.app_config("shop-web", endpoints)],
            "backups": [
                {
                    "name": "nightly-dump",
                    "interval": "1s",
                    "timeout": "1s",
                    "file": {"directory": str(dumps), "pattern": "backup-*.sql"},
                }
            ],
        }
        exp = run_exporter(config)
        with DevStack(
            [f"127.0.0.1:{exp.server.port}"], interval=1.0, with_alertmanager=False
        ) as stack:
            stack.wait_scraped()
            prom = stack.prom
            checks: dict[str, Callable[[], bool]] = {}
            # a panel on a series this major cannot provide has no data there, by design
            unavailable = unavailable_series(server_version(fresh_db))
            for name, d in dashboards().items():
                if name in ANSWERED_ELSEWHERE:
                    continue
                for where, expr in queries(d):
                    if any(series in expr for series in unavailable):
                        continue
                    q = substitute(expr)
                    checks[f"{name}: {where}: {expr}"] = lambda q=q: bool(prom.query(q))
                for var, sel, label in variable_queries(d):
                    s = substitute(sel)

                    def has_label(s: str = s, label: str = label) -> bool:
                        return any(label in x for x in prom.series(s))

                    checks[f"{name}: variable {var}: {sel}"] = has_label
            empty, took = wait_all(checks, timeout=90)
            print(f"\n{len(checks)} dashboard queries answered within {took:.1f}s")
            assert not empty, (
                "queries without data during the incident:\n"
                + "\n".join(empty)
                + "\n"
                + stack.logs()
            )
            assert_status_levels(prom)
