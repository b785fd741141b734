"""Generate the Grafana dashboards of runbook-exporter from Python code.

    python grafana/generate.py           # write grafana/dashboards/*.json
    python grafana/generate.py --check   # exit 1 when a checked-in file is not what this writes

Plain dicts in the JSON model of current Grafana (schemaVersion 39, Grafana 10.4 / 11): no
library to install, and a panel is a few lines here. Every query filters by the dashboard's
template variables ($target, $queue, $app, $endpoint) and reads the data source from
$datasource. Threshold lines are the exporter's threshold series (`runbook_*_threshold*`), the
same series the shipped alert rules compare with, so a per-queue override moves the line and
the alert together. Each panel links to the runbook of every shipped alert whose expression
uses the panel's metrics (read from alerts/*.rules.yml): regenerate after changing the rules.
tests/test_dashboards.py fails when the checked-in files are stale.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "dashboards"
ALERTS = REPO / "alerts"
RUNBOOK_BASE = "https://github.com/runbook-exporter/runbook-exporter/blob/main/docs/runbooks/"
SCHEMA_VERSION = 39
TAG = "runbook-exporter"
DS = {"type": "prometheus", "uid": "${datasource}"}
VAR_RE = re.compile(r"\$\{?(\w+)\}?")
# the exporter's own scrape, as the shipped exporter alerts select it
JOB = 'job=~".*runbook.*"'

# label filters, one per kind of entity
T = 'target=~"$target"'
TQ = 'target=~"$target", queue=~"$queue"'
AE = 'app=~"$app", endpoint=~"$endpoint"'

# severity levels shown red / amber / green
LEVEL_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "0": {"text": "OK", "color": "green", "index": 0},
            "1": {"text": "WARNING", "color": "orange", "index": 1},
            "2": {"text": "CRITICAL", "color": "red", "index": 2},
        },
    }
]
LEVEL_STEPS = [
    {"color": "green", "value": None},
    {"color": "orange", "value": 1},
    {"color": "red", "value": 2},
]


# --- alert rules: which runbooks a panel links to ------------------------------------------


def expr_metrics(expr: str) -> set[str]:
    """Names of the series a PromQL expression selects (template variables allowed)."""
    import promql_parser  # the test extra; only the generator and the tests need it

    text = VAR_RE.sub(lambda m: "1m" if m.group(1).startswith("__") else ".*", expr)
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            by_matcher = [m.value for m in node.matchers.matchers if m.name == "__name__"]
            names.update([node.name] if node.name else by_matcher)

    promql_parser.walk(promql_parser.parse(text), visit)
    return names


def load_alerts(rules_dir: Path = ALERTS) -> dict[str, set[str]]:
    """Alert name -> the series its expressions use (all its rules together), with recording
    rules replaced by the series they are computed from."""
    records: dict[str, set[str]] = {}
    alerts: dict[str, set[str]] = {}
    for path in sorted(rules_dir.glob("*.rules.yml")):
        doc = yaml.safe_load(path.read_text()) or {}
        for group in doc.get("groups") or []:
            for rule in group.get("rules") or []:
                metrics = expr_metrics(str(rule.get("expr", "")))
                if "record" in rule:
                    records.setdefault(rule["record"], set()).update(metrics)
                elif "alert" in rule:
                    alerts.setdefault(rule["alert"], set()).update(metrics)

    def expand(names: set[str], depth: int = 0) -> set[str]:
        if depth > 10:  # recording rules on recording rules, bounded
            return names
        out: set[str] = set()
        for n in names:
            out |= expand(records[n], depth + 1) if n in records else {n}
        return out

    return {a: expand(ms) for a, ms in alerts.items()}


def linkable(metrics: set[str]) -> bool:
    """Alerts on the exporter's series (or its scrape) have a panel; host alerts on
    node_exporter's series do not (use a node_exporter dashboard for those)."""
    return any(m.startswith("runbook_") or m in ("up", "scrape_duration_seconds") for m in metrics)


def is_threshold(metric: str) -> bool:
    return "threshold" in metric or metric == "runbook_slo_objective"


def runbook_url(alert: str) -> str:
    return f"{RUNBOOK_BASE}{alert}.md"


# --- PromQL helpers -------------------------------------------------------------------------


def check(name: str, expr: str) -> str:
    return f'label_replace({expr}, "check", "{name}", "", "")'


def worst(by: str, checks: list[str]) -> str:
    """The worst level over several checks of the same entity."""
    joined = "\n  or ".join(checks)
    return f"max by ({by}) (\n  {joined}\n)"


def levels(value: str, threshold: str, on: str, op: str = ">") -> str:
    """0/1/2 against a warning and a critical threshold of the same series."""
    w = f'({value} {op} bool on({on}) {threshold}{{severity="warning"}})'
    c = f'({value} {op} bool on({on}) {threshold}{{severity="critical"}})'
    return f"clamp_max({w} + 2 * {c}, 2)"


def warn_level(value: str, threshold: str, on: str) -> str:
    return f'({value} > bool on({on}) {threshold}{{severity="warning"}})'


# --- panels ---------------------------------------------------------------------------------


@dataclass
class Target:
    expr: str
    legend: str = ""
    instant: bool = False
    fmt: str = "time_series"
    threshold: bool = False  # drawn as a dashed threshold line


@dataclass
class Panel:
    title: str
    kind: str  # timeseries, stat, table, heatmap, state-timeline, bargauge
    targets: list[Target]
    description: str = ""
    unit: str = "short"
    w: int = 12
    h: int = 8
    stack: bool = False
    levels: bool = False  # a 0/1/2 severity level shown green / amber / red
    mappings: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # merged into the panel JSON
    max: float | None = None
    about: set[str] = field(default_factory=set)  # more series the panel is about (links)

    def add_threshold(self, expr: str, legend: str) -> Panel:
        self.targets.append(Target(expr, legend, threshold=True))
        return self

    def add_levels(self, threshold: str, selector: str, legend: str) -> Panel:
        """The warning and critical lines of one threshold series (`selector`: its label
        filter, `legend`: the entity's legend)."""
        for severity in ("warning", "critical"):
            self.add_threshold(
                f'{threshold}{{{selector}, severity="{severity}"}}',
                f"{legend} {severity} threshold",
            )
        return self

    def metrics(self) -> set[str]:
        return {m for t in self.targets for m in expr_metrics(t.expr)}


def ts(title: str, expr: str, legend: str, unit: str = "short", **kw: Any) -> Panel:
    return Panel(title, "timeseries", [Target(expr, legend)], unit=unit, **kw)


def stat_levels(title: str, expr: str, legend: str, description: str, w: int = 12) -> Panel:
    return Panel(
        title,
        "stat",
        [Target(expr, legend, instant=True)],
        description=description,
        levels=True,
        w=w,
        h=6,
    )


def threshold_overrides() -> list[dict[str, Any]]:
    dashed = [
        {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
        {"id": "custom.fillOpacity", "value": 0},
        {"id": "custom.lineWidth", "value": 2},
        {"id": "custom.stacking", "value": {"mode": "none", "group": "A"}},
    ]
    return [
        {"matcher": {"id": "byRegexp", "options": "/threshold|limit/"}, "properties": dashed},
        {
            "matcher": {"id": "byRegexp", "options": "/critical.*(threshold|limit)/"},
            "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}}],
        },
        {
            "matcher": {"id": "byRegexp", "options": "/warning.*(threshold|limit)/"},
            "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": "orange"}}],
        },
    ]


