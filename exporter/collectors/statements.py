"""Statement statistics of the target database from pg_stat_statements (runbooks 001/002: mean
above 1 s is a slow statement): how many are slow, and the top N by total execution time.

pg_stat_statements is optional. When the extension is not created in the target database, or
its library is not in shared_preload_libraries, the collector reports
runbook_pg_stat_statements_available 0, logs how to enable it once per target, and succeeds:
the other collectors are unaffected.

Rows are per (user, database, queryid, toplevel); they are summed per queryid of the current
database so each series has one {target,queryid}. The exporter's own statements end with
SQL_MARKER (exporter/db.py appends it to every query) and are left out. Query texts become
labels only with their literals and comments scrubbed (see query_label).
"""

from __future__ import annotations

import logging
import re

import psycopg
from prometheus_client.core import Metric
from psycopg import sql

from exporter.db import SQL_MARKER
from exporter.metrics import spec
from exporter.secrets import redact

NAME = "statements"
SRC = "collectors/statements.py"
T = ("target",)
TQ = ("target", "queryid")
HOW_TO_ENABLE = (
    "add pg_stat_statements to shared_preload_libraries (server restart), then run "
    "CREATE EXTENSION pg_stat_statements in the target database"
)

log = logging.getLogger("exporter.collectors.statements")
# target name -> why pg_stat_statements was unavailable, so the reason is logged once and
# again only when it changes or after it was available in between
_unavailable: dict[str, str] = {}

# Where the extension lives in this database (it need not be on the search_path), whether its
# view has the PostgreSQL 13+ column names (pg_stat_statements 1.8+), and its version (for the
# doctor).
FIND_SQL = """
SELECT n.nspname,
       EXISTS (SELECT 1 FROM pg_attribute a
               WHERE a.attrelid = c.oid AND a.attname = 'total_exec_time' AND NOT a.attisdropped),
       e.extversion
FROM pg_extension e
JOIN pg_namespace n ON n.oid = e.extnamespace
JOIN pg_class c ON c.relnamespace = e.extnamespace AND c.relname = 'pg_stat_statements'
WHERE e.extname = 'pg_stat_statements'
"""

# One read of the view: the slow count over all statements of this database, the top N as
# JSON (queryid as text: it is a signed 64-bit integer). The query text of a queryid is that
# of its busiest row. Rows without a queryid or text (role without pg_read_all_stats) are
# skipped, as is the exporter's own work.
STATS_SQL = """
WITH rows AS (
  SELECT p.queryid, p.calls, p.{total} AS total_ms, p.query
  FROM {schema}.pg_stat_statements p
  WHERE p.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND p.queryid IS NOT NULL
    AND p.query NOT LIKE %(own)s
), s AS (
  SELECT queryid::text AS queryid, sum(calls) AS calls, sum(total_ms) AS total_ms,
         (array_agg(query ORDER BY calls DESC))[1] AS query
  FROM rows GROUP BY queryid
)
SELECT
  (SELECT count(*) FROM s WHERE calls > 0 AND total_ms / calls > %(slow_ms)s),
  (SELECT coalesce(json_agg(json_build_array(queryid, calls, total_ms, query)), '[]')
   FROM (SELECT * FROM s ORDER BY total_ms DESC, queryid LIMIT %(top_n)s) top)
"""

AVAILABLE = spec(
    "runbook_pg_stat_statements_available",
    "gauge",
    "1 when pg_stat_statements can be read in the target database, 0 when not installed.",
    T,
    SRC,
)
SLOW = spec(
    "runbook_pg_slow_statements",
    "gauge",
    "Statements of the target database whose mean execution time is above slow_statement_mean.",
    T,
    SRC,
)
CALLS = spec(
    "runbook_pg_statement_calls",
    "counter",
    "Executions of the statement (top N statements by total execution time).",
    TQ,
    SRC,
)
SECONDS = spec(
    "runbook_pg_statement_seconds",
    "counter",
    "Total execution time of the statement (top N statements by total execution time).",
    TQ,
    SRC,
)
MEAN = spec(
    "runbook_pg_statement_mean_seconds",
    "gauge",
    "Mean execution time of the statement (top N statements by total execution time).",
    TQ,
    SRC,
)
INFO = spec(
    "runbook_pg_statement_info",
    "gauge",
    "Normalised text of a top-N statement, whitespace collapsed and truncated "
    "(query_text_length: 0 turns it off).",
    ("target", "queryid", "query"),
    SRC,
)


