"""Render the alert rule definitions (exporter/rules/groups/) for one Prometheus setup.

`render(Options(...))` returns {relative file name: text}: one `<area>.rules.yml` per group (or
one `prometheusrule.yaml` with a PrometheusRule object per group) and, with `tests`, the promtool
unit tests under `tests/`, rendered with the same job, runbook URLs and labels so that
`promtool test rules tests/*.test.yml` checks exactly the rules written. Bad options raise
RulesOptionError with a message naming the option and value.
"""

from __future__ import annotations

import difflib
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

import yaml

from exporter.rules.groups import GROUPS
from exporter.rules.model import (
    DEFAULT_JOB_SELECTOR,
    Alert,
    Group,
    Record,
    Variant,
    block,
    duration_words,
    fill,
    fold,
)
from exporter.shipped import RUNBOOK_URL_BASE

DEFAULT_TEST_JOB = "runbook-exporter"
RESERVED_LABELS = {"severity", "long_window", "alertname"}  # set by the rules themselves
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
MATCHER = r'\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*'
SELECTOR = re.compile(rf"^{MATCHER}(?:,{MATCHER})*,?\s*$")
DURATION = re.compile(r"^(?:\d+y)?(?:\d+w)?(?:\d+d)?(?:\d+h)?(?:\d+m)?(?:\d+s)?(?:\d+ms)?$")
URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://\S+$")

Format = Literal["files", "prometheusrule"]


class RulesOptionError(ValueError):
    """An option the rules cannot be rendered with; the message names option and value."""


@dataclass(frozen=True)
class Options:
    job_selector: str = DEFAULT_JOB_SELECTOR
    runbook_url_base: str = RUNBOOK_URL_BASE
    extra_labels: Mapping[str, str] = field(default_factory=dict)
    groups: Sequence[str] | None = None  # areas to include (None: all)
    exclude_groups: Sequence[str] = ()
    # "AlertName" (every severity) or "AlertName:severity" -> Prometheus duration
    for_overrides: Mapping[str, str] = field(default_factory=dict)
    format: Format = "files"
    tests: bool = False


def job_selector_for(job: str) -> str:
    """The selector of exactly the scrape job `job`."""
    return f'job="{_promql_string(job)}"'


def render(options: Options | None = None) -> dict[str, str]:
    options = options or Options()
    groups = selected_groups(options)
    overrides = _for_overrides(options.for_overrides, groups)
    ctx = _Context(options, overrides)
    out: dict[str, str] = {}
    if options.format == "prometheusrule":
        if options.tests:
            raise RulesOptionError(
                "--tests: the promtool tests run on rule files; render them with --format files"
            )
        out["prometheusrule.yaml"] = _prometheus_rule(groups, ctx)
        return out
    if options.format != "files":
        raise RulesOptionError(f"--format: {options.format!r} is not files or prometheusrule")
    for g in groups:
        out[f"{g.area}.rules.yml"] = _rule_file(g, ctx)
    if options.tests:
        test_job = _test_job(options.job_selector)
        for g in groups:
            text = _test_file(g, ctx, test_job)
            if text is not None:
                out[f"tests/{g.area}.test.yml"] = text
    return out


def areas() -> list[str]:
    return [g.area for g in GROUPS]


def selected_groups(options: Options) -> list[Group]:
    known = areas()
    if isinstance(options.groups, str) or isinstance(options.exclude_groups, str):
        raise RulesOptionError("--groups/--exclude-groups: give a list of names, not one string")
    for opt, names in (
        ("--groups", options.groups or ()),
        ("--exclude-groups", options.exclude_groups),
    ):
        unknown = [n for n in names if n not in known]
        if unknown:
            names = ", ".join(map(repr, unknown))
            raise RulesOptionError(f"{opt}: no group {names}; the groups are {', '.join(known)}")
    chosen = [
        g
        for g in GROUPS
        if (options.groups is None or g.area in options.groups)
        and g.area not in options.exclude_groups
    ]
    if not chosen:
        raise RulesOptionError("--groups/--exclude-groups: that leaves no group to render")
    return chosen


