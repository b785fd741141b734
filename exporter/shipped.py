"""What the package ships beside the code, and where it points."""

from __future__ import annotations

# Where every alert's runbook_url points by default: <base><AlertName>.md. One constant for
# the rules and the dashboards' links; `runbook-exporter rules --runbook-url-base` changes it.
RUNBOOK_URL_BASE = "https://github.com/runbook-exporter/runbook-exporter/blob/main/docs/runbooks/"
