"""The shipped alert rules: one definition per alert (exporter/rules/groups/), rendered for the
user's Prometheus by `render(Options(...))` or `runbook-exporter rules`."""

from __future__ import annotations

from exporter.rules.render import (
    DEFAULT_JOB_SELECTOR,
    Options,
    RulesOptionError,
    areas,
    job_selector_for,
    render,
)

__all__ = [
    "DEFAULT_JOB_SELECTOR",
    "Options",
    "RulesOptionError",
    "areas",
    "job_selector_for",
    "render",
]