# --- options into values ---------------------------------------------------------------------


class _Context:
    def __init__(self, options: Options, overrides: dict[tuple[str, str | None], str]) -> None:
        self.options = options
        self.overrides = overrides
        self.job = _job_selector(options.job_selector)
        self.job_match = _job_match(self.job)
        self.labels = _extra_labels(options.extra_labels)
        self.url_base = _url_base(options.runbook_url_base)

    def runbook_url(self, alert: str) -> str:
        if "{alert}" in self.url_base:
            return self.url_base.replace("{alert}", alert)
        return f"{self.url_base}{alert}.md"

    def for_of(self, alert: str, v: Variant) -> str:
        return self.overrides.get((alert, v.severity), self.overrides.get((alert, None), v.for_))


def _promql_string(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


def _job_selector(sel: str) -> str:
    sel = sel.strip()
    if not SELECTOR.match(sel):
        raise RulesOptionError(
            f"--job-selector: {sel!r} is not a list of label matchers such as "
            'job="runbook-exporter" or job=~".*runbook.*"'
        )
    return sel


def _job_match(sel: str) -> str:
    """The selector in words, for the alert that fires when no such target exists."""
    m = re.fullmatch(r'job\s*(=~|=)\s*"((?:[^"\\]|\\.)*)"', sel)
    if m:
        return f"whose job {'matches' if m.group(1) == '=~' else 'is'} {m.group(2)}"
    return f"matching {{{sel}}}"


def _test_job(sel: str) -> str:
    """The job name the promtool tests give the exporter's series under selector `sel`."""
    if sel == DEFAULT_JOB_SELECTOR:
        return DEFAULT_TEST_JOB
    m = re.fullmatch(r'job\s*=\s*"([\w.:-]+)"', sel)
    if not m:
        raise RulesOptionError(
            f"--tests: the tests need one concrete job name and {sel!r} is not one; "
            "use --job NAME (letters, digits, _ . : -)"
        )
    return m.group(1)


def _extra_labels(labels: Mapping[str, str]) -> dict[str, str]:
    for name, value in labels.items():
        if not LABEL_NAME.match(name) or name.startswith("__"):
            raise RulesOptionError(
                f"--label: {name!r} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)"
            )
        if name in RESERVED_LABELS:
            raise RulesOptionError(f"--label: {name} is set by the rules themselves")
        if not isinstance(value, str):
            raise RulesOptionError(f"--label: the value of {name} must be a string")
    return dict(labels)


def _url_base(base: str) -> str:
    if not URL.match(base):
        raise RulesOptionError(
            f"--runbook-url-base: {base!r} is not a URL (https://host/path/, "
            "or with {alert} where the alert name goes)"
        )
    if "{alert}" in base or base.endswith(("/", "=")):
        return base
    return base + "/"


def _for_overrides(
    raw: Mapping[str, str], groups: list[Group]
) -> dict[tuple[str, str | None], str]:
    alerts = {a.name: a for g in GROUPS for a in g.alerts()}
    rendered = {a.name for g in groups for a in g.alerts()}
    out: dict[tuple[str, str | None], str] = {}
    for key, dur in raw.items():
        name, _, sev = key.partition(":")
        if name not in alerts:
            close = difflib.get_close_matches(name, alerts, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise RulesOptionError(f"--for: no alert {name!r}{hint}")
        if name not in rendered:
            raise RulesOptionError(f"--for: {name} is in a group left out of this render")
        sevs = {v.severity for v in alerts[name].variants}
        if sev and sev not in sevs:
            raise RulesOptionError(
                f"--for: {name} has no severity {sev!r} (it has {', '.join(sorted(sevs))})"
            )
        if not dur or not DURATION.match(dur):
            raise RulesOptionError(
                f"--for: {key}={dur!r} is not a Prometheus duration such as 5m, 1h30m, 0m"
            )
        out[(name, sev or None)] = dur
    return out


# --- definitions into rules --------------------------------------------------------------------


def _alert_rules(a: Alert, ctx: _Context) -> list[dict[str, Any]]:
    out = []
    for v in a.variants:
        for_ = ctx.for_of(a.name, v)
        where = f"{a.name} ({v.severity})"
        values = {
            "job": ctx.job,
            "job_match": ctx.job_match,
            "severity": v.severity,
            "for": duration_words(for_),
        }
        # a variant's own values may use the renderer's (its wording says "for ${for}")
        values.update({k: fill(t, values, where) for k, t in v.values.items()})
        out.append(
            {
                "alert": a.name,
                "expr": _expr(fill(block(a.expr), values, where)),
                "for": for_,
                "labels": {"severity": v.severity, **v.labels, **ctx.labels},
                "annotations": {
                    "summary": _Quoted(fill(fold(a.summary), values, where)),
                    "description": _Folded(fill(fold(a.description), values, where)),
                    "runbook_url": ctx.runbook_url(a.name),
                },
            }
        )
    return out


def _expr(text: str) -> str:
    # a placeholder filled with nothing (the burn-rate tickets' missing clause) leaves no blank
    return text.rstrip() + "\n" if "\n" in text else text


def _record_rule(r: Record, ctx: _Context) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "record": r.name,
        "expr": _expr(fill(block(r.expr), {"job": ctx.job}, r.name)),
    }
    if r.labels:
        rule["labels"] = dict(r.labels)
    return rule


def group_rules(g: Group, ctx: _Context) -> list[tuple[str, dict[str, Any]]]:
    """(comment, rule) of every rule of `g`, in order."""
    out: list[tuple[str, dict[str, Any]]] = []
    for r in g.rules:
        if isinstance(r, Record):
            out.append((fold(r.why), _record_rule(r, ctx)))
        else:
            for i, rule in enumerate(_alert_rules(r, ctx)):
                out.append((fold(r.why) if i == 0 else "", rule))
    return out


# --- YAML ----------------------------------------------------------------------------------------


class _Folded(str):
    """A description: written folded (`>-`), one paragraph over several lines."""


class _Quoted(str):
    """A summary: written double-quoted (it starts with a template more often than not)."""


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        # lists indented under their key, as the rule files were always written
        super().increase_indent(flow, False)

    def write_double_quoted(self, text: str, split: bool = True) -> None:
        # a summary is one line: never folded with a backslash continuation
        super().write_double_quoted(text, split=False)


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


def _folded(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(data), style=">")


def _quoted(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(data), style='"')


_Dumper.add_representer(str, _str)
_Dumper.add_representer(_Folded, _folded)
_Dumper.add_representer(_Quoted, _quoted)


def _dump(data: Any, width: int = 100) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=width, allow_unicode=True)