def render_panel(p: Panel, pid: int, x: int, y: int, alerts: dict[str, set[str]]) -> dict:
    targets = []
    for i, t in enumerate(p.targets):
        q: dict[str, Any] = {
            "refId": chr(ord("A") + i),
            "datasource": DS,
            "editorMode": "code",
            "expr": t.expr,
            "legendFormat": t.legend or "__auto",
            "range": not t.instant,
            "instant": t.instant,
        }
        if t.fmt != "time_series":
            q["format"] = t.fmt
        targets.append(q)
    defaults: dict[str, Any] = {"unit": p.unit}
    if p.max is not None:
        defaults["max"] = p.max
    overrides: list[dict[str, Any]] = []
    options: dict[str, Any] = {}
    if p.levels:
        defaults |= {
            "mappings": LEVEL_MAPPINGS,
            "thresholds": {"mode": "absolute", "steps": LEVEL_STEPS},
            "color": {"mode": "thresholds"},
        }
    else:
        defaults |= {
            "mappings": p.mappings,
            "thresholds": {
                "mode": "absolute",
                "steps": p.steps or [{"color": "green", "value": None}],
            },
            "color": {"mode": "thresholds" if p.steps else "palette-classic"},
        }
    if p.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if p.stack else "none", "group": "A"},
            "axisSoftMin": 0,
        }
        if any(t.threshold for t in p.targets):
            overrides = threshold_overrides()
        options = {
            "legend": {
                "displayMode": "table",
                "placement": "bottom",
                "showLegend": True,
                "calcs": ["lastNotNull", "max"],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    elif p.kind == "stat":
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background" if (p.levels or p.steps) else "value",
            "graphMode": "none",
            "textMode": "value_and_name",
            "justifyMode": "auto",
            "orientation": "auto",
        }
    elif p.kind == "state-timeline":
        defaults["custom"] = {"fillOpacity": 80, "lineWidth": 0}
        options = {
            "showValue": "never",
            "mergeValues": True,
            "rowHeight": 0.9,
            "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "single", "sort": "none"},
        }
    elif p.kind == "bargauge":
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "orientation": "horizontal",
            "displayMode": "gradient",
            "showUnfilled": True,
        }
    elif p.kind == "heatmap":
        options = {
            "calculate": False,
            "cellGap": 1,
            "color": {
                "mode": "scheme",
                "scheme": "Oranges",
                "exponent": 0.5,
                "steps": 64,
                "fill": "dark-orange",
                "reverse": False,
            },
            "yAxis": {"unit": p.unit, "axisPlacement": "left"},
            "rowsFrame": {"layout": "auto"},
            "tooltip": {"mode": "single", "yHistogram": True},
            "legend": {"show": True},
            "filterValues": {"le": 1e-9},
        }
    elif p.kind == "table":
        options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    panel: dict[str, Any] = {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": DS,
        "gridPos": {"h": p.h, "w": p.w, "x": x, "y": y},
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": overrides},
        "options": options,
        "links": panel_links(p, alerts),
    }
    return deep_merge(panel, p.extra)


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def panel_links(p: Panel, alerts: dict[str, set[str]]) -> list[dict[str, Any]]:
    """Runbooks of the alerts about this panel: alerts that compare with one of its threshold
    series, or, for a panel without threshold lines, alerts that use one of its metrics."""
    used = p.metrics() | p.about
    thresholds = {m for m in used if is_threshold(m)}
    own = {m for m in used if not is_threshold(m)}
    names = set()
    for alert, ms in alerts.items():
        alert_thresholds = {m for m in ms if is_threshold(m)}
        if thresholds and alert_thresholds:
            if ms & thresholds:
                names.add(alert)
        elif ms & own:
            names.add(alert)
    return [
        {"title": f"Runbook: {a}", "url": runbook_url(a), "targetBlank": True}
        for a in sorted(names)
    ]


# --- dashboards -------------------------------------------------------------------------------


@dataclass
class Row:
    title: str
    panels: list[Panel]


def variable_datasource() -> dict[str, Any]:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "regex": "",
        "hide": 0,
        "refresh": 1,
        "current": {},
        "options": [],
    }


def variable_query(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": f"{name}-variable"},
        "definition": query,
        "refresh": 2,  # on time range change: new targets and queues appear
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "sort": 1,
        "hide": 0,
        "regex": "",
    }


VARIABLES = {
    "target": lambda: variable_query("target", "Target", "label_values(runbook_target_up, target)"),
    "queue": lambda: variable_query(
        "queue",
        "Queue",
        'label_values(runbook_queue_depth_threshold{target=~"$target"}, queue)',
    ),
    "jobname": lambda: variable_query(
        "jobname",
        "Cron job",
        'label_values(runbook_cron_job_active{target=~"$target"}, jobname)',
    ),
    "pooler": lambda: variable_query(
        "pooler", "Pooler", "label_values(runbook_pgbouncer_up, pooler)"
    ),
    "backup": lambda: variable_query(
        "backup", "Backup", "label_values(runbook_backup_source_info, backup)"
    ),
    "app": lambda: variable_query(
        "app", "App", "label_values(runbook_probe_interval_seconds, app)"
    ),
    "endpoint": lambda: variable_query(
        "endpoint",
        "Endpoint",
        'label_values(runbook_probe_interval_seconds{app=~"$app"}, endpoint)',
    ),
}


def dashboard(
    uid: str,
    title: str,
    description: str,
    variables: list[str],
    rows: list[Row],
    alerts: dict[str, set[str]],
) -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for row in rows:
        panels.append(
            {
                "id": pid,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        pid, y = pid + 1, y + 1
        x, row_h = 0, 0
        for p in row.panels:
            if x + p.w > 24:
                x, y, row_h = 0, y + row_h, 0
            panels.append(render_panel(p, pid, x, y, alerts))
            pid, x, row_h = pid + 1, x + p.w, max(row_h, p.h)
        y += row_h
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": [TAG],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": [
            {
                "title": "runbook-exporter dashboards",
                "type": "dashboards",
                "tags": [TAG],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
                "targetBlank": False,
                "icon": "external link",
                "tooltip": "",
                "url": "",
            },
            {
                "title": "Runbooks",
                "type": "link",
                "url": RUNBOOK_BASE,
                "targetBlank": True,
                "icon": "doc",
                "tags": [],
                "asDropdown": False,
                "includeVars": False,
                "keepTime": False,
                "tooltip": "The runbook of every shipped alert",
            },
        ],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                },
                {
                    "datasource": DS,
                    "enable": True,
                    "hide": False,
                    "iconColor": "red",
                    "name": "Firing alerts",
                    "expr": 'ALERTS{alertstate="firing"}',
                    "step": "60s",
                    "titleFormat": "{{alertname}}",
                    "textFormat": "{{severity}} {{target}}{{queue}}{{app}} {{endpoint}}",
                    "tagKeys": "severity",
                    "useValueForTime": False,
                },
            ]
        },
        "templating": {"list": [variable_datasource(), *(VARIABLES[v]() for v in variables)]},
        "panels": panels,
    }


# --- status expressions (also used by the overview) ----------------------------------------

PENDING = f'sum by (target, queue) (runbook_queue_jobs{{{TQ}, status="pending"}})'
RECENT = f"runbook_queue_recent_jobs{{{TQ}}}"
FAILURE_RATIO = (
    f'sum by (target, queue) ({RECENT[:-1]}, outcome="failed"}})\n'
    f"  / sum by (target, queue) ({RECENT})"
)
USABLE = f"(runbook_pg_max_connections{{{T}}} - on(target) runbook_pg_reserved_connections{{{T}}})"
CONN_RATIO = f"sum by (target) (runbook_pg_connections{{{T}}}) / on(target) {USABLE}"
ROLLBACK_RATIO = (
    f"sum by (target) (rate(runbook_pg_xact_rollback_total{{{T}}}[5m]))\n"
    f"  / (sum by (target) (rate(runbook_pg_xact_commit_total{{{T}}}[5m]))"
    f" + sum by (target) (rate(runbook_pg_xact_rollback_total{{{T}}}[5m])))"
)
DEAD_RATIO_BIG = (
    f"max by (target) (runbook_pg_table_dead_tuple_ratio{{{T}}}"
    f" and on(target, schema, table) ((runbook_pg_table_live_tuples{{{T}}}"
    f" + runbook_pg_table_dead_tuples{{{T}}})"
    f" >= on(target) group_left runbook_pg_dead_tuple_min_rows{{{T}}}))"
)
ERROR_RATIO = (
    f"sum by (app, endpoint) (rate(runbook_probe_failures_total{{{AE}}}[$__rate_interval]))\n"
    f"  / sum by (app, endpoint) (rate(runbook_probe_requests_total{{{AE}}}[$__rate_interval]))"
)


def error_ratio(window: str) -> str:
    return (
        f"sum by (app, endpoint) (rate(runbook_probe_failures_total{{{AE}}}[{window}]))\n"
        f"  / sum by (app, endpoint) (rate(runbook_probe_requests_total{{{AE}}}[{window}]))"
    )


def p95(window: str) -> str:
    return (
        "histogram_quantile(0.95, sum by (app, endpoint, le) "
        f"(rate(runbook_probe_request_duration_seconds_bucket{{{AE}}}[{window}])))"
    )


POOL_LIMIT = (
    f"(runbook_app_pool_size{{{AE}}} + on(app, endpoint)"
    f" (runbook_app_pool_max_overflow{{{AE}}} or 0 * runbook_app_pool_size{{{AE}}}))"
)

