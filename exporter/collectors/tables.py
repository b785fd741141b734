"""Table health of the target database (runbook 002's weekly checks, continuously): dead tuples,
size and vacuum/analyze ages of the largest user tables, unused and invalid indexes.

Only the top N tables by total size get series, so cardinality is bounded by the config and
not by the schema. All of it comes from the cumulative statistics system: pg_stat_reset() (or
a crash) zeroes n_dead_tup and idx_scan and forgets last_vacuum / last_analyze, so right after
a reset every non-unique index looks unused and vacuum ages are absent until the next run.
"""

from __future__ import annotations

import logging

import psycopg
from prometheus_client.core import Metric
from pydantic import Field

from exporter.configtypes import Duration
from exporter.db import savepoint
from exporter.metrics import spec
from exporter.sources import Collector, CollectorSettings

SRC = "collectors/tables.py"
TT = ("target", "schema", "table")
T = ("target",)

log = logging.getLogger("exporter.collectors.tables")

# relations another session holds or awaits in ACCESS EXCLUSIVE mode, in this database
LOCKED = """
WITH locked AS (
  SELECT DISTINCT l.relation
  FROM pg_locks l
  WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock'
    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
)"""

# Ranking is lock-free and O(tables) over the catalog only: pg_class.relpages of the heap, its
# TOAST table and its indexes (kept by VACUUM, ANALYZE and CREATE INDEX; a table none of them
# visited yet is sized directly on PostgreSQL 14+, and ranks by 0 on 13). Only the top N are
# then sized exactly with pg_total_relation_size, which opens the table and its indexes under
# AccessShareLock: a table, TOAST table or index that another session holds in ACCESS
# EXCLUSIVE mode (ALTER TABLE, VACUUM FULL, REINDEX, LOCK TABLE) -- or waits for, since our
# request would queue behind that one -- is not sized; its size series is left out, its other
# series (from the statistics, which take no lock) are served, and it is counted in
# runbook_pg_tables_size_skipped. pg_locks is read once, only for this database.
# Temporary tables are left out: they belong to one session and would only churn labels.
TABLES_SQL = f"""{LOCKED},
-- tables whose heap, TOAST table or an index is locked
locked_tables AS (
  SELECT relation AS relid FROM locked
  UNION SELECT c.oid FROM pg_class c JOIN locked ON locked.relation = c.reltoastrelid
  UNION SELECT x.indrelid FROM pg_index x JOIN locked ON locked.relation = x.indexrelid
), top AS (
  SELECT s.relid, s.schemaname, s.relname, s.n_live_tup, s.n_dead_tup,
         greatest(s.last_vacuum, s.last_autovacuum) AS vacuumed,
         greatest(s.last_analyze, s.last_autoanalyze) AS analyzed,
         s.relid IN (SELECT relid FROM locked_tables) AS is_locked,
         CASE
           -- never vacuumed nor analyzed (PostgreSQL 14+: reltuples -1): relpages says 0
           -- whatever it holds, so it is sized now (a new table: seldom more than a few)
           WHEN c.reltuples < 0 AND s.relid NOT IN (SELECT relid FROM locked_tables)
             THEN pg_total_relation_size(s.relid) / current_setting('block_size')::bigint
           ELSE c.relpages::bigint + coalesce(t.relpages, 0)
             + coalesce((SELECT sum(i.relpages) FROM pg_index x JOIN pg_class i
                         ON i.oid = x.indexrelid WHERE x.indrelid = s.relid), 0)
         END AS pages
  FROM pg_stat_user_tables s
  JOIN pg_class c ON c.oid = s.relid
  LEFT JOIN pg_class t ON t.oid = c.reltoastrelid
  WHERE s.schemaname !~ '^pg_(toast_)?temp_'
  ORDER BY pages DESC NULLS LAST, s.schemaname, s.relname
  LIMIT %(top_n)s
)
SELECT schemaname, relname, n_live_tup, n_dead_tup,
       CASE WHEN is_locked THEN NULL ELSE pg_total_relation_size(relid) END AS size_bytes,
       extract(epoch FROM now() - vacuumed),
       extract(epoch FROM now() - analyzed)
FROM top
ORDER BY pages DESC NULLS LAST, schemaname, relname
"""

# Unused: never scanned since the statistics were reset, and not needed for correctness
# (unique, primary key, or backing a constraint such as an exclusion constraint). Invalid
# indexes (a failed CREATE INDEX CONCURRENTLY) are counted apart and not as unused; an index
# being built concurrently is briefly invalid too. An index held in ACCESS EXCLUSIVE mode
# (REINDEX, VACUUM FULL) is sized from relpages instead of opened.
INDEXES_SQL = f"""{LOCKED}
SELECT count(*),
  coalesce(sum(CASE WHEN ui.indexrelid IN (SELECT relation FROM locked)
                    THEN ic.relpages::bigint * current_setting('block_size')::bigint
                    ELSE pg_relation_size(ui.indexrelid) END), 0),
  (SELECT count(*)
   FROM pg_index i
   JOIN pg_class c ON c.oid = i.indexrelid
   JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE NOT i.indisvalid
     AND n.nspname NOT IN ('pg_catalog', 'information_schema')
     AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)')
FROM pg_stat_user_indexes ui
JOIN pg_index i ON i.indexrelid = ui.indexrelid
JOIN pg_class ic ON ic.oid = ui.indexrelid
WHERE ui.idx_scan = 0
  AND i.indisvalid
  AND NOT i.indisunique
  AND NOT i.indisprimary
  AND NOT EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conindid = ui.indexrelid)
  AND ui.schemaname !~ '^pg_(toast_)?temp_'
"""

