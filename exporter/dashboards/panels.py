"""The panels of the dashboards, built with Grafana's typed builders (grafana-foundation-sdk).

Each function returns an SDK panel builder set up the way every panel of its kind looks here;
the dashboards module chains the rest (`.description()`, `.span()`, ...). A threshold line is
a query on one of the exporter's threshold series (`Graph.threshold`), drawn dashed: orange for
warning, red for critical, by an override on its legend.
"""

from __future__ import annotations

from typing import Self, TypeVar

from grafana_foundation_sdk.builders import (
    bargauge,
    common,
    heatmap,
    prometheus,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.builders import dashboard as sdk
from grafana_foundation_sdk.cog import builder as cog
from grafana_foundation_sdk.models import common as c
from grafana_foundation_sdk.models import dashboard as m
from grafana_foundation_sdk.models import heatmap as hm
from grafana_foundation_sdk.models import prometheus as pm

# every query reads the data source of the dashboard's $datasource variable
DATASOURCE = m.DataSourceRef(type_val="prometheus", uid="${datasource}")
P = TypeVar("P", bound=cog.Builder)


def query(expr: str, legend: str = "", instant: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).legend_format(legend or "__auto").datasource(DATASOURCE)
    q = q.editor_mode(pm.QueryEditorMode.CODE)
    return q.instant() if instant else q.range()


def value_mapping(*texts: tuple[str, str]) -> list[m.ValueMapping]:
    """Values 0, 1, ... shown as `text` in `color`, in that order."""
    return [
        m.ValueMap(
            options={
                str(i): m.ValueMappingResult(text=text, color=color, index=i)
                for i, (text, color) in enumerate(texts)
            }
        )
    ]


def steps(*levels: tuple[float | None, str]) -> sdk.ThresholdsConfig:
    return (
        sdk.ThresholdsConfig()
        .mode(m.ThresholdsMode.ABSOLUTE)
        .steps([m.Threshold(value=v, color=color) for v, color in levels])
    )


def colors(mode: m.FieldColorModeId) -> sdk.FieldColor:
    return sdk.FieldColor().mode(mode)


# a 0/1/2 severity level shown green / amber / red
LEVELS = value_mapping(("OK", "green"), ("WARNING", "orange"), ("CRITICAL", "red"))
LEVEL_STEPS = ((None, "green"), (1, "orange"), (2, "red"))
UP_DOWN = value_mapping(("down", "red"), ("up", "green"))
FAILED_OK = value_mapping(("failed", "red"), ("ok", "green"))


def _dashed(p: timeseries.Panel) -> timeseries.Panel:
    """Threshold and limit series (by legend) dashed, unstacked; red critical, orange warning."""
    line = c.LineStyle(fill="dash", dash=[10, 10])
    dashed = [
        m.DynamicConfigValue(id_val="custom.lineStyle", value=line),
        m.DynamicConfigValue(id_val="custom.fillOpacity", value=0),
        m.DynamicConfigValue(id_val="custom.lineWidth", value=2),
        m.DynamicConfigValue(
            id_val="custom.stacking", value=c.StackingConfig(mode=c.StackingMode.NONE, group="A")
        ),
    ]
    p.override_by_regexp("/threshold|limit/", dashed)
    for severity, color in (("critical", "red"), ("warning", "orange")):
        fixed = m.FieldColor(mode=m.FieldColorModeId.FIXED, fixed_color=color)
        p.override_by_regexp(
            f"/{severity}.*(threshold|limit)/", [m.DynamicConfigValue(id_val="color", value=fixed)]
        )
    return p


class Graph(timeseries.Panel):
    """A time series panel that can carry the threshold lines of what it shows."""

    def __init__(self) -> None:
        super().__init__()
        self._dashed = False

    def with_target(self, target: prometheus.Dataquery) -> Self:  # type: ignore[override]
        ref = chr(ord("A") + len(self.build().targets or []))
        return super().with_target(target.ref_id(ref))

    def threshold(self, expr: str, legend: str) -> Self:
        """A dashed line of a threshold series (its legend says warning/critical, threshold or
        limit: that picks its colour)."""
        if not self._dashed:
            _dashed(self)
            self._dashed = True
        return self.with_target(query(expr, legend))

    def levels(self, threshold: str, selector: str, legend: str) -> Self:
        """The warning and critical lines of one threshold series (`selector`: its label
        filter, `legend`: the entity's legend)."""
        for severity in ("warning", "critical"):
            self.threshold(
                f'{threshold}{{{selector}, severity="{severity}"}}',
                f"{legend} {severity} threshold",
            )
        return self


def base(panel: P, title: str, *targets: prometheus.Dataquery, unit: str = "short") -> P:
    """What every panel has: its queries (refIds A, B, ...) on $datasource, a unit, 12 x 8 of
    the grid, colours from the palette over a single green threshold."""
    return (
        panel.title(title)  # type: ignore[attr-defined]
        .datasource(DATASOURCE)
        .targets([t.ref_id(chr(ord("A") + i)) for i, t in enumerate(targets)])
        .unit(unit)
        .span(12)
        .height(8)
        .mappings([])
        .thresholds(steps((None, "green")))
        .color_scheme(colors(m.FieldColorModeId.PALETTE_CLASSIC))
    )


def graph(title: str, *targets: prometheus.Dataquery, unit: str = "short", stack: bool = False):
    """A time series panel: lines, a table legend with the last and max values."""
    stacking = c.StackingMode.NORMAL if stack else c.StackingMode.NONE
    return (
        base(Graph(), title, *targets, unit=unit)
        .draw_style(c.GraphDrawStyle.LINE)
        .line_width(1)
        .fill_opacity(10)
        .show_points(c.VisibilityMode.NEVER)
        .span_nulls(False)
        .stacking(common.StackingConfig().mode(stacking).group("A"))
        .axis_soft_min(0)
        .legend(
            common.VizLegendOptions()
            .display_mode(c.LegendDisplayMode.TABLE)
            .placement(c.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
        .tooltip(
            common.VizTooltipOptions().mode(c.TooltipDisplayMode.MULTI).sort(c.SortOrder.DESCENDING)
        )
    )


def ts(title: str, expr: str, legend: str, unit: str = "short", stack: bool = False) -> Graph:
    return graph(title, query(expr, legend), unit=unit, stack=stack)


def single(title: str, *targets: prometheus.Dataquery, unit: str = "short") -> stat.Panel:
    """A stat panel of the last value of each series."""
    return (
        base(stat.Panel(), title, *targets, unit=unit)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))
        .color_mode(c.BigValueColorMode.VALUE)
        .graph_mode(c.BigValueGraphMode.NONE)
        .text_mode(c.BigValueTextMode.VALUE_AND_NAME)
        .justify_mode(c.BigValueJustifyMode.AUTO)
        .orientation(c.VizOrientation.AUTO)
    )


def colored(p: stat.Panel, *levels: tuple[float | None, str]) -> stat.Panel:
    """A stat panel's background coloured by its value against the levels."""
    return (
        p.thresholds(steps(*levels))
        .color_scheme(colors(m.FieldColorModeId.THRESHOLDS))
        .color_mode(c.BigValueColorMode.BACKGROUND)
    )


LEVEL_HELP = (
    "Worst level over the checks below: OK, WARNING or CRITICAL against the exporter's threshold "
    "series (the ones the shipped alerts compare with)."
)


def stat_levels(title: str, expr: str, legend: str, w: int = 12) -> stat.Panel:
    """A tile per entity: its worst 0/1/2 level as OK / WARNING / CRITICAL."""
    p = single(title, query(expr, legend, instant=True)).description(LEVEL_HELP)
    return colored(p, *LEVEL_STEPS).mappings(LEVELS).span(w).height(6)


def timeline(title: str, expr: str, legend: str, mappings: list[m.ValueMapping]):
    """A state timeline of a 0/1 series (up, success) with its mapping."""
    return (
        base(statetimeline.Panel(), title, query(expr, legend))
        .mappings(mappings)
        .fill_opacity(80)
        .line_width(0)
        .show_value(c.VisibilityMode.NEVER)
        .merge_values(True)
        .row_height(0.9)
        .legend(
            common.VizLegendOptions()
            .show_legend(True)
            .display_mode(c.LegendDisplayMode.LIST)
            .placement(c.LegendPlacement.BOTTOM)
        )
        .tooltip(
            common.VizTooltipOptions().mode(c.TooltipDisplayMode.SINGLE).sort(c.SortOrder.NONE)
        )
    )


def bars(title: str, expr: str, legend: str) -> bargauge.Panel:
    """Horizontal bars of the last value of each series (a top 10)."""
    return (
        base(bargauge.Panel(), title, query(expr, legend, instant=True))
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))
        .orientation(c.VizOrientation.HORIZONTAL)
        .display_mode(c.BarGaugeDisplayMode.GRADIENT)
        .show_unfilled(True)
    )