QUEUE_STATUS = worst(
    "target, queue",
    [
        check("depth", levels(PENDING, "runbook_queue_depth_threshold", "target, queue")),
        check(
            "oldest_pending",
            levels(
                f"max by (target, queue) (runbook_queue_oldest_pending_age_seconds{{{TQ}}})",
                "runbook_queue_oldest_pending_threshold_seconds",
                "target, queue",
            ),
        ),
        check(
            "stuck",
            warn_level(
                f"max by (target, queue) (runbook_queue_stuck_jobs{{{TQ}}})",
                "runbook_queue_stuck_threshold",
                "target, queue",
            ),
        ),
        check(
            "retries_exhausted",
            warn_level(
                f"max by (target, queue) (runbook_queue_retries_exhausted_jobs{{{TQ}}})",
                "runbook_queue_retries_exhausted_threshold",
                "target, queue",
            ),
        ),
        check(
            "dead_letter",
            warn_level(
                f"max by (target, queue) (runbook_queue_dead_letter_jobs{{{TQ}}})",
                "runbook_queue_dead_letter_threshold",
                "target, queue",
            ),
        ),
        check(
            "failure_ratio",
            levels(f"({FAILURE_RATIO})", "runbook_queue_failure_ratio_threshold", "target, queue"),
        ),
    ],
)

LONG_QUERIES = f"max by (target) (runbook_pg_long_running_queries{{{T}"
DB_STATUS = worst(
    "target",
    [
        check("up", f"2 * (1 - runbook_target_up{{{T}}})"),
        check(
            "connections",
            levels(f"({CONN_RATIO})", "runbook_pg_connections_threshold_ratio", "target"),
        ),
        # the collector counts queries past the target's long_query_warning / _critical
        check(
            "long_query",
            f'clamp_max(({LONG_QUERIES}, severity="warning"}}) > bool 0)'
            f' + 2 * ({LONG_QUERIES}, severity="critical"}}) > bool 0), 2)',
        ),
        check(
            "idle_in_transaction",
            levels(
                f"max by (target) (runbook_pg_idle_in_transaction_oldest_age_seconds{{{T}}})",
                "runbook_pg_idle_in_transaction_threshold_seconds",
                "target",
            ),
        ),
        check(
            "rollback_ratio",
            levels(f"({ROLLBACK_RATIO})", "runbook_pg_rollback_ratio_threshold", "target"),
        ),
        check(
            "dead_tuples",
            warn_level(DEAD_RATIO_BIG, "runbook_pg_dead_tuple_ratio_threshold", "target"),
        ),
        check("slow_statements", f"(max by (target) (runbook_pg_slow_statements{{{T}}}) > bool 0)"),
    ],
)

# downtime as EndpointDown counts it: from the first failed probe, (failures in a row - 1) x
# the probe interval, so it needs no Prometheus history and covers a never-successful endpoint
DOWNTIME = (
    f"clamp_min((runbook_probe_consecutive_failures{{{AE}}} - 1)"
    f" * on(app, endpoint) group_left runbook_probe_interval_seconds{{{AE}}}, 0)"
)

ENDPOINT_STATUS = worst(
    "app, endpoint",
    [
        check("failing", f"(1 - runbook_probe_success{{{AE}}})"),
        check(
            "down",
            levels(
                f"({DOWNTIME})",
                "runbook_probe_downtime_threshold_seconds",
                "app, endpoint",
                op=">=",
            ),
        ),
        check(
            "consecutive_failures",
            f"(runbook_probe_consecutive_failures{{{AE}}} >= bool on(app, endpoint) "
            f"runbook_probe_consecutive_failures_threshold{{{AE}}})",
        ),
        check(
            "latency",
            levels(
                f"runbook_probe_duration_seconds{{{AE}}}",
                "runbook_probe_latency_threshold_seconds",
                "app, endpoint",
            ),
        ),
        check(
            "latency_p95",
            levels(
                f"({p95('30m')})", "runbook_probe_latency_p95_threshold_seconds", "app, endpoint"
            ),
        ),
        check(
            "error_ratio",
            levels(
                f"({error_ratio('1h')})", "runbook_probe_error_ratio_threshold", "app, endpoint"
            ),
        ),
        check(
            "health_component",
            f"(1 - min by (app, endpoint) (runbook_health_component_up{{{AE}}}))",
        ),
        check(
            "tls_expiry",
            levels(
                f"(runbook_probe_tls_cert_expiry_timestamp_seconds{{{AE}}} - time())",
                "runbook_probe_tls_expiry_threshold_seconds",
                "app, endpoint",
                op="<",
            ),
        ),
    ],
)

POOL_STATUS = worst(
    "app, endpoint",
    [
        check(
            "exhausted",
            f"2 * (runbook_app_pool_in_use{{{AE}}} >= bool on(app, endpoint) {POOL_LIMIT})",
        ),
        check("waiting", f"(runbook_app_pool_waiting{{{AE}}} > bool 0)"),
        check(
            "overflow",
            f"(runbook_app_pool_in_use{{{AE}}} > bool on(app, endpoint) "
            f"runbook_app_pool_size{{{AE}}})",
        ),
    ],
)


def _binary(zero: str, one: str) -> list[dict]:
    """A value mapping for a 0/1 series (up, success) in state timelines: red `zero`, green
    `one`."""
    return [
        {
            "type": "value",
            "options": {
                "0": {"text": zero, "color": "red", "index": 0},
                "1": {"text": one, "color": "green", "index": 1},
            },
        }
    ]


UP_DOWN = _binary("down", "up")
FAILED_OK = _binary("failed", "ok")

LEVEL_HELP = (
    "Worst level over the checks below: OK, WARNING or CRITICAL against the exporter's threshold "
    "series (the ones the shipped alerts compare with)."
)


def overview(alerts: dict[str, set[str]]) -> dict[str, Any]:
    firing = Panel(
        "Firing alerts",
        "table",
        [Target('ALERTS{alertstate="firing"}', instant=True, fmt="table")],
        description="Every firing alert of the shipped rules; the alert name links to its runbook.",
        w=24,
        h=8,
        extra={
            "transformations": [
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True, "Value": True, "__name__": True},
                        "indexByName": {"alertname": 0, "severity": 1},
                    },
                }
            ],
            "fieldConfig": {
                "overrides": [
                    {
                        "matcher": {"id": "byName", "options": "alertname"},
                        "properties": [
                            {
                                "id": "links",
                                "value": [
                                    {
                                        "title": "Runbook",
                                        "url": RUNBOOK_BASE + "${__value.raw}.md",
                                        "targetBlank": True,
                                    }
                                ],
                            }
                        ],
                    }
                ]
            },
        },
    )
    firing_counts = [
        Panel(
            f"{sev.capitalize()} alerts firing",
            "stat",
            [
                Target(
                    f'count(ALERTS{{alertstate="firing", severity="{sev}"}}) or vector(0)',
                    sev,
                    instant=True,
                )
            ],
            steps=[{"color": "green", "value": None}, {"color": color, "value": 1}],
            w=6,
            h=4,
        )
        for sev, color in (("critical", "red"), ("warning", "orange"))
    ]
    collectors = Panel(
        "Collectors failing",
        "stat",
        [
            Target(
                "count(runbook_collector_success == 0) or vector(0)",
                "failing collectors",
                instant=True,
            )
        ],
        description="Collectors and probes whose last run failed; their series are dropped.",
        steps=[{"color": "green", "value": None}, {"color": "red", "value": 1}],
        w=6,
        h=4,
    )
    targets_down = Panel(
        "Databases unreachable",
        "stat",
        [Target("count(runbook_target_up == 0) or vector(0)", "targets down", instant=True)],
        steps=[{"color": "green", "value": None}, {"color": "red", "value": 1}],
        w=6,
        h=4,
    )
    rows = [
        Row("Alerts", [*firing_counts, collectors, targets_down, firing]),
        Row(
            "Status (green OK, amber warning, red critical)",
            [
                stat_levels("Databases", DB_STATUS, "{{target}}", LEVEL_HELP),
                stat_levels("Queues", QUEUE_STATUS, "{{target}} / {{queue}}", LEVEL_HELP),
                stat_levels("Endpoints", ENDPOINT_STATUS, "{{app}} / {{endpoint}}", LEVEL_HELP),
                stat_levels("App pools", POOL_STATUS, "{{app}} / {{endpoint}}", LEVEL_HELP),
            ],
        ),
        Row(
            "Exporter",
            [
                Panel(
                    "Collector success",
                    "state-timeline",
                    [
                        Target(
                            f"runbook_collector_success{{{T}}}",
                            "{{target}} {{collector}}",
                        )
                    ],
                    mappings=FAILED_OK,
                    w=16,
                ),
                ts(
                    "Collector duration",
                    f"runbook_collector_duration_seconds{{{T}}}",
                    "{{target}} {{collector}}",
                    "s",
                    w=8,
                ),
                Panel(
                    "Exporter scrapes",
                    "state-timeline",
                    [Target(f"up{{{JOB}}}", "{{job}} {{instance}}")],
                    description="Prometheus' own up series for the exporter's scrape job (a job "
                    'whose name contains "runbook", as the shipped exporter alerts expect).',
                    mappings=UP_DOWN,
                    w=16,
                    h=5,
                ),
                ts(
                    "Scrape duration",
                    f"scrape_duration_seconds{{{JOB}}}",
                    "{{instance}}",
                    "s",
                    w=8,
                    h=5,
                ),
                Panel(
                    "Configuration reloads",
                    "state-timeline",
                    [
                        Target(
                            f"runbook_config_last_reload_successful{{{JOB}}}",
                            "{{instance}}",
                        )
                    ],
                    description="failed: the last reload (SIGHUP, POST /-/reload) could not "
                    "load the file; the exporter still runs its previous configuration.",
                    mappings=FAILED_OK,
                    w=24,
                    h=4,
                ),
            ],
        ),
    ]
    return dashboard(
        "runbook-overview",
        "runbook-exporter / Overview",
        "Every database, queue, endpoint and app pool at a glance, and the firing alerts.",
        ["target", "app", "endpoint", "queue"],
        rows,
        alerts,
    )


