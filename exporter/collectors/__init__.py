"""Database collectors, one module each, the SQL beside the metrics it feeds.

Every module defines `NAME` and `async def collect(conn, target, settings) -> list[Metric]`,
where `conn` is the target's open psycopg AsyncConnection (autocommit, read-only, with
statement_timeout and lock_timeout set) and `settings` is the collector's config section.
A collector raises on failure; the scheduler records it and drops that collector's series.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client.core import Metric

# the order is the order in which a target's collectors first run
DB_COLLECTORS = ("connections", "database", "queues", "tables", "statements")

CollectFn = Callable[[Any, Any, Any], Awaitable[list[Metric]]]


def get(name: str) -> CollectFn:
    return importlib.import_module(f"exporter.collectors.{name}").collect
