"""Metric specifications: one declaration per metric, used to build families and the docs.

Every metric the exporter serves is declared once with `spec(...)` next to the code that feeds
it. The declaration builds fresh metric families for each collection run and is the source of
docs/metrics.md, so the reference cannot drift from the code (tests/test_metrics_reference.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

Kind = Literal["gauge", "counter", "histogram", "info"]

SPECS: dict[str, MetricSpec] = {}


@dataclass(frozen=True)
class MetricSpec:
    name: str  # without the _total / _info suffix that client_python appends
    kind: Kind
    help: str
    labels: tuple[str, ...]
    source: str  # module that feeds it, for the reference

    @property
    def exposed_name(self) -> str:
        """The name as it appears in the text exposition (the sample name for counters)."""
        if self.kind == "counter":
            return f"{self.name}_total"
        if self.kind == "info":
            return f"{self.name}_info"
        return self.name

    def family(self) -> Metric:
        if self.kind == "gauge":
            return GaugeMetricFamily(self.name, self.help, labels=self.labels)
        if self.kind == "counter":
            return CounterMetricFamily(self.name, self.help, labels=self.labels)
        if self.kind == "histogram":
            return HistogramMetricFamily(self.name, self.help, labels=self.labels)
        return InfoMetricFamily(self.name, self.help, labels=self.labels)

    def one(self, value: float, *labelvalues: str) -> Metric:
        """A family holding a single sample: the common case of a per-target gauge."""
        fam = self.family()
        fam.add_metric(list(labelvalues), value)
        return fam


def spec(name: str, kind: Kind, help: str, labels: Sequence[str], source: str) -> MetricSpec:
    s = MetricSpec(name, kind, help, tuple(labels), source)
    if SPECS.get(name, s) != s:
        raise ValueError(f"metric {name} declared twice with different definitions")
    SPECS[name] = s
    return s


# a config field -> the series it becomes: its spec and its `severity` label (None: no label)
Fields = Mapping[str, tuple["MetricSpec", str | None]]


class ThresholdSeries:
    """Configured thresholds as series, so shipped alert rules stay static: a rule compares a
    measured series with the threshold series of the same labels, and an override in the
    config needs no rule edit. Used for the databases' (collectors/thresholds.py) and the
    endpoints' (probes/thresholds.py).

    Built from field mappings; the families come out in the order their specs first appear
    in them, each sample as its field does for each `add`."""

    def __init__(self, *mappings: Fields) -> None:
        self._families = {s: s.family() for m in mappings for s, _ in m.values()}

    def add(self, model: object, fields: Fields, *labels: str) -> None:
        """One sample per field of `model` (a config model), labelled `labels` + severity."""
        for field, (spec, severity) in fields.items():
            value = getattr(model, field)
            if value is None:  # a setting this model has not (a library preset's max_retries)
                continue
            values = [*labels, severity] if severity else list(labels)
            self._families[spec].add_metric(values, value)

    def families(self) -> list[Metric]:
        return [f for f in self._families.values() if f.samples]


def merge(families: Iterable[Metric]) -> list[Metric]:
    """Merge families of the same name (one per target or endpoint) into one family each.

    The text format allows one HELP/TYPE block per name, so the samples of every target's
    `runbook_queue_jobs` must be served under a single family.
    """
    merged: dict[str, Metric] = {}
    for fam in families:
        have = merged.get(fam.name)
        if have is None:
            copy = Metric(fam.name, fam.documentation, fam.type, fam.unit)
            copy.samples = list(fam.samples)
            merged[fam.name] = copy
        else:
            have.samples.extend(fam.samples)
    return list(merged.values())


def load_all_specs() -> dict[str, MetricSpec]:
    """Every declared metric (for docs and tests): the sources' (their modules are found by
    the registry) and the runtime's own."""
    import importlib

    # by name, not an import statement: both modules import this one
    importlib.import_module("exporter.runtime")  # self-metrics, the threshold series
    importlib.import_module("exporter.sources").discover()
    return dict(sorted(SPECS.items()))