def _comment(text: str, indent: str) -> str:
    width = 98 - len(indent)
    lines = textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False)
    return "".join(f"{indent}# {ln}\n" for ln in lines)


HEADER = (
    "Rendered by `runbook-exporter rules` from its alert definitions "
    "(exporter/rules/{where}): do not edit, render again with your options "
    "(docs/alerts.md)."
)


def _rule_file(g: Group, ctx: _Context) -> str:
    text = _comment(HEADER.format(where=f"groups/{g.area.replace('-', '_')}.py"), "")
    text += _comment(fill(fold(g.about), {"job": ctx.job}, g.area), "")
    return text + "groups:\n" + _group(g, ctx)


def _group(g: Group, ctx: _Context) -> str:
    """The group as an item of a rule file's `groups:`."""
    text = f"  - name: {g.name}\n    rules:\n"
    previous = None
    for why, rule in group_rules(g, ctx):
        name = rule.get("alert") or rule.get("record")
        # a blank line between alerts, none between the severities of one alert
        if previous is not None and name != previous and ("alert" in rule or why):
            text += "\n"
        previous = name
        text += _comment(why, " " * 6)
        text += "".join(f"      {ln}\n" for ln in _dump([rule], width=94).splitlines())
    return text


def render_one(options: Options | None = None) -> str:
    """The render as one text: every group in one rule file, or the PrometheusRule objects."""
    options = options or Options()
    if options.tests:
        raise RulesOptionError("--tests: the tests are files beside the rules; use --output DIR")
    if options.format == "prometheusrule":
        return render(options)["prometheusrule.yaml"]
    render(options)  # the options' errors, in one place
    groups = selected_groups(options)
    ctx = _Context(options, _for_overrides(options.for_overrides, groups))
    text = _comment(HEADER.format(where="groups/"), "") + "groups:\n"
    for g in groups:
        text += _comment(fill(fold(g.about), {"job": ctx.job}, g.area), "  ")
        text += _group(g, ctx)
    return text