# pg_stat_statements replaces the constants of DML with $1, $2, ... but stores utility
# statements verbatim: `ALTER ROLE app PASSWORD 'secret'` would reach the label as is. So
# every string literal, dollar-quoted body and comment left in a text is scrubbed; quoted
# identifiers are matched only so that a quote inside one is not taken for a literal.
_TOKENS = re.compile(
    r"""(?P<ident>"(?:[^"]|"")*")
      | (?P<comment>--[^\n]*|/\*.*?\*/)
      | \$\$.*?\$\$
      | \$(?P<tag>[A-Za-z_][A-Za-z0-9_]*)\$.*?\$(?P=tag)\$
      | (?<![A-Za-z0-9_])[Ee]'(?:[^'\\]|\\.|'')*'
      | '(?:[^']|'')*'""",
    re.S | re.X,
)
REDACTED_LITERAL = "'<redacted>'"


def _scrub(m: re.Match[str]) -> str:
    if m.group("ident"):
        return m.group(0)
    if m.group("comment"):
        return " "
    return REDACTED_LITERAL


def query_label(text: str, length: int) -> str:
    """Literals and comments scrubbed (before truncation, which could cut a literal open),
    registered secrets redacted, whitespace collapsed, cut to `length` characters."""
    text = redact(_TOKENS.sub(_scrub, text))
    return re.sub(r"\s+", " ", text).strip()[:length].rstrip()


def _unavailable_now(target: str, reason: str) -> list[Metric]:
    if _unavailable.get(target) != reason:
        _unavailable[target] = reason
        log.warning(
            "pg_stat_statements is not available; statement metrics are off",
            extra={"target": target, "reason": reason, "hint": HOW_TO_ENABLE},
        )
    return [AVAILABLE.one(0, target)]


async def collect(conn, target, settings) -> list[Metric]:
    t = target.name
    cur = await conn.execute(FIND_SQL)
    found = await cur.fetchone()
    if found is None:
        return _unavailable_now(t, "the extension is not created in the target database")
    schema, new_columns, _ = found
    query = sql.SQL(STATS_SQL).format(
        schema=sql.Identifier(schema),
        total=sql.Identifier("total_exec_time" if new_columns else "total_time"),
    )
    try:
        cur = await conn.execute(
            query,
            {
                "own": f"%{SQL_MARKER}",
                "slow_ms": target.thresholds.slow_statement_mean * 1000.0,
                "top_n": settings.top_n,
            },
        )
    except psycopg.errors.ObjectNotInPrerequisiteState:
        # "pg_stat_statements must be loaded via shared_preload_libraries"
        return _unavailable_now(t, "the library is not in shared_preload_libraries")
    slow, top = await cur.fetchone()
    if _unavailable.pop(t, None) is not None:
        log.info("pg_stat_statements is available", extra={"target": t})

    calls_f, seconds_f, mean_f, info_f = CALLS.family(), SECONDS.family(), MEAN.family(), None
    if settings.query_text_length > 0:
        info_f = INFO.family()
    for queryid, calls, total_ms, text in top:
        labels = [t, queryid]
        calls_f.add_metric(labels, calls)
        seconds_f.add_metric(labels, total_ms / 1000.0)
        mean_f.add_metric(labels, total_ms / calls / 1000.0 if calls else 0.0)
        if info_f is not None:
            info_f.add_metric([*labels, query_label(text, settings.query_text_length)], 1)
    out = [AVAILABLE.one(1, t), SLOW.one(slow, t), calls_f, seconds_f, mean_f]
    if info_f is not None:
        out.append(info_f)
    return out
