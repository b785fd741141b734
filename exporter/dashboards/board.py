"""A dashboard from its rows of panels: variables, links, the firing-alerts annotation, panel
ids, the grid and each panel's runbook links, with the SDK's dashboard builder."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, TypeVar

from grafana_foundation_sdk.builders import dashboard as sdk
from grafana_foundation_sdk.cog import builder as cog
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as m

from exporter.dashboards.links import alerts_about, expr_metrics
from exporter.dashboards.panels import DATASOURCE

TAG = "runbook-exporter"
B = TypeVar("B", bound=cog.Builder)

VARIABLES = {  # name -> (label, query)
    "target": ("Target", "label_values(runbook_target_up, target)"),
    "queue": ("Queue", 'label_values(runbook_queue_depth_threshold{target=~"$target"}, queue)'),
    "jobname": ("Cron job", 'label_values(runbook_cron_job_active{target=~"$target"}, jobname)'),
    "pooler": ("Pooler", "label_values(runbook_pgbouncer_up, pooler)"),
    "backup": ("Backup", "label_values(runbook_backup_source_info, backup)"),
    "app": ("App", "label_values(runbook_probe_interval_seconds, app)"),
    "endpoint": ("Endpoint", 'label_values(runbook_probe_interval_seconds{app=~"$app"}, endpoint)'),
}


@dataclass
class About:
    """A panel and more series it is about than its queries select (for its runbook links)."""

    panel: cog.Builder[m.Panel]
    series: set[str]


Panel = cog.Builder[m.Panel] | About


@dataclass
class Row:
    title: str
    panels: list[Panel]


@dataclass
class Board:
    uid: str
    title: str
    description: str
    variables: list[str]
    rows: list[Row] = field(default_factory=list)


def variable(name: str) -> sdk.QueryVariable:
    label, q = VARIABLES[name]
    return (
        sdk.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query({"query": q, "refId": f"{name}-variable"})
        .definition(q)
        .refresh(m.VariableRefresh.ON_TIME_RANGE_CHANGED)  # new targets and queues appear
        .include_all(True)
        .multi(True)
        .all_value(".*")
        .current(m.VariableOption(selected=True, text=["All"], value=["$__all"]))
        .sort(m.VariableSort.ALPHABETICAL_ASC)
        .regex("")
    )


def unplaced(b: B) -> B:
    """The SDK's models of links and annotations set `placement: "inControlsMenu"` (Grafana 12's
    controls dropdown) with no builder method to leave it out; without it, Grafana shows them
    where it always has, above the panels. Their to_json skips a None field."""
    b.build().placement = None
    return b


def link(title: str) -> sdk.DashboardLink:
    return unplaced(sdk.DashboardLink(title))


def panel_links(p: m.Panel, about: set[str], alerts: dict[str, set[str]], base: str) -> list:
    used = about | {s for t in p.targets or [] for s in expr_metrics(t.expr)}  # type: ignore[attr-defined]
    return [
        link(f"Runbook: {a}").url(f"{base}{a}.md").target_blank(True)
        for a in alerts_about(used, alerts)
    ]


def build(board: Board, alerts: dict[str, set[str]], base: str) -> sdk.Dashboard:
    d = (
        sdk.Dashboard(board.title)
        .uid(board.uid)
        .description(board.description)
        .tags([TAG])
        .timezone("browser")
        .editable()
        .tooltip(m.DashboardCursorSync.CROSSHAIR)
        .refresh("30s")
        .time("now-3h", "now")
        .version(1)
        .links(
            [
                link("runbook-exporter dashboards")
                .type(m.DashboardLinkType.DASHBOARDS)
                .tags([TAG])
                .as_dropdown(True)
                .include_vars(True)
                .keep_time(True)
                .icon("external link"),
                link("Runbooks")
                .url(base)
                .target_blank(True)
                .icon("doc")
                .tooltip("The runbook of every shipped alert"),
            ]
        )
        .annotations(
            [
                unplaced(sdk.AnnotationQuery())
                .built_in(1)
                .datasource(m.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
                .enable(True)
                .hide(True)
                .icon_color("rgba(0, 211, 255, 1)")
                .name("Annotations & Alerts")
                .type("dashboard"),
                unplaced(sdk.AnnotationQuery())
                .datasource(DATASOURCE)
                .enable(True)
                .hide(False)
                .icon_color("red")
                .name("Firing alerts")
                .expr('ALERTS{alertstate="firing"}')
                .step("60s")
                .title_format("{{alertname}}")
                .text_format("{{severity}} {{target}}{{queue}}{{app}} {{endpoint}}")
                .tag_keys("severity")
                .use_value_for_time(False),
            ]
        )
        .variables(
            [
                sdk.DatasourceVariable("datasource").label("Data source").type("prometheus"),
                *(variable(v) for v in board.variables),
            ]
        )
    )
    pid = 1
    for row in board.rows:
        d.with_row(sdk.Row(row.title).id(pid))
        pid += 1
        for entry in row.panels:
            p, about = (entry.panel, entry.series) if isinstance(entry, About) else (entry, set())
            p.id(pid)  # type: ignore[attr-defined]
            p.links(panel_links(p.build(), about, alerts, base))  # type: ignore[attr-defined]
            d.with_panel(p)
            pid += 1
    return d


def to_json(d: sdk.Dashboard) -> dict[str, Any]:
    """The dashboard's JSON model, as the SDK encodes it."""
    return json.loads(JSONEncoder().encode(d.build()))