def _prometheus_rule(groups: list[Group], ctx: _Context) -> str:
    docs = []
    for g in groups:
        docs.append(
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "PrometheusRule",
                "metadata": {
                    "name": f"runbook-exporter-{g.area}",
                    "labels": {
                        "app.kubernetes.io/name": "runbook-exporter",
                        "app.kubernetes.io/component": "alert-rules",
                    },
                },
                "spec": {
                    "groups": [{"name": g.name, "rules": [r for _, r in group_rules(g, ctx)]}]
                },
            }
        )
    header = _comment(HEADER.format(where="groups/"), "") + _comment(
        "Needs the Prometheus Operator (monitoring.coreos.com CRDs). Your Prometheus must select "
        "these objects: add the labels its ruleSelector asks for (kube-prometheus-stack: "
        "release: <helm release name>). One object per group, so you can delete the ones you "
        f"do not want. The exporter's own alerts select its scrape job by {ctx.job}.",
        "",
    )
    body = yaml.dump_all(
        docs, Dumper=_Dumper, sort_keys=False, width=100, explicit_start=True, allow_unicode=True
    )
    return header + body


# --- the promtool tests ------------------------------------------------------------------------


def test_source(area: str) -> str:
    return (resources.files("exporter.rules") / "tests" / f"{area}.test.yml").read_text()


def _test_file(g: Group, ctx: _Context, test_job: str) -> str | None:
    """The group's promtool tests for this render, or None when none is left.

    The sources name the job, its description and the absent alert's labels with ${...}; runbook
    URLs and labels are the defaults', rewritten here when the render's differ. A test of an
    alert whose `for:` was overridden checks the shipped timing: it is left out."""
    equality = ctx.job.startswith("job=") and not ctx.job.startswith("job=~")
    text = fill(
        test_source(g.area),
        {
            "job_name": test_job,
            "job_match": ctx.job_match,
            # absent(up{job="x"}) carries job="x"; absent of a regex matcher carries nothing
            "absent_job_label": f", job: {test_job}" if equality else "",
        },
        f"tests/{g.area}.test.yml",
    )
    overridden = {name for name, _ in ctx.overrides}
    if ctx.url_base == RUNBOOK_URL_BASE and not ctx.labels and not overridden:
        return text  # the default: the source with its comments
    doc = yaml.safe_load(text)
    cases = []
    for case in doc.get("tests") or []:
        kept = [t for t in case.get("alert_rule_test") or [] if t["alertname"] not in overridden]
        for t in kept:
            for exp in t.get("exp_alerts") or []:
                exp["exp_labels"] = {**(exp.get("exp_labels") or {}), **ctx.labels}
                ann = exp.get("exp_annotations")
                if ann and "runbook_url" in ann:
                    ann["runbook_url"] = ctx.runbook_url(t["alertname"])
        if case.get("alert_rule_test"):
            if not kept and not case.get("promql_expr_test"):
                continue
            case["alert_rule_test"] = kept
        cases.append(case)
    if not cases:
        return None
    doc["tests"] = cases
    return _dump(doc)
