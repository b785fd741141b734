"""runbook-exporter: Prometheus exporter for job queues, PostgreSQL health and app endpoints."""

__version__ = "0.1.0"