def queues(alerts: dict[str, set[str]]) -> dict[str, Any]:
    q = "{{target}} / {{queue}}"
    rows = [
        Row(
            "Status",
            [stat_levels("Queue status", QUEUE_STATUS, q, LEVEL_HELP, w=24)],
        ),
        Row(
            "Depth",
            [
                ts(
                    "Pending jobs",
                    PENDING,
                    f"{q} pending",
                    description="Jobs waiting for a worker, with the depth thresholds.",
                ).add_threshold(
                    f"runbook_queue_depth_threshold{{{TQ}}}", f"{q} {{{{severity}}}} threshold"
                ),
                ts(
                    "Jobs by status",
                    f"sum by (target, queue, status) (runbook_queue_jobs{{{TQ}}})",
                    f"{q} {{{{status}}}}",
                    description="Exact counts of the active statuses; completed jobs (estimated "
                    "from planner statistics unless count_terminal is exact) are on their own "
                    "axis scale in the next panel.",
                    stack=True,
                ),
                ts(
                    "Completed jobs (estimated)",
                    f"runbook_queue_jobs_estimated{{{TQ}}}",
                    f"{q} {{{{status}}}}",
                    description="Completed jobs from planner statistics (count_terminal: "
                    "estimate): as fresh as the table's last ANALYZE.",
                ),
                ts(
                    "Oldest pending job age",
                    f"runbook_queue_oldest_pending_age_seconds{{{TQ}}}",
                    q,
                    "s",
                ).add_threshold(
                    f"runbook_queue_oldest_pending_threshold_seconds{{{TQ}}}",
                    f"{q} {{{{severity}}}} threshold",
                ),
            ],
        ),
        Row(
            "Jobs that need a person",
            [
                ts(
                    "Stuck jobs",
                    f"runbook_queue_stuck_jobs{{{TQ}}}",
                    q,
                    description="Processing jobs not updated for longer than the queue's "
                    "stuck_after (runbook 000: 30 min).",
                    w=8,
                ).add_threshold(
                    f"runbook_queue_stuck_threshold{{{TQ}}}", f"{q} {{{{severity}}}} threshold"
                ),
                ts(
                    "Retries exhausted",
                    f"runbook_queue_retries_exhausted_jobs{{{TQ}}}",
                    q,
                    description="Failed jobs with retry_count at max_retries: nothing retries "
                    "them automatically.",
                    w=8,
                ).add_threshold(
                    f"runbook_queue_retries_exhausted_threshold{{{TQ}}}",
                    f"{q} {{{{severity}}}} threshold",
                ),
                ts(
                    "Dead-letter jobs",
                    f"runbook_queue_dead_letter_jobs{{{TQ}}}",
                    q,
                    description="Jobs in the dead-letter status or table (runbook 003).",
                    w=8,
                ).add_threshold(
                    f"runbook_queue_dead_letter_threshold{{{TQ}}}",
                    f"{q} {{{{severity}}}} threshold",
                ),
            ],
        ),
        Row(
            "Throughput",
            [
                ts(
                    "Jobs finished per minute",
                    f"60 * sum by (target, queue, outcome) ({RECENT})\n"
                    f"  / on(target, queue) group_left "
                    f"runbook_queue_recent_window_seconds{{{TQ}}}",
                    f"{q} {{{{outcome}}}}",
                    "opm",
                    description="Jobs that reached completed or failed within the queue's "
                    "recent_window, per minute.",
                ),
                ts(
                    "Failure ratio",
                    FAILURE_RATIO,
                    q,
                    "percentunit",
                    description="Share of the recently finished jobs that failed (runbook 000: "
                    "warning above 3 %, critical above 10 %).",
                ).add_threshold(
                    f"runbook_queue_failure_ratio_threshold{{{TQ}}}",
                    f"{q} {{{{severity}}}} threshold",
                ),
            ],
        ),
        Row(
            "Collection",
            [
                Panel(
                    "Queue settings",
                    "stat",
                    [
                        Target(
                            f"runbook_queue_stuck_after_seconds{{{TQ}}}",
                            f"{q} stuck after",
                            instant=True,
                        ),
                        Target(
                            f"runbook_queue_recent_window_seconds{{{TQ}}}",
                            f"{q} recent window",
                            instant=True,
                        ),
                    ],
                    unit="s",
                    w=12,
                    h=5,
                ),
                Panel(
                    "Queues collector",
                    "timeseries",
                    [
                        Target(
                            f'runbook_collector_success{{{T}, collector="queues"}}',
                            "{{target}} run success",
                        ),
                        # which queue broke: the others are still served (docs/queues.md)
                        Target(f"runbook_queue_up{{{TQ}}}", "{{queue}} collected"),
                    ],
                    w=12,
                    h=5,
                    max=1,
                ),
            ],
        ),
    ]
    return dashboard(
        "runbook-queues",
        "runbook-exporter / Queues",
        "Job queues in PostgreSQL tables (runbooks 000 and 003).",
        ["target", "queue"],
        rows,
        alerts,
    )


