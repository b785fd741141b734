"""The shape of a rule definition: one `Alert` per alert name, its severities as `Variant`s.

Texts are written as in the YAML they render to: `summary`, `description` (and the `why` and
`about` comments) may break over indented lines, folded into one (`fold`); a multi-line `expr`
is indented under its keyword and kept line by line (`block`).

Texts are templates: `${name}` is replaced when rendering by a variant's own value (its
threshold, its wording) or by one of the renderer's: `${severity}`, `${for}` (the variant's
`for:` in words, so an override keeps the text true), `${job}` (the selector of the exporter's
scrape job) and `${job_match}` (that selector in words). A variant's values may use the
renderer's. Everything else, Go templates and PromQL included, is left as written.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["critical", "warning", "info"]
# The exporter's scrape job by default: any job with "runbook" in its name (the job
# runbook-exporter of deploy/prometheus, the demo and the Kubernetes ServiceMonitor), as the
# rules have always selected it.
DEFAULT_JOB_SELECTOR = 'job=~".*runbook.*"'
PLACEHOLDER = re.compile(r"\$\{(\w+)\}")
UNITS = {"y": "year", "w": "week", "d": "day", "h": "hour", "m": "minute", "s": "second"}
UNITS["ms"] = "millisecond"


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


def fold(text: str) -> str:
    """A summary, description or comment as written in a definition: its line breaks and their
    indentation are single spaces, as in a YAML folded (`>-`) block."""
    return re.sub(r"\s*\n\s*", " ", text.strip())


def block(text: str) -> str:
    """An expression as written in a definition: a multi-line one indented under its `expr=`,
    kept line by line without that indentation (a YAML `|` block); a one-line one as is."""
    if "\n" not in text:
        return text
    return textwrap.dedent(text).strip("\n") + "\n"


def fill(template: str, values: Mapping[str, str], where: str) -> str:
    """`template` with every ${name} replaced; an unknown name is a bug in a definition."""

    def one(m: re.Match[str]) -> str:
        try:
            return values[m.group(1)]
        except KeyError:
            raise KeyError(f"{where}: no value for ${{{m.group(1)}}}") from None

    return PLACEHOLDER.sub(one, template)


def duration_words(d: str) -> str:
    """`10m` -> "10 minutes", `1h30m` -> "1 hour 30 minutes": the `for:` in the texts."""
    parts = re.findall(r"(\d+)(ms|[ywdhms])", d)
    return " ".join(f"{n} {UNITS[u]}{'' if n == '1' else 's'}" for n, u in parts) or d
