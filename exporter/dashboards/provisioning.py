"""The data source for each way a dashboard gets into Grafana: an import input, or Grafana's
provisioning files (the SDK builds dashboards, not these)."""

from __future__ import annotations

from typing import Any

INPUT = "DS_PROMETHEUS"


def import_input(doc: dict[str, Any]) -> dict[str, Any]:
    """The dashboard as grafana.com serves one: `__inputs` asks for a Prometheus data source at
    import, and Grafana writes its uid wherever `${DS_PROMETHEUS}` stands, here the `datasource`
    variable's starting value. The SDK's dashboard model has no `__inputs`/`__requires`
    (they belong to the import format, not to the dashboard schema), so they are added here."""
    for v in doc["templating"]["list"]:
        if v["type"] == "datasource":
            v["current"] = {"selected": False, "text": f"${{{INPUT}}}", "value": f"${{{INPUT}}}"}
    head = {
        "__inputs": [
            {
                "name": INPUT,
                "label": "Prometheus",
                "description": "The Prometheus that scrapes runbook-exporter",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "__requires": [
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
        ],
    }
    return head | doc


DASHBOARD_PROVIDER = """\
# Grafana dashboard provider for runbook-exporter (deploy/compose.yaml mounts this directory at
# /etc/grafana/provisioning/dashboards and grafana/dashboards at the path below). Written by
# `runbook-exporter dashboards --provisioning`; edits made in the Grafana UI are not saved back.
apiVersion: 1
providers:
  - name: runbook-exporter
    orgId: 1
    folder: runbook-exporter
    folderUid: runbook-exporter
    type: file
    disableDeletion: true
    allowUiUpdates: false
    updateIntervalSeconds: 30
    options:
      path: /var/lib/grafana/dashboards/runbook-exporter
      foldersFromFilesStructure: false
"""

DATASOURCES = """\
# Grafana data sources for runbook-exporter (deploy/compose.yaml mounts this directory at
# /etc/grafana/provisioning/datasources): edit the URLs for your Prometheus and Alertmanager.
# The dashboards pick the data source through their $datasource variable (the default
# Prometheus data source at first), so another Prometheus-compatible source works as well.
apiVersion: 1
datasources:
  - name: Prometheus
    uid: prometheus
    type: prometheus
    access: proxy
    url: http://prometheus:9090
    isDefault: true
    editable: false
    jsonData:
      # the scrape interval of deploy/prometheus/prometheus.yml: Grafana derives
      # $__rate_interval from it
      timeInterval: 15s
      httpMethod: POST
  - name: Alertmanager
    uid: alertmanager
    type: alertmanager
    access: proxy
    url: http://alertmanager:9093
    editable: false
    jsonData:
      implementation: prometheus
      handleGrafanaManagedAlerts: false
"""

FILES = {
    "provisioning/dashboards/runbook-exporter.yml": DASHBOARD_PROVIDER,
    "provisioning/datasources/prometheus.yml": DATASOURCES,
}