def postgresql(alerts: dict[str, set[str]]) -> dict[str, Any]:
    t = "{{target}}"
    rows = [
        Row("Status", [stat_levels("Database status", DB_STATUS, t, LEVEL_HELP, w=24)]),
        Row(
            "Connections",
            [
                ts(
                    "Connections vs limit",
                    f"sum by (target, state) (runbook_pg_connections{{{T}}})",
                    f"{t} {{{{state}}}}",
                    description="Client backends of the whole server by state (the exporter's "
                    "own excluded), the usable limit (max_connections minus reserved) and the "
                    "alert thresholds.",
                    stack=True,
                )
                .add_threshold(f"{USABLE}", f"{t} usable limit")
                .add_threshold(
                    f"{USABLE} * on(target) group_right "
                    f"runbook_pg_connections_threshold_ratio{{{T}}}",
                    f"{t} {{{{severity}}}} threshold",
                ),
                ts(
                    "Connection usage",
                    CONN_RATIO,
                    t,
                    "percentunit",
                    max=1,
                ).add_threshold(
                    f"runbook_pg_connections_threshold_ratio{{{T}}}",
                    f"{t} {{{{severity}}}} threshold",
                ),
                ts(
                    "Connections by application",
                    f"runbook_pg_connections_by_application{{{T}}}",
                    f"{t} {{{{application}}}}",
                    stack=True,
                ),
                ts(
                    "Connections by user",
                    f"runbook_pg_connections_by_user{{{T}}}",
                    f"{t} {{{{user}}}}",
                    stack=True,
                ),
            ],
        ),
        Row(
            "Long queries and transactions",
            [
                ts(
                    "Oldest active query",
                    f"runbook_pg_oldest_query_age_seconds{{{T}}}",
                    t,
                    "s",
                    description="Run time of the longest active query (runbook 002: warning "
                    "above 5 min, terminate above 10 min).",
                    about={"runbook_pg_long_running_queries"},
                ).add_threshold(
                    f"runbook_pg_long_query_threshold_seconds{{{T}}}",
                    f"{t} {{{{severity}}}} threshold",
                ),
                ts(
                    "Long-running queries",
                    f"runbook_pg_long_running_queries{{{T}}}",
                    f"{t} {{{{severity}}}}",
                    description="Active queries longer than the warning / critical threshold.",
                ),
                ts(
                    "Idle in transaction",
                    f"runbook_pg_idle_in_transaction_oldest_age_seconds{{{T}}}",
                    f"{t} oldest",
                    "s",
                    description="Age of the oldest idle-in-transaction session: it holds locks "
                    "and a snapshot that keeps vacuum from cleaning up.",
                ).add_threshold(
                    f"runbook_pg_idle_in_transaction_threshold_seconds{{{T}}}",
                    f"{t} {{{{severity}}}} threshold",
                ),
                ts(
                    "Sessions idle in transaction",
                    f'runbook_pg_connections{{{T}, state=~"idle_in_transaction.*"}}',
                    f"{t} {{{{state}}}}",
                ),
                ts(
                    "Oldest transaction",
                    f"runbook_pg_oldest_transaction_age_seconds{{{T}}}",
                    t,
                    "s",
                ),
            ],
        ),
        Row(
            "Locks",
            [
                ts(
                    "Sessions waiting for a lock",
                    f"runbook_pg_lock_waiting_sessions{{{T}}}",
                    t,
                    w=8,
                ),
                ts(
                    "Longest lock wait",
                    f"runbook_pg_lock_wait_oldest_seconds{{{T}}}",
                    t,
                    "s",
                    w=8,
                ).add_threshold(
                    f"runbook_pg_lock_wait_threshold_seconds{{{T}}}",
                    f"{t} {{{{severity}}}} threshold",
                ),
                Panel(
                    "Deadlocks and conflicts",
                    "timeseries",
                    [
                        Target(
                            f"sum by (target) (increase(runbook_pg_deadlocks_total{{{T}}}"
                            "[$__rate_interval]))",
                            f"{t} deadlocks",
                        ),
                        Target(
                            f"sum by (target) (increase(runbook_pg_conflicts_total{{{T}}}"
                            "[$__rate_interval]))",
                            f"{t} recovery conflicts",
                        ),
                    ],
                    w=8,
                ),
            ],
        ),
        Row(
            "Vacuum",
            [
                Panel(
                    "Dead tuples, top tables",
                    "bargauge",
                    [
                        Target(
                            f"topk(10, runbook_pg_table_dead_tuples{{{T}}})",
                            "{{target}} {{schema}}.{{table}}",
                            instant=True,
                        )
                    ],
                    w=8,
                ),
                ts(
                    "Dead-tuple ratio, top tables",
                    f"topk(10, runbook_pg_table_dead_tuple_ratio{{{T}}})",
                    "{{target}} {{schema}}.{{table}}",
                    "percentunit",
                    description="Dead tuples / (live + dead); tables with fewer rows than "
                    "dead_tuple_min_rows do not alert (runbook 002: weekly dead-tuple check).",
                    w=8,
                ).add_threshold(
                    f"runbook_pg_dead_tuple_ratio_threshold{{{T}}}",
                    f"{t} {{{{severity}}}} threshold",
                ),
                ts(
                    "Time since last vacuum, top tables",
                    f"topk(10, runbook_pg_table_last_vacuum_age_seconds{{{T}}})",
                    "{{target}} {{schema}}.{{table}}",
                    "s",
                    w=8,
                ),
            ],
        ),
        Row(
            "Statements and transactions",
            [
                ts(
                    "Slow statements",
                    f"runbook_pg_slow_statements{{{T}}}",
                    f"{t} slow statements",
                    description="Statements in pg_stat_statements whose mean execution time is "
                    "above slow_statement_mean (runbooks 001/002: 1 s).",
                    w=8,
                ),
                ts(
                    "Mean time of the top statements",
                    f"topk(10, runbook_pg_statement_mean_seconds{{{T}}})",
                    "{{target}} {{queryid}}",
                    "s",
                    w=16,
                ).add_threshold(
                    f"runbook_pg_slow_statement_threshold_seconds{{{T}}}",
                    f"{t} warning threshold",
                ),
                Panel(
                    "Top statements by mean time",
                    "table",
                    [
                        Target(
                            f"topk(10, runbook_pg_statement_mean_seconds{{{T}}})"
                            " * on(target, queryid) group_left(query) "
                            f"runbook_pg_statement_info{{{T}}}",
                            instant=True,
                            fmt="table",
                        )
                    ],
                    unit="s",
                    w=24,
                    extra={
                        "transformations": [
                            {
                                "id": "organize",
                                "options": {
                                    "excludeByName": {"Time": True, "__name__": True},
                                    "renameByName": {"Value": "mean"},
                                },
                            }
                        ]
                    },
                ),
                ts(
                    "Rollback ratio",
                    ROLLBACK_RATIO,
                    t,
                    "percentunit",
                    description="Share of transactions rolled back (runbook 004: database "
                    "errors above 0.1 %).",
                ).add_threshold(
                    f"runbook_pg_rollback_ratio_threshold{{{T}}}",
                    f"{t} {{{{severity}}}} threshold",
                ),
                Panel(
                    "Transactions per second",
                    "timeseries",
                    [
                        Target(
                            f"sum by (target) (rate(runbook_pg_xact_commit_total{{{T}}}"
                            "[$__rate_interval]))",
                            f"{t} commits",
                        ),
                        Target(
                            f"sum by (target) (rate(runbook_pg_xact_rollback_total{{{T}}}"
                            "[$__rate_interval]))",
                            f"{t} rollbacks",
                        ),
                    ],
                    unit="ops",
                ),
            ],
        ),
        Row(
            "Size and indexes",
            [
                ts("Database size", f"runbook_pg_database_size_bytes{{{T}}}", t, "bytes", w=8),
                Panel(
                    "Indexes",
                    "stat",
                    [
                        Target(f"runbook_pg_unused_indexes{{{T}}}", f"{t} unused", instant=True),
                        Target(f"runbook_pg_invalid_indexes{{{T}}}", f"{t} invalid", instant=True),
                    ],
                    w=8,
                ),
                Panel(
                    "pg_stat_statements",
                    "stat",
                    [
                        Target(
                            f"runbook_pg_stat_statements_available{{{T}}}",
                            t,
                            instant=True,
                        )
                    ],
                    mappings=[
                        {
                            "type": "value",
                            "options": {
                                "0": {"text": "missing", "color": "orange", "index": 0},
                                "1": {"text": "available", "color": "green", "index": 1},
                            },
                        }
                    ],
                    w=8,
                ),
            ],
        ),
    ]
    return dashboard(
        "runbook-postgresql",
        "runbook-exporter / PostgreSQL",
        "Connections, long queries, idle transactions, locks, vacuum, statements (runbooks "
        "001, 002, 004).",
        ["target"],
        rows,
        alerts,
    )


