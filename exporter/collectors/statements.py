"""Statement statistics of the target database from pg_stat_statements (runbooks 001/002: mean
above 1 s is a slow statement): how many are slow, and the top N by total execution time.

pg_stat_statements is optional. When the extension is not created in the target database, or
its library is not in shared_preload_libraries, the collector reports
runbook_pg_stat_statements_available 0, logs how to enable it once per target, and succeeds:
the other collectors are unaffected.

Rows are per (user, database, queryid, toplevel); they are summed per queryid of the current
database so each series has one {target,queryid}. The exporter's own statements end with
SQL_MARKER (exporter/db.py appends it to every query) and are left out. Query texts become
labels only normalised to the $n form, literals, SET values and comments removed (see
normalise).
"""

from __future__ import annotations

import functools
import logging
import re
from typing import TYPE_CHECKING

import psycopg
from prometheus_client.core import Metric
from psycopg import sql
from pydantic import Field

from exporter.configtypes import Duration
from exporter.db import SQL_MARKER
from exporter.metrics import spec
from exporter.sources import Collector, CollectorSettings

if TYPE_CHECKING:
    from exporter.doctor import Report
from exporter.scheduler import PartialFailure
from exporter.secrets import redact

SRC = "collectors/statements.py"
T = ("target",)
TQ = ("target", "queryid")
HOW_TO_ENABLE = (
    "add pg_stat_statements to shared_preload_libraries (server restart), then run "
    "CREATE EXTENSION pg_stat_statements in the target database"
)

