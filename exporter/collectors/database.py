"""pg_stat_database of the target's database: transactions, deadlocks, conflicts, size."""

from __future__ import annotations

from prometheus_client.core import Metric

from exporter.metrics import spec
from exporter.sources import Collector

SRC = "collectors/database.py"

SQL = """
SELECT xact_commit, xact_rollback, deadlocks, conflicts,
       pg_database_size(datid) AS size_bytes
FROM pg_stat_database
WHERE datname = current_database()
"""

COMMITS = spec(
    "runbook_pg_xact_commit",
    "counter",
    "Transactions committed in the target database.",
    ("target",),
    SRC,
)
ROLLBACKS = spec(
    "runbook_pg_xact_rollback",
    "counter",
    "Transactions rolled back in the target database (errors and explicit rollbacks).",
    ("target",),
    SRC,
)
DEADLOCKS = spec(
    "runbook_pg_deadlocks",
    "counter",
    "Deadlocks detected in the target database.",
    ("target",),
    SRC,
)
CONFLICTS = spec(
    "runbook_pg_conflicts",
    "counter",
    "Queries cancelled by recovery conflicts (standbys only).",
    ("target",),
    SRC,
)
SIZE = spec(
    "runbook_pg_database_size_bytes",
    "gauge",
    "Disk space used by the target database.",
    ("target",),
    SRC,
)


class Database(Collector):
    name = "database"
    first_run = 20

    async def collect(self, conn) -> list[Metric]:
        cur = await conn.execute(SQL)
        commit, rollback, deadlocks, conflicts, size = await cur.fetchone()
        t = self.target.name
        return [
            COMMITS.one(commit, t),
            ROLLBACKS.one(rollback, t),
            DEADLOCKS.one(deadlocks, t),
            CONFLICTS.one(conflicts, t),
            SIZE.one(size, t),
        ]