def endpoints(alerts: dict[str, set[str]]) -> dict[str, Any]:
    e = "{{app}} / {{endpoint}}"
    rows = [
        Row(
            "Status",
            [
                stat_levels("Endpoint status", ENDPOINT_STATUS, e, LEVEL_HELP, w=12),
                Panel(
                    "Probe success",
                    "state-timeline",
                    [Target(f"runbook_probe_success{{{AE}}}", e)],
                    mappings=UP_DOWN,
                    h=6,
                ),
            ],
        ),
        Row(
            "Latency",
            [
                Panel(
                    "Probe latency histogram",
                    "heatmap",
                    [
                        Target(
                            "sum by (le) (rate(runbook_probe_request_duration_seconds_bucket"
                            f"{{{AE}}}[$__rate_interval]))",
                            "{{le}}",
                            fmt="heatmap",
                        )
                    ],
                    unit="s",
                ),
                ts("Latency P95", p95("$__rate_interval"), e, "s").add_threshold(
                    f"runbook_probe_latency_p95_threshold_seconds{{{AE}}}",
                    f"{e} {{{{severity}}}} threshold",
                ),
                ts(
                    "Last probe duration",
                    f"runbook_probe_duration_seconds{{{AE}}}",
                    e,
                    "s",
                    description="Runbook 000: API response time above 1.5 s warning, 3 s critical.",
                ).add_threshold(
                    f"runbook_probe_latency_threshold_seconds{{{AE}}}",
                    f"{e} {{{{severity}}}} threshold",
                ),
                ts(
                    "Probe phases",
                    f"runbook_probe_phase_duration_seconds{{{AE}}}",
                    f"{e} {{{{phase}}}}",
                    "s",
                    stack=True,
                ),
            ],
        ),
        Row(
            "Failures",
            [
                ts(
                    "Consecutive failures",
                    f"runbook_probe_consecutive_failures{{{AE}}}",
                    e,
                    w=8,
                ).add_threshold(
                    f"runbook_probe_consecutive_failures_threshold{{{AE}}}",
                    f"{e} warning threshold",
                ),
                ts("Error ratio", ERROR_RATIO, e, "percentunit", w=8).add_threshold(
                    f"runbook_probe_error_ratio_threshold{{{AE}}}",
                    f"{e} {{{{severity}}}} threshold",
                ),
                ts(
                    "Failure reason",
                    f"runbook_probe_failure_reason{{{AE}}} > 0",
                    f"{e} {{{{reason}}}}",
                    w=8,
                    description="Why the last probe failed (connect, timeout, tls, status, "
                    "body_too_large, encoding, json, assertion, check_error); empty while every "
                    "probe succeeds.",
                ),
                ts(
                    "Downtime",
                    DOWNTIME,
                    e,
                    "s",
                    description="Time since the first of the failed probes in a row, as "
                    "EndpointDown counts it: (consecutive failures - 1) x probe interval.",
                    w=8,
                ).add_threshold(
                    f"runbook_probe_downtime_threshold_seconds{{{AE}}}",
                    f"{e} {{{{severity}}}} threshold",
                ),
                ts(
                    "HTTP status",
                    f"runbook_probe_status_code{{{AE}}}",
                    e,
                    w=8,
                ),
                Panel(
                    "Health components",
                    "state-timeline",
                    [Target(f"runbook_health_component_up{{{AE}}}", f"{e} {{{{component}}}}")],
                    mappings=UP_DOWN,
                    w=8,
                ),
            ],
        ),
        Row(
            "SLO",
            [
                ts(
                    "SLO burn rate",
                    f"({error_ratio('1h')})\n  / on(app, endpoint) "
                    f"(1 - runbook_slo_objective{{{AE}}})",
                    f"{e} 1h",
                    description="Error ratio divided by the error budget (1 - objective): 1 "
                    "spends the budget exactly over the SLO period; 14.4 over 1 h spends 2 % "
                    "of a 30-day budget.",
                    steps=[
                        {"color": "green", "value": None},
                        {"color": "orange", "value": 6},
                        {"color": "red", "value": 14.4},
                    ],
                    extra={
                        "fieldConfig": {
                            "defaults": {"custom": {"thresholdsStyle": {"mode": "line+area"}}}
                        }
                    },
                ),
                ts(
                    "Availability vs objective",
                    f"avg_over_time(runbook_probe_success{{{AE}}}[1h])",
                    f"{e} 1h",
                    "percentunit",
                ).add_threshold(f"runbook_slo_objective{{{AE}}}", f"{e} critical threshold"),
                ts(
                    "TLS certificate expires in",
                    f"runbook_probe_tls_cert_expiry_timestamp_seconds{{{AE}}} - time()",
                    e,
                    "s",
                ).add_threshold(
                    f"runbook_probe_tls_expiry_threshold_seconds{{{AE}}}",
                    f"{e} {{{{severity}}}} threshold",
                ),
            ],
        ),
    ]
    return dashboard(
        "runbook-endpoints",
        "runbook-exporter / Endpoints",
        "HTTP health endpoints: success, latency, failures and SLO burn (runbooks 000, 001, 004).",
        ["app", "endpoint"],
        rows,
        alerts,
    )


APP_REPORTED = {  # what the app reports (a metric's meaning) -> its threshold series
    "runbook_app_error_ratio": "runbook_app_error_ratio_threshold",
    "runbook_app_latency_p95_seconds": "runbook_app_latency_p95_threshold_seconds",
    "runbook_app_latency_average_seconds": "runbook_app_latency_average_threshold_seconds",
    "runbook_app_memory_ratio": "runbook_app_memory_ratio_threshold",
}
APP_REPORTED_STATUS = worst(
    "app, endpoint",
    [
        check(
            value.removeprefix("runbook_app_"), levels(f"{value}{{{AE}}}", limit, "app, endpoint")
        )
        for value, limit in APP_REPORTED.items()
    ],
)


def reported(title: str, value: str, unit: str, description: str, **kw: Any) -> Panel:
    """A figure the app reports with its warning and critical threshold lines."""
    e = "{{app}} / {{endpoint}}"
    limit = APP_REPORTED[value]
    return ts(title, f"{value}{{{AE}}}", e, unit, description=description, **kw).add_levels(
        limit, AE, e
    )


def app_pools(alerts: dict[str, set[str]]) -> dict[str, Any]:
    e = "{{app}} / {{endpoint}}"
    rows = [
        Row(
            "Status",
            [
                stat_levels("Pool status", POOL_STATUS, e, LEVEL_HELP, w=12),
                stat_levels("What the app reports", APP_REPORTED_STATUS, e, LEVEL_HELP, w=12),
            ],
        ),
        Row(
            "What the app reports (its metrics JSON)",
            [
                reported(
                    "Error ratio",
                    "runbook_app_error_ratio",
                    "percentunit",
                    "The error rate the app reports (meaning: error_ratio), runbooks 001/004.",
                ),
                reported(
                    "Response time P95",
                    "runbook_app_latency_p95_seconds",
                    "s",
                    "The P95 response time the app reports (meaning: latency_p95).",
                ),
                reported(
                    "Response time average",
                    "runbook_app_latency_average_seconds",
                    "s",
                    "The average response time the app reports (meaning: latency_average).",
                ),
                reported(
                    "Memory",
                    "runbook_app_memory_ratio",
                    "percentunit",
                    "The share of its memory the app reports in use (meaning: memory_ratio).",
                ),
            ],
        ),
        Row(
            "Pool",
            [
                ts(
                    "Connections in use",
                    f"runbook_app_pool_in_use{{{AE}}}",
                    f"{e} in use",
                    description="Connections checked out of the app's pool, the pool size and "
                    "the exhaustion limit (size + max overflow, runbook 001).",
                )
                .add_threshold(f"runbook_app_pool_size{{{AE}}}", f"{e} pool size warning limit")
                .add_threshold(POOL_LIMIT, f"{e} size + max overflow critical limit"),
                ts(
                    "Requests waiting for a connection",
                    f"runbook_app_pool_waiting{{{AE}}}",
                    e,
                ),
                ts("Idle connections", f"runbook_app_pool_idle{{{AE}}}", e),
                ts(
                    "Overflow in use",
                    f"runbook_app_pool_overflow{{{AE}}}",
                    e,
                ).add_threshold(
                    f"runbook_app_pool_max_overflow{{{AE}}}", f"{e} max overflow critical limit"
                ),
                ts(
                    "Pool utilisation",
                    f"runbook_app_pool_in_use{{{AE}}} / on(app, endpoint) {POOL_LIMIT}",
                    e,
                    "percentunit",
                    max=1,
                    w=24,
                ),
            ],
        ),
    ]
    return dashboard(
        "runbook-app-pools",
        "runbook-exporter / App pools and app metrics",
        "The apps' own database connection pools (runbook 001) and the error rate, response "
        "times and memory they report in their metrics JSON (runbooks 001, 004).",
        ["app", "endpoint"],
        rows,
        alerts,
    )


TJ = 'target=~"$target", jobname=~"$jobname"'
ACTIVE_JOB = f"on(target, jobname) runbook_cron_job_active{{{TJ}}} == 1"

CRON_STATUS = worst(
    "target, jobname",
    [
        check(
            "consecutive_failures",
            levels(
                f"runbook_cron_job_consecutive_failures{{{TJ}}}",
                "runbook_cron_job_consecutive_failures_threshold",
                "target, jobname",
                op=">=",
            )
            + f" and {ACTIVE_JOB}",
        ),
        check(
            "overdue",
            warn_level(
                f"runbook_cron_job_overdue_seconds{{{TJ}}}",
                "runbook_cron_job_overdue_threshold_seconds",
                "target, jobname",
            )
            + f" and {ACTIVE_JOB}",
        ),
        check(
            "run_too_long",
            warn_level(
                f"runbook_cron_job_running_seconds{{{TJ}}}",
                "runbook_cron_job_run_duration_threshold_seconds",
                "target, jobname",
            )
            + f" and {ACTIVE_JOB}",
        ),
    ],
)

