"""Every rule group, in the order they are rendered (one module per group)."""

from __future__ import annotations

from exporter.rules.groups import (
    app_pool,
    app_reported,
    backups,
    cron,
    endpoints,
    exporter,
    host,
    pgbouncer,
    pgnet,
    postgres,
    queues,
    retention,
    slo,
)
from exporter.rules.model import Group

GROUPS: tuple[Group, ...] = tuple(
    m.GROUP
    for m in (
        app_pool,
        app_reported,
        backups,
        cron,
        endpoints,
        exporter,
        host,
        pgbouncer,
        pgnet,
        postgres,
        queues,
        retention,
        slo,
    )
)
