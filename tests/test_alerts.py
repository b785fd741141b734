"""The shipped alerts (alerts/): promtool and amtool accept them, every alert is complete,
tested and documented, every metric a rule (or an annotation's query) uses is declared by the
exporter and served by a real exporter in the middle of incidents, Alertmanager routes and
inhibits as documented. alerts/ is the default render of exporter/rules/ (tests/test_rules.py).
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
import yaml

from exporter.metrics import load_all_specs
from exporter.shipped import RUNBOOK_URL_BASE
from exporter.sources import collector_names
from tests.helpers import Scrape, server_version, tool, unavailable_series

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "alerts"
UNIT_TESTS = ALERTS / "tests"
AM_CONFIG = ALERTS / "alertmanager.yml"
RUNBOOKS = ROOT / "docs" / "runbooks"
ALERTS_DOC = ROOT / "docs" / "alerts.md"
BASE_URL = RUNBOOK_URL_BASE
SEVERITIES = {"critical", "warning", "info"}
RULE_LABELS = {"severity", "long_window"}  # labels a rule may add; the rest come from series
# labels Prometheus gives every scraped series: the exporter's own alerts select its job by them
TARGET_LABELS = {"job", "instance"}
CAMEL = re.compile(r"^(?:[A-Z][a-z0-9]+)+$")
DOC_SECTIONS = (
    "## What it means",
    "## How bad is it",
    "## First checks",
    "## How to fix it",
    "## When to escalate",
    "## Why this `for:`",
)
# series that come from Prometheus itself or node_exporter, not from runbook-exporter
EXTERNAL = {
    "up",
    "scrape_duration_seconds",
    "scrape_timeout_seconds",
    "node_cpu_seconds_total",
    "node_memory_MemAvailable_bytes",
    "node_memory_MemTotal_bytes",
    "node_filesystem_avail_bytes",
    "node_filesystem_size_bytes",
    "node_filesystem_readonly",
}
# alerts whose value is a constant (0 or 1), so their text carries no $value
VALUELESS = {
    "RunbookExporterDown",  # up == 0, or absent()
    "RunbookTargetDown",  # runbook_target_up == 0
    "RunbookCollectorFailing",  # runbook_collector_success == 0 (the text counts the errors)
    "EndpointHealthComponentDown",  # runbook_health_component_up == 0
    "PostgresStatStatementsUnavailable",  # runbook_pg_stat_statements_available == 0
    "BackupMissing",  # runbook_backup_found == 0
    "BackupSourceFailing",  # runbook_backup_source_up == 0 (the text names the reason)
    "PgBouncerDown",  # runbook_pgbouncer_up == 0 (the text names the reason)
}


# --- reading the rules and their tests -----------------------------------------------------


def rule_files() -> list[Path]:
    files = sorted(ALERTS.glob("*.rules.yml"))
    assert files, f"no rule files in {ALERTS}"
    return files


def unit_test_files() -> list[Path]:
    return sorted(UNIT_TESTS.glob("*.test.yml"))


def rules() -> list[dict[str, Any]]:
    out = []
    for f in rule_files():
        for group in yaml.safe_load(f.read_text())["groups"]:
            for r in group["rules"]:
                out.append({**r, "_file": f.name})
    return out


def alerting_rules() -> list[dict[str, Any]]:
    return [r for r in rules() if "alert" in r]


def alert_names() -> set[str]:
    return {r["alert"] for r in alerting_rules()}


def unit_tests() -> list[dict[str, Any]]:
    """Every alert_rule_test of every test file, flattened."""
    out = []
    for f in unit_test_files():
        doc = yaml.safe_load(f.read_text())
        for case in doc["tests"]:
            for t in case.get("alert_rule_test") or []:
                out.append({**t, "_file": f.name, "_case": case.get("name", "")})
    return out


def run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


# --- promtool ------------------------------------------------------------------------------


def test_promtool_check_rules_accepts_every_file() -> None:
    r = run([tool("promtool"), "check", "rules", *map(str, rule_files())])
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("SUCCESS") == len(rule_files())


def test_promtool_unit_tests_pass() -> None:
    files = unit_test_files()
    assert files
    r = run([tool("promtool"), "test", "rules", *map(str, files)], timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("SUCCESS") == len(files), r.stdout


def test_every_rule_file_has_its_unit_tests() -> None:
    tested = set()
    for f in unit_test_files():
        for rf in yaml.safe_load(f.read_text())["rule_files"]:
            tested.add((UNIT_TESTS / rf).resolve())
    assert {f.resolve() for f in rule_files()} <= tested


# --- completeness of every alert -----------------------------------------------------------


def test_every_alert_has_name_severity_annotations_runbook_url_and_for() -> None:
    problems = []
    for r in alerting_rules():
        name, labels, ann = r["alert"], r.get("labels") or {}, r.get("annotations") or {}
        where = f"{r['_file']}: {name}"
        if not CAMEL.match(name):
            problems.append(f"{where}: not CamelCase")
        if labels.get("severity") not in SEVERITIES:
            problems.append(f"{where}: severity {labels.get('severity')!r}")
        if set(labels) - RULE_LABELS:
            problems.append(f"{where}: unexpected rule labels {set(labels) - RULE_LABELS}")
        if set(ann) != {"summary", "description", "runbook_url"}:
            problems.append(f"{where}: annotations {sorted(ann)}")
        if ann.get("runbook_url") != f"{BASE_URL}{name}.md":
            problems.append(f"{where}: runbook_url {ann.get('runbook_url')!r}")
        # the for: is a deliberate choice for every alert, 0m included (docs/alerts.md)
        if not re.fullmatch(r"\d+[smhd]", str(r.get("for", ""))):
            problems.append(f"{where}: explicit for: missing")
        text = ann.get("summary", "") + ann.get("description", "")
        if "$labels" not in text and "absent(" not in r["expr"]:
            problems.append(f"{where}: annotations do not name the labels")
        if name not in VALUELESS and "$value" not in text:
            problems.append(f"{where}: annotations do not show the value")
        if re.search(r"\{\{\s*\$value\s*\}\}", text):
            problems.append(f"{where}: a raw $value: use humanize, humanizeDuration, ...")
    assert not problems, "\n".join(problems)


def test_every_alert_fires_and_stays_quiet_in_unit_tests_with_exact_annotations() -> None:
    fired: set[tuple[str, str]] = set()
    quiet: set[str] = set()
    problems = []
    names = alert_names()
    for t in unit_tests():
        name = t["alertname"]
        if name not in names:
            problems.append(f"{t['_file']}: test of unknown alert {name}")
        if not t["exp_alerts"]:
            quiet.add(name)
        for exp in t["exp_alerts"]:
            fired.add((name, exp["exp_labels"].get("severity", "")))
            ann = exp.get("exp_annotations") or {}
            if set(ann) != {"summary", "description", "runbook_url"}:
                problems.append(f"{t['_file']} {t['_case']!r}: {name} without exact annotations")
    wanted = {(r["alert"], r["labels"]["severity"]) for r in alerting_rules()}
    for name, sev in sorted(wanted - fired):
        problems.append(f"{name} ({sev}) never fires in alerts/tests/")
    for name in sorted(names - quiet):
        problems.append(f"{name} has no test where it stays quiet")
    assert not problems, "\n".join(problems)


def test_every_alert_has_a_runbook_doc_and_every_doc_an_alert() -> None:
    docs = {p.stem for p in RUNBOOKS.glob("*.md")}
    names = alert_names()
    assert names - docs == set(), f"alerts without docs/runbooks/<name>.md: {names - docs}"
    assert docs - names == set(), f"docs/runbooks without an alert: {docs - names}"
    for name in sorted(names):
        text = (RUNBOOKS / f"{name}.md").read_text()
        assert text.startswith(f"# {name}\n"), name
        missing = [s for s in DOC_SECTIONS if s not in text]
        assert not missing, f"docs/runbooks/{name}.md lacks {missing}"
        for r in alerting_rules():
            if r["alert"] == name:  # the doc states each rule's severity and for:
                assert f"`for: {r['for']}`" in text, f"{name}.md: for: {r['for']} not explained"
                assert r["labels"]["severity"] in text, f"{name}.md: severity not stated"


def test_alerts_table_lists_every_alert() -> None:
    text = ALERTS_DOC.read_text()
    rows = set(re.findall(r"^\| \[(\w+)\]\(runbooks/\1\.md\) \|", text, re.MULTILINE))
    assert rows == alert_names(), rows ^ alert_names()


# --- every metric is the exporter's: parsed with a PromQL parser ---------------------------


@dataclass(frozen=True)
class Selector:
    name: str
    matchers: tuple[tuple[str, str, str], ...]  # (label, op, value)
    where: str


def selectors(expr: str, where: str) -> list[Selector]:
    out: list[Selector] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            ms = tuple(
                (m.name, str(m.op).rsplit(".", 1)[-1], m.value) for m in node.matchers.matchers
            )
            name = node.name or next((v for k, _, v in ms if k == "__name__"), "")
            out.append(Selector(name, ms, where))

    promql_parser.walk(promql_parser.parse(expr), visit)
    return out


def annotation_queries(text: str) -> list[str]:
    """The PromQL of `printf \\`...\\` ... | query` in a template, %q filled with a value."""
    return [q.replace("%q", '"x"') for q in re.findall(r"printf `([^`]*)`", text)]


def all_selectors() -> list[Selector]:
    out = []
    for r in rules():
        name = r.get("alert") or r.get("record")
        out += selectors(r["expr"], f"{r['_file']}: {name}")
        for key, text in (r.get("annotations") or {}).items():
            for q in annotation_queries(text):
                out += selectors(q, f"{r['_file']}: {name} annotation {key}")
    return out


def declared() -> dict[str, tuple[str, ...]]:
    """Exposed sample name -> its labels, histogram series included."""
    out: dict[str, tuple[str, ...]] = {}
    for s in load_all_specs().values():
        out[s.exposed_name] = s.labels
        if s.kind == "histogram":
            out[f"{s.name}_bucket"] = (*s.labels, "le")
            out[f"{s.name}_sum"] = s.labels
            out[f"{s.name}_count"] = s.labels
    return out


def test_expressions_parse_and_use_only_declared_metrics_and_labels() -> None:
    decl = declared()
    recorded = {r["record"] for r in rules() if "record" in r}
    problems = []
    used = all_selectors()
    assert len(used) > 100  # the walk found the selectors, annotations included
    for s in used:
        if s.name.startswith("runbook_"):
            if s.name not in decl:
                problems.append(f"{s.where}: {s.name} is not declared by the exporter")
                continue
            for label, _, _ in s.matchers:
                if label not in {"__name__", *TARGET_LABELS, *decl[s.name]}:
                    problems.append(f"{s.where}: {s.name} has no label {label}")
        elif ":" in s.name:
            if s.name not in recorded:
                problems.append(f"{s.where}: {s.name} is recorded by no rule")
        elif s.name not in EXTERNAL:
            problems.append(f"{s.where}: {s.name} is neither the exporter's nor a known series")
    assert not problems, "\n".join(problems)


# --- ... and really served: a real exporter during incidents ---------------------------------


@pytest.fixture
def incident_scrape(fresh_db: str, run_exporter: Any, tmp_path: Path) -> Iterator[Scrape]:
    """A scrape of the real exporter with a queue in trouble, unhealthy sessions, bloat, slow
    statements, rollbacks, the sample app with an exhausted pool and an HTTPS endpoint."""
    from tests import incidents

    with incidents.seeded_incident(fresh_db, tmp_path, seconds=60) as seeded:
        https = seeded.https
        endpoints = [
            *incidents.sample_app_endpoints(seeded.app.url),
            {"name": "tls", "url": https.url, "tls": {"ca_file": str(https.ca_file)}},
        ]
        ex = run_exporter(
            {
                "targets": [incidents.target_config(fresh_db)],
                "apps": [incidents.app_config("shop-web", endpoints)],
            }
        )

        def complete(s: Scrape) -> bool:
            # every collector succeeded, every endpoint was probed, the sessions are seen
            runs = s.labelsets("runbook_collector_success")
            return (
                {ls["collector"] for ls in runs} >= set(collector_names())
                and all(s.value("runbook_collector_success", **ls) == 1 for ls in runs)
                and len(s.values("runbook_probe_requests_total")) == len(endpoints)
                and s.values("runbook_probe_tls_cert_expiry_timestamp_seconds")
                and (s.value("runbook_pg_lock_waiting_sessions", target="shop") or 0) >= 1
            )

        yield ex.wait_for(complete, timeout=60, what="a complete scrape during incidents")


# rule files on the series of an extension the incident server lacks (the embedded
# PostgreSQL has no pg_cron): their test file checks the same on a server that has it
SERVED_ELSEWHERE = (
    "cron.rules.yml",  # tests/test_cron.py
    "backups.rules.yml",  # tests/test_backups.py (backups are configured there)
    "retention.rules.yml",  # tests/test_retention.py (the incident has no retention table)
    "pgbouncer.rules.yml",  # tests/test_pgbouncer.py (a real PgBouncer with clients waiting)
)


@pytest.mark.slow
def test_every_series_a_rule_uses_is_served_during_incidents(
    incident_scrape: Scrape, pg_server: str
) -> None:
    s = incident_scrape
    problems = []
    checked = set()
    # a rule on a series this major cannot provide stays quiet there: the series is absent
    unavailable = unavailable_series(server_version(pg_server))
    for name in unavailable:
        assert not s.values(name), f"{name} served by a server that cannot provide it"
    for sel in all_selectors():
        if not sel.name.startswith("runbook_") or sel.where.startswith(SERVED_ELSEWHERE):
            continue
        if sel.name in unavailable:
            continue
        # selectors in annotations are templates (%q filled with "x"): their name must be served
        exact = [(k, v) for k, op, v in sel.matchers if op == "Equal" and k != "__name__"]
        if "annotation" in sel.where:
            exact = [(k, v) for k, v in exact if v != "x"]
        key = (sel.name, tuple(exact))
        if key in checked:
            continue
        checked.add(key)
        if not any(
            smp.name == sel.name and all(smp.labels.get(k) == v for k, v in exact)
            for smp in s.samples
        ):
            problems.append(f"{sel.where}: no {sel.name}{dict(exact)} in a real scrape")
    assert not problems, "\n".join(problems)
    # the incidents are visible where the rules look (the check above is not about zeros)
    assert s.value("runbook_queue_stuck_jobs", target="shop", queue="processing_jobs") == 3
    assert s.value("runbook_app_pool_waiting", app="shop-web", endpoint="metrics") == 7
    assert (
        s.value(
            "runbook_health_component_up",
            app="shop-web",
            endpoint="monitoring",
            component="database",
        )
        == 1
    )


# --- Alertmanager ----------------------------------------------------------------------------


def test_amtool_check_config_passes() -> None:
    r = run([tool("amtool"), "check-config", str(AM_CONFIG)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout and "4 inhibit rules" in r.stdout, r.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        ("alertname=QueueBacklogHigh severity=critical target=app queue=pdf", "pager"),
        ("alertname=QueueBacklogHigh severity=warning target=app queue=pdf", "chat"),
        ("alertname=EndpointErrorBudgetBurn severity=critical long_window=1h app=a", "pager"),
        ("alertname=EndpointErrorBudgetBurn severity=warning long_window=3d app=a", "chat"),
        ("alertname=PostgresUnusedIndexes severity=info target=app", "null"),
        ("alertname=SomethingElse", "chat"),  # no severity: the default route
    ],
)
def test_amtool_routes(labels: str, receiver: str) -> None:
    r = run(
        [
            tool("amtool"),
            "config",
            "routes",
            "test",
            f"--config.file={AM_CONFIG}",
            f"--verify.receivers={receiver}",
            *labels.split(),
        ]
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == receiver


@pytest.mark.slow
def test_alertmanager_delivers_by_severity_and_inhibits(tmp_path: Path) -> None:
    """A real Alertmanager with the shipped config (receivers pointed at a local sink, timers
    shortened): which alerts are delivered where, and which are inhibited."""
    from exporter.demo import devstack

    with devstack.WebhookSink() as sink:
        doc = devstack.rewrite_alertmanager_config(
            yaml.safe_load(AM_CONFIG.read_text()), sink.url, devstack.AlertmanagerTimers()
        )
        config = tmp_path / "alertmanager.yml"
        config.write_text(yaml.safe_dump(doc))
        am = devstack.Alertmanager(config, tmp_path)
        am.start()
        try:
            now = datetime.now(UTC)
            sent = {
                # the same alert at both severities: the warning is inhibited
                "backlog-pdf-crit": (
                    "QueueBacklogHigh",
                    "critical",
                    {"target": "app", "queue": "pdf"},
                ),
                "backlog-pdf-warn": (
                    "QueueBacklogHigh",
                    "warning",
                    {"target": "app", "queue": "pdf"},
                ),
                "backlog-ocr-warn": (
                    "QueueBacklogHigh",
                    "warning",
                    {"target": "app", "queue": "ocr"},
                ),
                # a database that is down mutes every other alert of that target
                "db2-down": ("RunbookTargetDown", "critical", {"target": "db2"}),
                "db2-conns": ("PostgresConnectionsNearLimit", "critical", {"target": "db2"}),
                "db2-stuck": ("QueueJobsStuck", "warning", {"target": "db2", "queue": "pdf"}),
                # a down endpoint mutes its symptom warnings, not another alert's page
                "shop-down": ("EndpointDown", "warning", {"app": "shop", "endpoint": "health"}),
                "shop-slow-warn": (
                    "EndpointLatencyHigh",
                    "warning",
                    {"app": "shop", "endpoint": "health"},
                ),
                "shop-slow-crit": (
                    "EndpointLatencyHigh",
                    "critical",
                    {"app": "shop", "endpoint": "health"},
                ),
                # a sharded replica that is down: its job's missing shard is the same problem
                "shard1-down": (
                    "RunbookExporterDown",
                    "critical",
                    {"job": "runbook-exporter", "instance": "runbook-exporter-1:9883"},
                ),
                "shard-missing": (
                    "RunbookExporterShardMissing",
                    "warning",
                    {"job": "runbook-exporter"},
                ),
                # info goes nowhere
                "unused": ("PostgresUnusedIndexes", "info", {"target": "app"}),
            }
            payload = [
                {
                    "labels": {"alertname": name, "severity": sev, "case": case, **labels},
                    "annotations": {"summary": case},
                    "startsAt": now.isoformat(),
                    "endsAt": (now + timedelta(hours=1)).isoformat(),
                }
                for case, (name, sev, labels) in sent.items()
            ]
            r = httpx.post(f"{am.url}/api/v2/alerts", json=payload, timeout=10)
            assert r.status_code == 200, r.text
            delivered = {
                "backlog-pdf-crit": "pager",
                "backlog-ocr-warn": "chat",
                "db2-down": "pager",
                "shop-down": "chat",
                "shop-slow-crit": "pager",
                "shard1-down": "pager",
            }
            start = time.monotonic()
            for case, receiver in delivered.items():
                sink.wait_for_alert(
                    lambda a, c=case, rc=receiver: a.labels.get("case") == c and a.receiver == rc,
                    timeout=30,
                    what=f"{case} at {receiver}",
                )
            time.sleep(3)  # group_wait and group_interval are 1 s: anything else would be here
            got = {(a.labels["case"], a.receiver) for a in sink.alerts(since=start - 60)}
            assert got == set(delivered.items()), got
            status = {a["labels"]["case"]: a["status"] for a in am.alerts()}
            inhibited = {c for c, st in status.items() if st["inhibitedBy"]}
            assert inhibited == {
                "backlog-pdf-warn",
                "db2-conns",
                "db2-stuck",
                "shop-slow-warn",
                "shard-missing",
            }
            assert all(status[c]["state"] == "suppressed" for c in inhibited)
            assert status["unused"]["state"] == "active"  # routed to "null", not suppressed
        finally:
            am.stop()