PGNET_FAILED = (
    f'sum by (target) (runbook_pgnet_recent_responses{{{T}, outcome=~"4xx|5xx|timed_out|error"}})'
)
PGNET_ALL = f"sum by (target) (runbook_pgnet_recent_responses{{{T}}})"
PGNET_RATIO = f"{PGNET_FAILED}\n  / {PGNET_ALL}"
PGNET_STATUS = worst(
    "target",
    [
        check(
            "failures",
            f"({PGNET_FAILED} > bool on(target)"
            ' runbook_pgnet_failures_threshold{severity="warning"})',
        ),
        check(
            "failure_ratio",
            levels(f"({PGNET_RATIO})", "runbook_pgnet_failure_ratio_threshold", "target")
            + f" and on(target) ({PGNET_ALL} >= on(target) runbook_pgnet_min_responses)",
        ),
    ],
)


def scheduled(alerts: dict[str, set[str]]) -> dict[str, Any]:
    j = "{{target}} / {{jobname}}"
    t = "{{target}}"
    rows = [
        Row(
            "Status",
            [
                stat_levels("Cron jobs", CRON_STATUS, j, LEVEL_HELP, w=16),
                stat_levels("pg_net calls", PGNET_STATUS, t, LEVEL_HELP, w=8),
            ],
        ),
        Row(
            "pg_cron jobs",
            [
                ts(
                    "Consecutive failed runs",
                    f"runbook_cron_job_consecutive_failures{{{TJ}}}",
                    j,
                    description="Failed runs since the job's newest success (CronJobFailing: "
                    "warning and critical counts per job).",
                ).add_levels("runbook_cron_job_consecutive_failures_threshold", TJ, j),
                ts(
                    "Failed runs in the window",
                    f"runbook_cron_job_recent_failures{{{TJ}}}",
                    j,
                    description="Failed runs that started within the collector's failure_window.",
                ),
                ts(
                    "Overdue",
                    f"runbook_cron_job_overdue_seconds{{{TJ}}}",
                    j,
                    "s",
                    description="How long ago the schedule fired with no run started since "
                    "(CronJobOverdue past the grace).",
                ).add_threshold(
                    f'runbook_cron_job_overdue_threshold_seconds{{{TJ}, severity="warning"}}',
                    f"{j} warning threshold",
                ),
                ts(
                    "Run in progress",
                    f"runbook_cron_job_running_seconds{{{TJ}}}",
                    j,
                    "s",
                    description="How long the job's current run has lasted (CronJobRunTooLong).",
                ).add_threshold(
                    f'runbook_cron_job_run_duration_threshold_seconds{{{TJ}, severity="warning"}}',
                    f"{j} warning threshold",
                ),
                ts(
                    "Since the last success",
                    f"time() - runbook_cron_job_last_success_timestamp_seconds{{{TJ}}}",
                    j,
                    "s",
                ),
                ts(
                    "Last run's duration",
                    f"runbook_cron_job_last_run_duration_seconds{{{TJ}}}",
                    j,
                    "s",
                ),
                ts(
                    "Run history (cron.job_run_details)",
                    f"runbook_cron_history_rows_estimated{{{T}}}",
                    f"{t} rows",
                    description="pg_cron never purges its run history (runbook 001 retention): "
                    "CronHistoryTooLarge above the threshold.",
                    w=24,
                ).add_threshold(
                    f'runbook_cron_history_rows_threshold{{{T}, severity="warning"}}',
                    f"{t} warning threshold",
                ),
            ],
        ),
        Row(
            "pg_net calls",
            [
                ts(
                    "Responses in the window by outcome",
                    f"sum by (target, outcome) (runbook_pgnet_recent_responses{{{T}}})",
                    "{{target}} {{outcome}}",
                    stack=True,
                ),
                ts(
                    "Failed calls",
                    PGNET_FAILED,
                    f"{t} failed",
                    description="4xx, 5xx, timed out or no response: a pg_cron job that made "
                    "the call still shows succeeded (PgNetCallsFailing).",
                ).add_threshold(
                    f'runbook_pgnet_failures_threshold{{{T}, severity="warning"}}',
                    f"{t} warning threshold",
                ),
                ts(
                    "Failure ratio",
                    PGNET_RATIO,
                    t,
                    "percentunit",
                    max=1,
                    description="Failed share of the window's responses (PgNetFailureRatioHigh).",
                ).add_levels("runbook_pgnet_failure_ratio_threshold", T, t),
                ts(
                    "Requests waiting in net.http_request_queue",
                    f"runbook_pgnet_request_queue_depth{{{T}}}",
                    t,
                ),
            ],
        ),
    ]
    return dashboard(
        "runbook-scheduled",
        "runbook-exporter / Cron & pg_net",
        "pg_cron jobs (failures, overdue schedules, long runs, run history) and the HTTP calls "
        "the database makes with pg_net (Supabase).",
        ["target", "jobname"],
        rows,
        alerts,
    )


B = 'backup=~"$backup"'
RETENTION_LIMIT = (
    f"runbook_retention_period_seconds{{{T}}}"
    f" + on(target, schema, table) runbook_retention_grace_seconds{{{T}}}"
)
RETENTION_STATUS = worst(
    "target, schema, table",
    [
        check(
            "cleanup_behind",
            f"(runbook_retention_oldest_row_age_seconds{{{T}}} > bool on(target, schema, table)"
            f" ({RETENTION_LIMIT}))",
        ),
        check("unreadable", f"(1 - runbook_retention_up{{{T}}})"),
    ],
)
BACKUP_STATUS = worst(
    "backup",
    [
        check(
            "age",
            levels(
                f"runbook_backup_age_seconds{{{B}}}",
                "runbook_backup_age_threshold_seconds",
                "backup",
            ),
        ),
        check("missing", f"2 * (1 - runbook_backup_found{{{B}}})"),
        check("source", f"(1 - runbook_backup_source_up{{{B}}})"),
    ],
)


def data(alerts: dict[str, set[str]]) -> dict[str, Any]:
    tbl = "{{target}} {{schema}}.{{table}}"
    b = "{{backup}}"
    q = "{{target}} / {{query}}"
    rows = [
        Row(
            "Status",
            [
                stat_levels("Retention", RETENTION_STATUS, tbl, LEVEL_HELP, w=12),
                stat_levels("Backups", BACKUP_STATUS, b, LEVEL_HELP, w=12),
            ],
        ),
        Row(
            "Retention (runbook 001)",
            [
                ts(
                    "Oldest row's age",
                    f"runbook_retention_oldest_row_age_seconds{{{T}}}",
                    tbl,
                    "s",
                    description="Age of the oldest row of each table with a retention period; "
                    "RetentionCleanupBehind when it passes period + grace (the clean-up job "
                    "is not deleting).",
                    about={"runbook_retention_period_seconds"},
                )
                .add_threshold(RETENTION_LIMIT, f"{tbl} period + grace warning limit")
                .add_threshold(f"runbook_retention_period_seconds{{{T}}}", f"{tbl} period limit"),
                ts(
                    "Rows past retention",
                    f"runbook_retention_expired_rows{{{T}}}",
                    tbl,
                    description="Counted through the index up to the table's max_count: "
                    "`runbook_retention_expired_rows_capped` 1 means at least this many.",
                ),
            ],
        ),
        Row(
            "Backups (runbooks 002, 003)",
            [
                ts(
                    "Age of the last good backup",
                    f"runbook_backup_age_seconds{{{B}}}",
                    b,
                    "s",
                    description="Time since the newest good backup the source lists "
                    "(BackupTooOld at the warning / critical ages).",
                ).add_levels("runbook_backup_age_threshold_seconds", B, b),
                ts("Backup size", f"runbook_backup_size_bytes{{{B}}}", b, "bytes"),
                ts(
                    "Backups found",
                    f"runbook_backup_found{{{B}}}",
                    b,
                    description="1 when the source lists a good backup, 0 when it was read and "
                    "lists none (BackupMissing).",
                    max=1,
                ),
                ts(
                    "Source readable",
                    f"runbook_backup_source_up{{{B}}}",
                    b,
                    description="0 when the source cannot be read (BackupSourceFailing); the "
                    "reason is runbook_backup_source_failure_reason.",
                    max=1,
                ),
            ],
        ),
        Row(
            "Custom queries",
            [
                ts(
                    "Query success",
                    f"runbook_custom_query_success{{{T}}}",
                    q,
                    max=1,
                    description="1 when the custom query's last run worked (targets[].queries).",
                ),
                ts(
                    "Query duration",
                    f"runbook_custom_query_duration_seconds{{{T}}}",
                    q,
                    "s",
                ),
                ts(
                    "Since the last success",
                    f"time() - runbook_custom_query_last_success_timestamp_seconds{{{T}}}",
                    q,
                    "s",
                ),
                ts(
                    "Series dropped by max_series",
                    f"runbook_custom_query_series_dropped{{{T}}}",
                    q,
                ),
            ],
        ),
    ]
    return dashboard(
        "runbook-data",
        "runbook-exporter / Retention, backups, custom queries",
        "Rows kept past their retention period, the age of the last good backup of each "
        "source, and the health of the custom SQL queries.",
        ["target", "backup"],
        rows,
        alerts,
    )