LIVE = spec(
    "runbook_pg_table_live_tuples",
    "gauge",
    "Estimated live rows of the table (top N tables by total size).",
    TT,
    SRC,
)
DEAD = spec(
    "runbook_pg_table_dead_tuples",
    "gauge",
    "Estimated dead rows of the table, waiting for vacuum (top N tables by total size).",
    TT,
    SRC,
)
DEAD_RATIO = spec(
    "runbook_pg_table_dead_tuple_ratio",
    "gauge",
    "Dead rows / (live + dead rows) of the table; 0 when it has none.",
    TT,
    SRC,
)
SIZE = spec(
    "runbook_pg_table_size_bytes",
    "gauge",
    "Total size of the table with its indexes and TOAST data.",
    TT,
    SRC,
)
VACUUM_AGE = spec(
    "runbook_pg_table_last_vacuum_age_seconds",
    "gauge",
    "Time since the last manual or auto vacuum of the table; absent when never vacuumed.",
    TT,
    SRC,
)
ANALYZE_AGE = spec(
    "runbook_pg_table_last_analyze_age_seconds",
    "gauge",
    "Time since the last manual or auto analyze of the table; absent when never analyzed.",
    TT,
    SRC,
)
UNUSED = spec(
    "runbook_pg_unused_indexes",
    "gauge",
    "Valid, non-unique indexes not backing a constraint, never scanned since the stats reset.",
    T,
    SRC,
)
UNUSED_BYTES = spec(
    "runbook_pg_unused_index_size_bytes",
    "gauge",
    "Total size of the indexes counted by runbook_pg_unused_indexes.",
    T,
    SRC,
)
SIZE_SKIPPED = spec(
    "runbook_pg_tables_size_skipped",
    "gauge",
    "Top-N tables not sized in the last run because another session holds or waits for an "
    "ACCESS EXCLUSIVE lock on them (their runbook_pg_table_size_bytes is absent).",
    T,
    SRC,
)
INVALID = spec(
    "runbook_pg_invalid_indexes",
    "gauge",
    "Invalid indexes (a failed or running CREATE INDEX CONCURRENTLY) of the target database.",
    T,
    SRC,
)


def dead_ratio(live: int, dead: int) -> float:
    total = live + dead
    return dead / total if total > 0 else 0.0


async def _rows(conn, top_n: int) -> list[tuple]:
    """The top N rows. A lock taken between the read of pg_locks and the sizing fails the
    statement after lock_timeout; the retry (once) sees that lock and skips its table."""
    params = {"top_n": top_n}
    try:
        async with savepoint(conn):  # the retry runs in the same transaction
            cur = await conn.execute(TABLES_SQL, params)
    except psycopg.errors.LockNotAvailable:
        cur = await conn.execute(TABLES_SQL, params)
    return await cur.fetchall()


class TablesSettings(CollectorSettings):
    top_n: int = Field(50, ge=1, le=10000)
    interval: Duration | None = 60.0  # table stats move slowly; pg_class scans are not free


class Tables(Collector):
    name = "tables"
    Settings = TablesSettings
    first_run = 40

    def __init__(self, target, settings) -> None:
        super().__init__(target, settings)
        # the tables skipped in the last run, to log a change once
        self._skipped: list[str] = []

    def _report_skipped(self, skipped: list[str]) -> None:
        """Log the locked tables when the set changes, not on every run."""
        if self._skipped == skipped:
            return
        self._skipped = skipped
        target = self.target.name
        if skipped:
            log.warning(
                "tables not sized: held or awaited in ACCESS EXCLUSIVE mode by another session",
                extra={"target": target, "tables": ", ".join(skipped)},
            )
        else:
            log.info("every top-N table sized again", extra={"target": target})

    async def collect(self, conn) -> list[Metric]:
        t = self.target.name
        rows = await _rows(conn, self.settings.top_n)
        fams = {s: s.family() for s in (LIVE, DEAD, DEAD_RATIO, SIZE, VACUUM_AGE, ANALYZE_AGE)}
        skipped: list[str] = []
        for schema, table, live, dead, size, vacuum_age, analyze_age in rows:
            labels = [t, schema, table]
            live, dead = int(live or 0), int(dead or 0)
            fams[LIVE].add_metric(labels, live)
            fams[DEAD].add_metric(labels, dead)
            fams[DEAD_RATIO].add_metric(labels, dead_ratio(live, dead))
            if size is not None:
                fams[SIZE].add_metric(labels, size)
            else:  # locked (or dropped while we looked)
                skipped.append(f"{schema}.{table}")
            if vacuum_age is not None:
                fams[VACUUM_AGE].add_metric(labels, max(float(vacuum_age), 0.0))
            if analyze_age is not None:
                fams[ANALYZE_AGE].add_metric(labels, max(float(analyze_age), 0.0))
        self._report_skipped(skipped)

        cur = await conn.execute(INDEXES_SQL)
        unused, unused_bytes, invalid = await cur.fetchone()
        return [
            *fams.values(),
            SIZE_SKIPPED.one(len(skipped), t),
            UNUSED.one(unused, t),
            UNUSED_BYTES.one(unused_bytes, t),
            INVALID.one(invalid, t),
        ]
