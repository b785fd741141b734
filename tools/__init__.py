"""Generators of committed files (run from the repository root: `python -m tools.<name>`);
not part of the runbook-exporter package."""