def histogram(title: str, expr: str, legend: str, unit: str) -> heatmap.Panel:
    """A heatmap of a Prometheus histogram's buckets (calculated by Prometheus, not Grafana)."""
    heat = query(expr, legend).format(pm.PromQueryFormat.HEATMAP)
    return (
        base(heatmap.Panel(), title, heat, unit=unit)
        .calculate(False)
        .cell_gap(1)
        .color(
            heatmap.HeatmapColorOptions()
            .mode(hm.HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .exponent(0.5)
            .steps(64)
            .fill("dark-orange")
            .reverse(False)
        )
        .y_axis(heatmap.YAxisConfig().unit(unit).axis_placement(c.AxisPlacement.LEFT))
        .rows_frame(heatmap.RowsHeatmapOptions().layout(c.HeatmapCellLayout.AUTO))
        .tooltip(heatmap.HeatmapTooltip().mode(c.TooltipDisplayMode.SINGLE).y_histogram(True))
        .show_legend()
        .filter_values(heatmap.FilterValueRange().le(1e-9))
    )


def grid(title: str, expr: str, unit: str = "short") -> table.Panel:
    """A table of an instant query's series, one row each."""
    rows = query(expr, instant=True).format(pm.PromQueryFormat.TABLE)
    return (
        base(table.Panel(), title, rows, unit=unit)
        .show_header(True)
        .cell_height(c.TableCellHeight.SM)
        .footer(common.TableFooterOptions().show(False))
    )


def organize(exclude: list[str], **options: object) -> m.DataTransformerConfig:
    """Grafana's organize transformation: hide fields, order or rename them. Its options have
    no type in the SDK (a transformation's options are `object`), so they are plain JSON."""
    return m.DataTransformerConfig(
        id_val="organize", options={"excludeByName": dict.fromkeys(exclude, True), **options}
    )
