"""The shape of a rule definition: one `Alert` per alert name, its severities as `Variant`s.

Texts (expr, summary, description) are templates: `${name}` is replaced when rendering by a
variant's own value (its threshold, its wording) or by one of the renderer's:
`${severity}`, `${for}` (the variant's `for:` in words, so an override keeps the text true),
`${job}` (the selector of the exporter's scrape job) and `${job_match}` (that selector in words).
Everything else, Go templates and PromQL included, is left as written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["critical", "warning", "info"]
# The exporter's scrape job by default: any job with "runbook" in its name (the job
# runbook-exporter of deploy/prometheus, the demo and the Kubernetes ServiceMonitor), as the
# rules have always selected it.
DEFAULT_JOB_SELECTOR = 'job=~".*runbook.*"'
PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


@dataclass(frozen=True)
class Variant:
    """One severity of an alert: its `for:`, extra labels and the values of its placeholders."""

    severity: Severity
    for_: str
    labels: Mapping[str, str] = field(default_factory=dict)
    values: Mapping[str, str] = field(default_factory=dict)


def critical(for_: str, labels: Mapping[str, str] | None = None, **values: str) -> Variant:
    return Variant("critical", for_, labels or {}, values)


def warning(for_: str, labels: Mapping[str, str] | None = None, **values: str) -> Variant:
    return Variant("warning", for_, labels or {}, values)


def info(for_: str, labels: Mapping[str, str] | None = None, **values: str) -> Variant:
    return Variant("info", for_, labels or {}, values)


@dataclass(frozen=True)
class Alert:
    """An alert and all its severities: one rule per variant, in the order given."""

    name: str
    expr: str
    summary: str
    description: str
    variants: tuple[Variant, ...]
    why: str = ""  # a comment on the expression, written above the rule in the rule file


@dataclass(frozen=True)
class Record:
    name: str
    expr: str
    labels: Mapping[str, str] = field(default_factory=dict)
    why: str = ""


@dataclass(frozen=True)
class Group:
    """One rule group, rendered as `<area>.rules.yml` (or one PrometheusRule object)."""

    area: str
    name: str
    about: str  # the rendered file's header comment
    rules: tuple[Alert | Record, ...]

    def alerts(self) -> list[Alert]:
        return [r for r in self.rules if isinstance(r, Alert)]


def fill(template: str, values: Mapping[str, str], where: str) -> str:
    """`template` with every ${name} replaced; an unknown name is a bug in a definition."""

    def one(m: re.Match[str]) -> str:
        try:
            return values[m.group(1)]
        except KeyError:
            raise KeyError(f"{where}: no value for ${{{m.group(1)}}}") from None

    return PLACEHOLDER.sub(one, template)