PL = 'pooler=~"$pooler"'
POOL = "pooler, database, user"
POOL_WAIT = f"runbook_pgbouncer_pool_max_wait_seconds{{{PL}}}"
POOL_SATURATION = f"runbook_pgbouncer_pool_saturation_ratio{{{PL}}}"


def pool_levels(value: str, threshold: str) -> str:
    """levels() for a pool against its pooler's thresholds: many pools, one threshold each
    (group_left keeps the pool's labels)."""
    w = f'({value} > bool on(pooler) group_left {threshold}{{severity="warning"}})'
    c = f'({value} > bool on(pooler) group_left {threshold}{{severity="critical"}})'
    return f"clamp_max({w} + 2 * {c}, 2)"


POOLER_STATUS = worst(
    POOL,
    [
        check("max_wait", pool_levels(POOL_WAIT, "runbook_pgbouncer_max_wait_threshold_seconds")),
        check(
            "saturation",
            pool_levels(POOL_SATURATION, "runbook_pgbouncer_saturation_threshold_ratio"),
        ),
    ],
)
# Supavisor's own /metrics, scraped by Prometheus directly (docs/supabase.md "Supavisor"): its
# queries return data only where Supavisor runs and is scraped, so the dashboards test leaves
# exactly these out (tests/test_pgbouncer.py SUPAVISOR_QUERIES)
SUPAVISOR_CHECKOUT_P95 = (
    "histogram_quantile(0.95, sum by (le, tenant, mode) "
    "(rate(supavisor_pool_checkout_duration_bucket[$__rate_interval]))) / 1000"
)
SUPAVISOR_CLIENTS = "sum by (tenant, mode) (supavisor_connections_active)"


def poolers(alerts: dict[str, set[str]]) -> dict[str, Any]:
    p = "{{pooler}} {{database}}/{{user}}"
    rows = [
        Row(
            "Status",
            [
                stat_levels("PgBouncer pools", POOLER_STATUS, p, LEVEL_HELP, w=16),
                Panel(
                    "Admin console",
                    "stat",
                    [Target(f"runbook_pgbouncer_up{{{PL}}}", "{{pooler}}", instant=True)],
                    description="1 when the exporter read the pooler's admin console on its "
                    "last run (PgBouncerDown; the reason is runbook_pgbouncer_failure_reason).",
                    mappings=UP_DOWN,
                    w=8,
                    h=6,
                    about={"runbook_pgbouncer_failure_reason"},
                ),
            ],
        ),
        Row(
            "PgBouncer pools",
            [
                ts(
                    "Clients waiting for a server connection",
                    f'runbook_pgbouncer_pool_clients{{{PL}, state="waiting"}}',
                    p,
                    description="Clients queued in PgBouncer (SHOW POOLS cl_waiting): users "
                    "wait here while the database may look idle.",
                ),
                ts(
                    "Longest wait",
                    POOL_WAIT,
                    p,
                    "s",
                    description="How long the oldest waiting client has waited (maxwait + "
                    "maxwait_us; PgBouncerClientsWaiting).",
                )
                .add_threshold(
                    f'runbook_pgbouncer_max_wait_threshold_seconds{{{PL}, severity="warning"}}',
                    "{{pooler}} warning threshold",
                )
                .add_threshold(
                    f'runbook_pgbouncer_max_wait_threshold_seconds{{{PL}, severity="critical"}}',
                    "{{pooler}} critical threshold",
                ),
                ts(
                    "Pool saturation",
                    POOL_SATURATION,
                    p,
                    "percentunit",
                    description="Server connections in use by clients / pool_size "
                    "(PgBouncerPoolSaturated).",
                )
                .add_threshold(
                    f'runbook_pgbouncer_saturation_threshold_ratio{{{PL}, severity="warning"}}',
                    "{{pooler}} warning threshold",
                )
                .add_threshold(
                    f'runbook_pgbouncer_saturation_threshold_ratio{{{PL}, severity="critical"}}',
                    "{{pooler}} critical threshold",
                ),
                ts(
                    "Server connections by state",
                    f"sum by ({POOL}, state) (runbook_pgbouncer_pool_servers{{{PL}}})",
                    f"{p} {{{{state}}}}",
                    stack=True,
                    description="active: linked to a client; idle/used: free; login/tested: "
                    "being opened or checked.",
                ).add_threshold(f"runbook_pgbouncer_pool_size{{{PL}}}", f"{p} pool_size limit"),
                ts(
                    "Active clients",
                    f'runbook_pgbouncer_pool_clients{{{PL}, state="active"}}',
                    p,
                ),
                ts(
                    "Client connections of the pooler",
                    f'runbook_pgbouncer_list_items{{{PL}, list="used_clients"}}',
                    "{{pooler}} used_clients",
                    description="All client connections PgBouncer holds (SHOW LISTS), against "
                    "its max_client_conn.",
                ).add_threshold(
                    f"runbook_pgbouncer_max_client_connections{{{PL}}}",
                    "{{pooler}} max_client_conn limit",
                ),
            ],
        ),
        Row(
            "PgBouncer traffic",
            [
                ts(
                    "Transactions per second",
                    f"rate(runbook_pgbouncer_transactions_total{{{PL}}}[$__rate_interval])",
                    "{{pooler}} {{database}}",
                    "ops",
                ),
                ts(
                    "Queries per second",
                    f"rate(runbook_pgbouncer_queries_total{{{PL}}}[$__rate_interval])",
                    "{{pooler}} {{database}}",
                    "ops",
                ),
                ts(
                    "Average wait for a server connection",
                    f"runbook_pgbouncer_avg_wait_seconds{{{PL}}}",
                    "{{pooler}} {{database}}",
                    "s",
                    description="PgBouncer's own average over its stats period (SHOW STATS "
                    "avg_wait_time).",
                ),
                ts(
                    "Time clients spent waiting, per second",
                    f"rate(runbook_pgbouncer_client_wait_seconds_total{{{PL}}}[$__rate_interval])",
                    "{{pooler}} {{database}}",
                    "s",
                    description="Seconds of client waiting per second of wall time: 2 means "
                    "two clients waiting all the time on average.",
                ),
            ],
        ),
        Row(
            "Supavisor (when Prometheus scrapes it, docs/supabase.md)",
            [
                ts(
                    "Supavisor pool checkout p95",
                    SUPAVISOR_CHECKOUT_P95,
                    "{{tenant}} {{mode}}",
                    "s",
                    description="Supavisor's own histogram of the time a client waits to check "
                    "a connection out of the tenant's pool: its counterpart of PgBouncer's wait. "
                    "Empty without Supavisor.",
                ),
                ts(
                    "Supavisor client connections",
                    SUPAVISOR_CLIENTS,
                    "{{tenant}} {{mode}}",
                    description="Clients connected to Supavisor per tenant. Empty without "
                    "Supavisor.",
                ),
            ],
        ),
    ]
    return dashboard(
        "runbook-poolers",
        "runbook-exporter / Connection poolers",
        "PgBouncer pools (clients waiting, the longest wait, saturation, server connections, "
        "traffic) from the exporter, and Supavisor's checkout queue from its own metrics.",
        ["pooler"],
        rows,
        alerts,
    )


BUILDERS = {
    "runbook-overview.json": overview,
    "runbook-queues.json": queues,
    "runbook-postgresql.json": postgresql,
    "runbook-endpoints.json": endpoints,
    "runbook-app-pools.json": app_pools,
    "runbook-scheduled.json": scheduled,
    "runbook-data.json": data,
    "runbook-poolers.json": poolers,
}


def build_all(rules_dir: Path = ALERTS) -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    alerts = load_alerts(rules_dir)
    return {
        name: json.dumps(build(alerts), indent=2, ensure_ascii=False) + "\n"
        for name, build in BUILDERS.items()
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 when a file is stale")
    args = p.parse_args(argv)
    stale = []
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in build_all().items():
        path = OUT / name
        current = path.read_text() if path.exists() else None
        if current != text:
            stale.append(name)
            if not args.check:
                path.write_text(text)
    if args.check and stale:
        print(f"stale: {', '.join(stale)}; run python grafana/generate.py", file=sys.stderr)
        return 1
    print(f"{'stale' if args.check else 'written'}: {len(stale)} of {len(BUILDERS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
