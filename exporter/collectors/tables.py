"""Table health of the target database (runbook 002's weekly checks, continuously): dead tuples,
size and vacuum/analyze ages of the largest user tables, unused and invalid indexes.

Only the top N tables by total size get series, so cardinality is bounded by the config and
not by the schema. All of it comes from the cumulative statistics system: pg_stat_reset() (or
a crash) zeroes n_dead_tup and idx_scan and forgets last_vacuum / last_analyze, so right after
a reset every non-unique index looks unused and vacuum ages are absent until the next run.
"""

from __future__ import annotations

from prometheus_client.core import Metric

from exporter.metrics import spec

NAME = "tables"
SRC = "collectors/tables.py"
TT = ("target", "schema", "table")
T = ("target",)

# Temporary tables are left out: they belong to one session and would only churn labels.
# pg_total_relation_size takes an AccessShareLock on each table: a table held in ACCESS
# EXCLUSIVE mode (a long ALTER TABLE, VACUUM FULL) makes the run fail after lock_timeout
# rather than wait, and the series are dropped for that run.
TABLES_SQL = """
SELECT s.schemaname, s.relname, s.n_live_tup, s.n_dead_tup,
       pg_total_relation_size(s.relid) AS size_bytes,
       extract(epoch FROM now() - greatest(s.last_vacuum, s.last_autovacuum)),
       extract(epoch FROM now() - greatest(s.last_analyze, s.last_autoanalyze))
FROM pg_stat_user_tables s
WHERE s.schemaname !~ '^pg_(toast_)?temp_'
ORDER BY size_bytes DESC NULLS LAST, s.schemaname, s.relname
LIMIT %(top_n)s
"""

# Unused: never scanned since the statistics were reset, and not needed for correctness
# (unique, primary key, or backing a constraint such as an exclusion constraint). Invalid
# indexes (a failed CREATE INDEX CONCURRENTLY) are counted apart and not as unused; an index
# being built concurrently is briefly invalid too.
INDEXES_SQL = """
SELECT count(*), coalesce(sum(pg_relation_size(ui.indexrelid)), 0),
  (SELECT count(*)
   FROM pg_index i
   JOIN pg_class c ON c.oid = i.indexrelid
   JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE NOT i.indisvalid
     AND n.nspname NOT IN ('pg_catalog', 'information_schema')
     AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)')
FROM pg_stat_user_indexes ui
JOIN pg_index i ON i.indexrelid = ui.indexrelid
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


async def collect(conn, target, settings) -> list[Metric]:
    t = target.name
    cur = await conn.execute(TABLES_SQL, {"top_n": settings.top_n})
    rows = await cur.fetchall()
    fams = {s: s.family() for s in (LIVE, DEAD, DEAD_RATIO, SIZE, VACUUM_AGE, ANALYZE_AGE)}
    for schema, table, live, dead, size, vacuum_age, analyze_age in rows:
        labels = [t, schema, table]
        live, dead = int(live or 0), int(dead or 0)
        fams[LIVE].add_metric(labels, live)
        fams[DEAD].add_metric(labels, dead)
        fams[DEAD_RATIO].add_metric(labels, dead_ratio(live, dead))
        if size is not None:  # None: the table was dropped while we looked
            fams[SIZE].add_metric(labels, size)
        if vacuum_age is not None:
            fams[VACUUM_AGE].add_metric(labels, max(float(vacuum_age), 0.0))
        if analyze_age is not None:
            fams[ANALYZE_AGE].add_metric(labels, max(float(analyze_age), 0.0))

    cur = await conn.execute(INDEXES_SQL)
    unused, unused_bytes, invalid = await cur.fetchone()
    return [
        *fams.values(),
        UNUSED.one(unused, t),
        UNUSED_BYTES.one(unused_bytes, t),
        INVALID.one(invalid, t),
    ]
