"""The configurations bench/compare runs each exporter with: runbook-exporter's YAML, the
user's queue SQL for postgres_exporter (its --extend.query-path file) and blackbox_exporter's
module."""

from __future__ import annotations

from pathlib import Path

import yaml

QUEUE = {
    "name": "jobs",
    "table": "public.jobs",
    "statuses": {
        "pending": "pending",
        "processing": "processing",
        "completed": "completed",
        "failed": "failed",
        "dead": "dead",
    },
    "retry_count_column": "retry_count",
    "max_retries": 3,
    "stuck_after": "30m",
    "recent_window": "5m",
    "count_terminal": "estimate",
}


def runbook_main(dsn: str, interval: float) -> dict:
    """One target, the jobs queue, every default collector: what postgres_exporter is
    compared with."""
    return {
        "targets": [
            {"name": "bench", "dsn": dsn, "collect_interval": f"{interval:g}s", "queues": [QUEUE]}
        ]
    }


def runbook_footprint(
    dsn: str, interval: float, queues: list[str], endpoints: list[tuple[str, str]], every: float
) -> dict:
    """The issue's footprint setup: 3 targets, 5 queues (2 + 2 + 1), the endpoints given."""
    split = [queues[0:2], queues[2:4], queues[4:]]
    return {
        "targets": [
            {
                "name": f"t{i + 1}",
                "dsn": dsn,
                "collect_interval": f"{interval:g}s",
                "queues": [{**QUEUE, "name": q, "table": f"public.{q}"} for q in names],
            }
            for i, names in enumerate(split)
        ],
        "apps": [
            {
                "name": "bench",
                "defaults": {"interval": f"{every:g}s", "timeout": f"{min(2.0, every * 0.8):g}s"},
                "endpoints": [{"name": name, "url": url} for name, url in endpoints],
            }
        ],
    }


# What a user of postgres_exporter writes for the same queue: the status counts and the oldest
# pending job, in its extend.query-path format (a metric per column, LABEL or GAUGE usage).
PGX_QUEUE_QUERIES = {
    "jobs": {
        "query": "SELECT status, count(*) AS count FROM jobs GROUP BY status",
        "metrics": [
            {"status": {"usage": "LABEL", "description": "Job status"}},
            {"count": {"usage": "GAUGE", "description": "Jobs by status"}},
        ],
    },
    "jobs_oldest_pending": {
        "query": "SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age_seconds"
        " FROM jobs WHERE status = 'pending'",
        "metrics": [
            {"age_seconds": {"usage": "GAUGE", "description": "Age of the oldest pending job"}}
        ],
    },
}

BLACKBOX = {"modules": {"http_2xx": {"prober": "http", "timeout": "5s"}}}


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