log = logging.getLogger("exporter.collectors.statements")

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
# of its busiest row. The exporter's own work is left out. Rows the role may not see (other
# roles' statements without pg_read_all_stats: NULL queryid, text `<insufficient privilege>`)
# are counted, not ranked: the collector then fails and names the privilege.
STATS_SQL = """
WITH all_rows AS (
  SELECT p.queryid, p.calls, p.{total} AS total_ms, p.query
  FROM {schema}.pg_stat_statements p
  WHERE p.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
), rows AS (
  SELECT * FROM all_rows WHERE queryid IS NOT NULL AND query NOT LIKE %(own)s
), s AS (
  SELECT queryid::text AS queryid, sum(calls) AS calls, sum(total_ms) AS total_ms,
         (array_agg(query ORDER BY calls DESC))[1] AS query
  FROM rows GROUP BY queryid
)
SELECT
  (SELECT count(*) FROM s WHERE calls > 0 AND total_ms / calls > %(slow_ms)s),
  (SELECT coalesce(json_agg(json_build_array(queryid, calls, total_ms, query)), '[]')
   FROM (SELECT * FROM s ORDER BY total_ms DESC, queryid LIMIT %(top_n)s) top),
  (SELECT count(*) FROM all_rows WHERE queryid IS NULL),
  current_user
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
# statements verbatim: `ALTER ROLE app PASSWORD 'secret'` or `SET app.token = tok_...` would
# reach the label as is. normalise() brings every text to that $n form itself: a small lexer
# (PostgreSQL's rules with standard_conforming_strings on, the default since 9.1) that drops
# comments, -- and nested /* */, and turns string literals (plain, E'', U&'', B'', X'',
# dollar-quoted), numbers and the values of SET commands into $n placeholders numbered after
# the text's own. Quoted identifiers are kept as they are. An unterminated literal or comment
# runs to the end of the text, as it would for the server, so a cut text cannot open one.
_IDENT_CHAR = re.compile(r"[A-Za-z0-9_$\x80-\U0010ffff]")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_\x80-\U0010ffff][A-Za-z0-9_\x80-\U0010ffff]*)?\$")
_PARAM = re.compile(r"\$([0-9]+)")
_NUMBER = re.compile(
    r"(?:0[xX][0-9A-Fa-f_]+|0[oO][0-7_]+|0[bB][01_]+"
    r"|(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9]+)?)"
)
# SET [SESSION | LOCAL] name {= | TO} value, SET TIME ZONE value, SET ROLE / SESSION
# AUTHORIZATION value: the value, up to the end of the statement, becomes one placeholder.
# Only where SET starts a statement or follows ALTER ...: UPDATE's SET column = $1 is DML,
# already normalised by PostgreSQL, and keeps its shape.
_SET_VALUE = re.compile(
    r"""(?P<head>\bSET\s+(?:(?:SESSION|LOCAL)\s+)?
         (?:(?:TIME\s+ZONE|ROLE|SESSION\s+AUTHORIZATION)\s+
           |(?:"(?:[^"]|"")*"|[A-Za-z_][\w$]*)(?:\s*\.\s*(?:"(?:[^"]|"")*"|[A-Za-z_][\w$]*))*
            \s*(?:=|\bTO\b)\s*))
        (?P<value>[^;]*)""",
    re.I | re.X,
)


def _lex(text: str) -> list[tuple[str, str]]:
    """(kind, text) tokens: kind is "lit" (a constant), "ident" (a quoted identifier), "ws"
    (a comment or whitespace), or "code" (anything else, one run at a time)."""
    out: list[tuple[str, str]] = []
    i, n, code_start = 0, len(text), 0

    def flush(upto: int) -> None:
        if upto > code_start:
            out.append(("code", text[code_start:upto]))

    while i < n:
        c = text[i]
        after_word = i > 0 and _IDENT_CHAR.match(text[i - 1]) is not None
        end, kind = i, ""
        if c == "-" and text.startswith("--", i):
            nl = text.find("\n", i)
            end, kind = (n if nl < 0 else nl), "ws"
        elif c == "/" and text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            end, kind = j, "ws"
        elif c == '"':
            end, kind = _quoted_end(text, i, '"', backslash=False), "ident"
        elif c == "'":
            end, kind = _quoted_end(text, i, "'", backslash=False), "lit"
        elif not after_word and c in "EeUuBbXxNn" and i + 1 < n:
            prefix = 3 if text[i : i + 3].upper() == "U&'" else 0
            if text[i + 1] == "'":
                prefix = 1
            if prefix:
                backslash = c in "Ee"
                end, kind = _quoted_end(text, i + prefix, "'", backslash=backslash), "lit"
            elif text[i : i + 3].upper() == 'U&"':
                end, kind = _quoted_end(text, i + 2, '"', backslash=False), "ident"
        elif c == "$" and not after_word:
            m = _DOLLAR_TAG.match(text, i)
            if m:
                close = text.find(m.group(0), m.end())
                end, kind = (n if close < 0 else close + len(m.group(0))), "lit"
        elif (c.isdigit() or (c == "." and text[i + 1 : i + 2].isdigit())) and not after_word:
            m = _NUMBER.match(text, i)
            if m:
                end, kind = m.end(), "lit"
        if kind:
            flush(i)
            out.append((kind, text[i:end]))
            i = code_start = end
        else:
            i += 1
    flush(n)
    return out


def _quoted_end(text: str, start: int, quote: str, backslash: bool) -> int:
    """Index just past the literal or identifier opening at text[start] (the quote); a
    doubled quote stays inside, and so does an escaped one where backslashes escape."""
    i, n = start + 1, len(text)
    while i < n:
        c = text[i]
        if backslash and c == "\\":
            i += 2
        elif c == quote:
            if text.startswith(quote * 2, i):
                i += 2
            else:
                return i + 1
        else:
            i += 1
    return n


_SLOT = "\x00"  # a constant's place until numbering; PostgreSQL texts cannot hold NUL
_SET_STATEMENT = re.compile(
    r"\s*(?:SET|ALTER|CREATE\s+(?:OR\s+REPLACE\s+)?(?:FUNCTION|PROCEDURE))\b", re.I
)


def normalise(text: str) -> str:
    """The statement text in pg_stat_statements' $n form: comments dropped, every constant
    and every SET value a placeholder, whitespace collapsed."""
    tokens = _lex(text.replace(_SLOT, " "))
    used = [int(m.group(1)) for kind, t in tokens if kind == "code" for m in _PARAM.finditer(t)]
    parts = [_SLOT if kind == "lit" else " " if kind == "ws" else t for kind, t in tokens]
    flat = re.sub(r"\s+", " ", "".join(parts)).strip()
    # statements split on ";" (every literal is a slot by now, so a ";" is a separator)
    flat = ";".join(
        _SET_VALUE.sub(lambda m: m["head"] + (_SLOT if m["value"].strip() else ""), stmt)
        if _SET_STATEMENT.match(stmt)
        else stmt
        for stmt in flat.split(";")
    )
    counter = iter(range(max(used, default=0) + 1, len(flat) + max(used, default=0) + 2))
    return re.sub(_SLOT, lambda _: f"${next(counter)}", flat)


# The top statements are mostly the same texts run after run, and lexing them was most of the
# collector's own time (bench/compare's profile): normalise each text once. Bounded in entries
# and in the text length kept; redaction is not cached (secrets registered later must apply).
NORMALISED_CACHE_ENTRIES = 256
NORMALISED_CACHE_MAX_TEXT = 8192


@functools.lru_cache(maxsize=NORMALISED_CACHE_ENTRIES)
def _normalise_cached(text: str) -> str:
    return normalise(text)


def query_label(text: str, length: int) -> str:
    """The normalised text (before truncation, which could cut a literal open), registered
    secrets redacted, cut to `length` characters."""
    flat = _normalise_cached(text) if len(text) <= NORMALISED_CACHE_MAX_TEXT else normalise(text)
    return redact(flat)[:length].rstrip()


class StatementsSettings(CollectorSettings):
    top_n: int = Field(20, ge=0, le=1000)
    query_text_length: int = Field(120, ge=0, le=1000)
    interval: Duration | None = 60.0


class Statements(Collector):
    name = "statements"
    Settings = StatementsSettings
    first_run = 50

    def __init__(self, target, settings) -> None:
        super().__init__(target, settings)
        # why pg_stat_statements was unavailable, so the reason is logged once and again only
        # when it changes or after it was available in between
        self._unavailable: str | None = None

    def _unavailable_now(self, reason: str) -> list[Metric]:
        target = self.target.name
        if self._unavailable != reason:
            self._unavailable = reason
            log.warning(
                "pg_stat_statements is not available; statement metrics are off",
                extra={"target": target, "reason": reason, "hint": HOW_TO_ENABLE},
            )
        return [AVAILABLE.one(0, target)]

    async def doctor(self, conn, report: Report) -> None:
        """Is pg_stat_statements installed, loaded and readable? A finding when the collector
        is enabled, a note when not."""
        report_missing = report.finding if self.settings.enabled else report.note
        # where the collector finds it: the extension's schema need not be on the search_path
        cur = await conn.execute(FIND_SQL, prepare=False)
        row = await cur.fetchone()
        if row is None:
            report_missing(
                "pg_stat_statements is not installed in this database (slow-statement metrics "
                "need it; it must also be in shared_preload_libraries)",
                fix="CREATE EXTENSION pg_stat_statements;",
            )
            return
        schema, _, version = row
        try:
            await conn.execute(
                sql.SQL("SELECT 1 FROM {}.pg_stat_statements LIMIT 1").format(
                    sql.Identifier(schema)
                ),
                prepare=False,
            )
        except psycopg.errors.ObjectNotInPrerequisiteState:
            report_missing(
                "pg_stat_statements is installed but not loaded",
                fix="ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements';"
                "  -- append to any existing value, then restart PostgreSQL",
            )
            return
        except psycopg.errors.InsufficientPrivilege:
            report_missing(
                "the role cannot read pg_stat_statements", fix="GRANT pg_monitor TO ...;"
            )
            return
        report.ok(f"pg_stat_statements {version} is installed and loaded")

    async def collect(self, conn) -> list[Metric]:
        t = self.target.name
        cur = await conn.execute(FIND_SQL)
        found = await cur.fetchone()
        if found is None:
            return self._unavailable_now("the extension is not created in the target database")
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
                    "slow_ms": self.target.thresholds.slow_statement_mean * 1000.0,
                    "top_n": self.settings.top_n,
                },
            )
        except psycopg.errors.ObjectNotInPrerequisiteState:
            # "pg_stat_statements must be loaded via shared_preload_libraries"
            return self._unavailable_now("the library is not in shared_preload_libraries")
        slow, top, hidden, role = await cur.fetchone()
        if self._unavailable is not None:
            self._unavailable = None
            log.info("pg_stat_statements is available", extra={"target": t})

        calls_f, seconds_f, mean_f, info_f = CALLS.family(), SECONDS.family(), MEAN.family(), None
        if self.settings.query_text_length > 0:
            info_f = INFO.family()
        for queryid, calls, total_ms, text in top:
            labels = [t, queryid]
            calls_f.add_metric(labels, calls)
            seconds_f.add_metric(labels, total_ms / 1000.0)
            mean_f.add_metric(labels, total_ms / calls / 1000.0 if calls else 0.0)
            if info_f is not None:
                info_f.add_metric([*labels, query_label(text, self.settings.query_text_length)], 1)
        out = [AVAILABLE.one(1, t), calls_f, seconds_f, mean_f]
        if info_f is not None:
            out.append(info_f)
        if hidden:
            # the slow count and the ranking would silently leave these statements out: the
            # visible statements' own series are served, the run fails and says why
            raise PartialFailure(
                f"cannot see {hidden} statements of other roles in pg_stat_statements: grant "
                f"pg_read_all_stats (or pg_monitor) to {role}; the slow-statement count is not "
                "served until then",
                out,
            )
        return [*out, SLOW.one(slow, t)]
