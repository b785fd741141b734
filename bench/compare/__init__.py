"""bench/compare: runbook-exporter side by side with postgres_exporter and blackbox_exporter
(`python -m bench.compare [--smoke]`, see run.py)."""
