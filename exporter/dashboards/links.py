"""Which runbooks a panel links to: the shipped alerts about the series it shows.

An alert is about a panel when it compares with one of the panel's threshold series or, for a
panel without threshold lines, when it uses one of the panel's series (recording rules expanded
into the series they are computed from). Host alerts on node_exporter's series have no panel.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import yaml

# The series names a PromQL expression of ours selects. A regex instead of a PromQL parser keeps
# `runbook-exporter dashboards` free of a compiled dependency; it suffices because the links
# compare only the exporter's series (runbook_*), recording rules' (level:metric:operations,
# the only names with a colon) and the scrape's, once strings (label values, where such names
# could appear as text) are removed. tests/test_dashboards.py checks it against promql-parser
# on every panel and rule expression.
STRING = re.compile(r'"(?:[^"\\]|\\.)*"' + r"|'(?:[^'\\]|\\.)*'" + r"|`[^`]*`")
NAME = re.compile(r"(?<![\w:.])[a-zA-Z_][\w:]*")  # not inside a number or duration
SCRAPE = {"up", "scrape_duration_seconds", "scrape_timeout_seconds"}


def expr_metrics(expr: str) -> set[str]:
    """Names of the exporter's, the recording rules' and the scrape's series an expression
    selects."""
    names = set(NAME.findall(STRING.sub('""', expr)))
    return {n for n in names if n.startswith("runbook_") or ":" in n or n in SCRAPE}


def load_alerts(rule_files: Iterable[str]) -> dict[str, set[str]]:
    """Alert name -> the series its expressions use (all its rules together), with recording
    rules replaced by the series they are computed from."""
    records: dict[str, set[str]] = {}
    alerts: dict[str, set[str]] = {}
    for text in rule_files:
        doc = yaml.safe_load(text) or {}
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


def alerts_about(used: set[str], alerts: dict[str, set[str]]) -> list[str]:
    """The alerts about a panel whose queries use the series `used` (sorted)."""
    thresholds = {m for m in used if is_threshold(m)}
    own = used - thresholds
    names = set()
    for alert, ms in alerts.items():
        if thresholds and any(is_threshold(m) for m in ms):
            if ms & thresholds:
                names.add(alert)
        elif ms & own:
            names.add(alert)
    return sorted(names)
