"""What a render of the dashboards can change, checked."""

from __future__ import annotations

import re
from dataclasses import dataclass

from exporter.shipped import RUNBOOK_URL_BASE

# the exporter's own scrape job, as the shipped exporter alerts select it by default
DEFAULT_JOB_SELECTOR = 'job=~".*runbook.*"'
URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://\S+$")
MATCHERS = re.compile(r'^\s*[a-zA-Z_]\w*\s*(=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*$')


class DashboardsOptionError(ValueError):
    """An option the dashboards cannot be rendered with; the message names option and value."""


@dataclass(frozen=True)
class Options:
    runbook_url_base: str = RUNBOOK_URL_BASE  # links are <base><AlertName>.md
    provisioning: bool = False  # provisioning files, dashboards without the import input
    job_selector: str = DEFAULT_JOB_SELECTOR  # the exporter's scrape job (overview panels)


def check(o: Options) -> None:
    if not URL.match(o.runbook_url_base):
        raise DashboardsOptionError(
            f"--runbook-url-base: {o.runbook_url_base!r} is not a URL (scheme://...)"
        )
    if not MATCHERS.match(o.job_selector):
        raise DashboardsOptionError(
            f'--job-selector: {o.job_selector!r} is not one label matcher like job="name"'
        )
