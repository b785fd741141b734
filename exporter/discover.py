"""`runbook-exporter discover --dsn ...`: inspect a database and print a ready configuration.

Read-only and bounded: the session is opened like the exporter's own (exporter/db.py:
read-only, statement_timeout, lock_timeout) and every statement reads the catalog, planner
statistics or a handful of small bookkeeping tables (pgmq.meta), costing O(catalog). A user
table is read only when it has no statistics, and then only a bounded sample of its status
column (`LIMIT 10000`), never the whole table.

What it looks for:

- **Hand-rolled job queues**: a table with a status-like column (status, state, *_status,
  *_state) of type text, varchar or an enum whose values are job-like (see ROLE_WORDS), a
  created-at and an updated-at timestamp, and optionally a retry-count column. The values come
  from the enum's labels, else a CHECK constraint's literals, else the planner statistics
  (most common values and histogram), else the bounded sample; the column's DEFAULT counts too.
- **Dead-letter tables** named like `<queue>_dlq`, `dead_letter_<queue>`: the
  `dead_letter_table` of the matching queue.
- **pgmq queues** (rows of pgmq.meta), with `<queue>_dlq`-style queues as their
  `dead_letter_queue`.
- **pg_cron** (cron.job, cron.job_run_details) and **pg_net** (net._http_response): their
  collectors are switched on when this exporter has them (exporter.sources).
- Then the doctor (exporter/doctor.py) checks the generated target on the same session:
  pg_monitor, pg_stat_statements, each queue's privileges and indexes. Its findings, and the
  GRANTs for relations the role cannot read, become comments and go to stderr.

What it prints passes `--check-config` unchanged: it is validated with the configuration's own
models before it is written, and an item kind this exporter does not know yet (a pgmq queue
before pgmq support, a cron collector before the cron collector) is written as a comment.

Exit codes: 0 a configuration was written that monitors at least one queue, pg_cron or pg_net;
1 it was written but found nothing of the kind (only the database-health collectors run);
2 the DSN, the options or the connection failed (one line on stderr, no password, nothing
written).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import sys
import tempfile
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg import sql
from pydantic import ValidationError

from exporter import sources
from exporter.config import ConfigError, Target, parse_config, parse_dsn
from exporter.configtypes import LABEL_VALUE_RE
from exporter.db import describe_error, open_connection
from exporter.secrets import looks_secret, redact, register_secret

APPLICATION_NAME = "runbook-exporter-discover"
PASSWORD_ENV = "RUNBOOK_DB_PASSWORD"
# more pgmq queues than this are configured as `pgmq: "*"` instead of one item each
PGMQ_NAMED_MAX = 20
# the most pgmq queues a `"*"` item is set to follow (each queue is a dozen series)
PGMQ_WILDCARD_MAX = 500
# how many status-like columns are looked at (the catalog of a huge schema stays bounded)
CANDIDATES_MAX = 1000
# tables without statistics sampled at most (each sample reads up to SAMPLE_ROWS rows)
SAMPLES_MAX = 20
# rows of a table without statistics read to learn its status values
SAMPLE_ROWS = 10000
SAMPLE_VALUES = 100

# Status values by role, compared lower-cased with '-' and ' ' read as '_'. Decided:
# - retry/retrying/retryable are `failed`: failed, a retry still to come (runbook 000 counts
#   these as failed and the exhausted ones by retry_count);
# - dead, discarded, abandoned... are `dead` (dead letters a person has to look at);
# - cancelled/canceled map to nothing: a deliberate stop is neither a success, a failure nor a
#   dead letter, and an unmapped value is not counted (it is listed in a comment instead).
ROLE_WORDS: dict[str, tuple[str, ...]] = {
    "pending": (
        "pending", "queued", "enqueued", "new", "waiting", "ready", "scheduled", "available",
        "todo", "created",
    ),
    "processing": (
        "processing", "running", "active", "in_progress", "started", "locked", "executing",
        "working", "claimed", "reserved", "busy",
    ),
    "completed": (
        "completed", "complete", "done", "succeeded", "success", "successful", "finished",
        "processed", "ok",
    ),
    "failed": (
        "failed", "failure", "error", "errored", "retry", "retrying", "retryable", "timeout",
        "timed_out",
    ),
    "dead": (
        "dead", "dead_letter", "dead_lettered", "deadletter", "discarded", "abandoned", "poisoned",
        "poison", "exhausted", "buried",
    ),
}  # fmt: skip
ROLES = tuple(ROLE_WORDS)
_ROLE_OF = {w: role for role, words in ROLE_WORDS.items() for w in words}
NOT_MAPPED_ON_PURPOSE = {"cancelled", "canceled", "cancel"}

STATUS_NAME = re.compile(r"^(?:\w+_)?(?:status|state)$", re.I)
CREATED_NAMES = ("created_at", "inserted_at", "enqueued_at", "queued_at", "created", "created_on")
UPDATED_NAMES = ("updated_at", "modified_at", "last_updated_at", "changed_at", "updated")
RETRY_NAMES = (
    "retry_count", "retries", "attempts", "attempt", "attempt_count", "attempts_count",
    "retry_attempts", "num_retries", "tries", "try_count", "retried",
)  # fmt: skip
QUEUE_NAME_HINT = re.compile(r"job|task|queue|work|outbox|inbox|message", re.I)
# `<x>_dlq`, `<x>_dead_letters`, `dead_letter_<x>`, `dlq_<x>`: the dead letters of queue x
_DLQ_SUFFIX = re.compile(r"^(?P<base>.+?)_(?:dlq|dead|dead_?letters?|deadletters?)$", re.I)
_DLQ_PREFIX = re.compile(r"^(?:dlq|dead_?letters?|deadletters?)_(?P<base>.+)$", re.I)
TIMESTAMP_TYPES = ("timestamp with time zone", "timestamp without time zone")
# the schemas of the extensions discover reads on purpose; never candidates for a table queue
EXTENSION_SCHEMAS = ("pgmq", "cron", "net")


def normalise(value: str) -> str:
    return re.sub(r"[\s-]+", "_", value.strip().lower())


def role_of(value: str) -> str | None:
    return _ROLE_OF.get(normalise(value))


def dlq_base(name: str) -> str | None:
    """The queue a dead-letter name points at (`jobs_dlq` -> `jobs`), or None."""
    for pattern in (_DLQ_SUFFIX, _DLQ_PREFIX):
        m = pattern.match(name)
        if m:
            return m["base"]
    return None


# --- what was found -----------------------------------------------------------------------


@dataclass
class TableQueue:
    schema: str
    table: str
    status_column: str
    status_type: str
    values_from: str  # where the status values came from, for the comment
    statuses: dict[str, list[str]]
    unmapped: list[str]
    assumed: list[str]  # roles given runbook 000's default value because none was seen
    created_at: str
    updated_at: str
    retry_count: str | None
    readable: bool
    name: str | None = None  # the `queue` label when the table name alone would collide
    dead_letter_table: tuple[str, str] | None = None
    dlq_readable: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass
class PgmqQueues:
    names: list[str]  # every queue of pgmq.meta (at most PGMQ_WILDCARD_MAX + 1 read)
    dead_letter_of: dict[str, str]  # queue -> its inferred dead-letter queue
    truncated: bool
    unreadable: list[str]  # relations the role cannot SELECT


@dataclass
class Extension:
    """pg_cron or pg_net: present when its tables are; monitored by the collector `collector`."""

    collector: str
    title: str
    tables: tuple[str, ...]
    found: bool = False
    unreadable: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Discovery:
    database: str
    user: str
    version: str
    queues: list[TableQueue] = field(default_factory=list)
    pgmq: PgmqQueues | None = None
    extensions: list[Extension] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was seen but not emitted, and why
    # queue-shaped tables whose status values the role cannot see: GRANT SELECT and rerun
    unreadable: list[tuple[str, str]] = field(default_factory=list)


# --- the queries --------------------------------------------------------------------------

CANDIDATES_SQL = """
SELECT c.oid, n.nspname::text, c.relname::text, has_table_privilege(c.oid, 'SELECT'),
       a.attname::text, a.attnum, format_type(a.atttypid, NULL),
       CASE WHEN t.typtype = 'e' THEN
           ARRAY(SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid
                 ORDER BY e.enumsortorder)
       END,
       pg_get_expr(d.adbin, d.adrelid),
       has_column_privilege(c.oid, a.attnum, 'SELECT')
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('information_schema', 'pgmq', 'cron', 'net')
  AND n.nspname NOT LIKE 'pg\\_%%'
  AND NOT EXISTS (SELECT FROM pg_depend dep WHERE dep.classid = 'pg_class'::regclass
                  AND dep.objid = c.oid AND dep.deptype = 'e')
  AND a.attname ~* '^([[:alnum:]_]+_)?(status|state)$'
  AND t.typcategory IN ('S', 'E')
  -- queue-shaped: a created-at or updated-at timestamp (which one is missing is said later)
  AND EXISTS (SELECT FROM pg_attribute ts WHERE ts.attrelid = c.oid AND ts.attnum > 0
              AND NOT ts.attisdropped AND lower(ts.attname) = ANY(%(timestamps)s::text[])
              AND ts.atttypid IN ('timestamptz'::regtype, 'timestamp'::regtype))
-- the tables whose names say job, task, queue... first: the bound cuts the least likely
ORDER BY c.relname ~* %(hint)s DESC, t.typtype = 'e' DESC, n.nspname, c.relname, a.attnum
LIMIT %(limit)s
"""

COLUMNS_SQL = """
SELECT a.attrelid, a.attname::text, format_type(a.atttypid, NULL), t.typcategory::text
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = ANY(%(rels)s::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

# CHECK constraints on one column: their literals are the column's complete set of values
CHECKS_SQL = """
SELECT conrelid, conkey[1], pg_get_constraintdef(oid)
FROM pg_constraint
WHERE contype = 'c' AND conrelid = ANY(%(rels)s::oid[]) AND cardinality(conkey) = 1
"""

STATS_SQL = """
SELECT s.schemaname::text, s.tablename::text, s.attname::text,
       s.most_common_vals::text::text[], s.histogram_bounds::text::text[]
FROM pg_stats s
JOIN unnest(%(schemas)s::text[], %(tables)s::text[], %(columns)s::text[]) AS w(sc, tb, co)
  ON s.schemaname = w.sc AND s.tablename = w.tb AND s.attname = w.co
"""

DLQ_TABLES_SQL = """
SELECT n.nspname::text, c.relname::text, has_table_privilege(c.oid, 'SELECT')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v') AND NOT c.relispartition
  AND n.nspname NOT IN ('information_schema', 'pgmq', 'cron', 'net')
  AND n.nspname NOT LIKE 'pg\\_%%'
  AND (c.relname ~* '_(dlq|dead|dead_?letters?|deadletters?)$'
       OR c.relname ~* '^(dlq|dead_?letters?|deadletters?)_')
ORDER BY 1, 2
LIMIT %(limit)s
"""

RELATION_SQL = """
SELECT c.oid IS NOT NULL, coalesce(has_table_privilege(c.oid, 'SELECT'), false),
       coalesce(c.reltuples, -1)::float8
FROM (SELECT to_regclass(%s) AS oid) r LEFT JOIN pg_class c ON c.oid = r.oid
"""


async def _all(conn: psycopg.AsyncConnection, query: Any, params: Any = None) -> list[tuple]:
    cur = await conn.execute(query, params, prepare=False)
    return await cur.fetchall()


async def _one(conn: psycopg.AsyncConnection, query: Any, params: Any = None) -> Any:
    cur = await conn.execute(query, params, prepare=False)
    return await cur.fetchone()


async def relation(conn: psycopg.AsyncConnection, qualified: str) -> tuple[bool, bool, float]:
    """(exists, readable, estimated rows) of a relation, from the catalog."""
    quoted = sql.Identifier(*qualified.split(".", 1)).as_string(conn)
    exists, readable, rows = await _one(conn, RELATION_SQL, (quoted,))
    return bool(exists), bool(readable), float(rows)


def _quoted_literals(text: str) -> list[str]:
    """The string literals of a CHECK constraint's definition, in order, unescaped."""
    return [m.replace("''", "'") for m in re.findall(r"'((?:[^']|'')*)'", text)]


def _default_literal(expr: str | None) -> str | None:
    """'pending' of a column DEFAULT such as `'pending'::text`; None for other expressions."""
    if not expr:
        return None
    m = re.fullmatch(r"'((?:[^']|'')*)'(?:::[\w\s.\"]+)*", expr.strip())
    return m.group(1).replace("''", "'") if m else None


async def _sample(conn: psycopg.AsyncConnection, schema: str, table: str, column: str) -> list:
    """The distinct values among the first SAMPLE_ROWS rows: bounded whatever the table's
    size (a table without statistics may be new, or may never have been analyzed)."""
    q = sql.SQL(
        "SELECT DISTINCT s.v::text FROM (SELECT {col} AS v FROM {tbl} LIMIT {rows}) s"
        " WHERE s.v IS NOT NULL LIMIT {values}"
    ).format(
        col=sql.Identifier(column),
        tbl=sql.Identifier(schema, table),
        rows=sql.Literal(SAMPLE_ROWS),
        values=sql.Literal(SAMPLE_VALUES),
    )
    return [v for (v,) in await _all(conn, q)]


@dataclass
class _Candidate:
    oid: int
    schema: str
    table: str
    readable: bool
    column: str
    attnum: int
    type: str
    enum_labels: list[str] | None
    default: str | None
    column_readable: bool


def _pick(columns: dict[str, tuple[str, str]], names: tuple[str, ...], want: str) -> str | None:
    """The first column named like `names` (case-insensitive) of the wanted kind."""
    lower = {c.lower(): c for c in columns}
    for n in names:
        c = lower.get(n)
        if c is None:
            continue
        typ, cat = columns[c]
        if want == "timestamp" and typ in TIMESTAMP_TYPES:
            return c
        if want == "integer" and cat == "N" and typ in ("integer", "smallint", "bigint"):
            return c
    return None


def map_values(values: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """Status values by role, and the values no role takes (in the order seen)."""
    statuses: dict[str, list[str]] = {r: [] for r in ROLES}
    unmapped: list[str] = []
    for v in values:
        r = role_of(v)
        if r is None:
            unmapped.append(v)
        elif v not in statuses[r]:
            statuses[r].append(v)
    return statuses, unmapped


def job_like(statuses: dict[str, list[str]], unmapped: list[str], table: str) -> bool:
    """Whether a status column's values say "job queue": a pending value plus two other roles
    (or one, when the table's name says job/task/queue...), and not more unknown values than
    known ones. A users table's active/inactive or an orders table's pending/shipped fail."""
    roles = {r for r, vs in statuses.items() if vs}
    mapped = sum(len(vs) for vs in statuses.values())
    others = len(roles - {"pending"})
    enough = others >= 2 or (others >= 1 and bool(QUEUE_NAME_HINT.search(table)))
    return "pending" in roles and enough and len(unmapped) <= mapped


async def find_table_queues(conn: psycopg.AsyncConnection, found: Discovery) -> None:
    rows = await _all(
        conn,
        CANDIDATES_SQL,
        {
            "limit": CANDIDATES_MAX + 1,
            "timestamps": [*CREATED_NAMES, *UPDATED_NAMES],
            "hint": QUEUE_NAME_HINT.pattern,
        },
    )
    if len(rows) > CANDIDATES_MAX:
        rows = rows[:CANDIDATES_MAX]
        found.notes.append(
            f"more than {CANDIDATES_MAX} status-like columns: only {CANDIDATES_MAX} were "
            "looked at (tables named like job, task, queue... first)"
        )
    cands = [_Candidate(*r) for r in rows]
    if not cands:
        return
    rels = sorted({c.oid for c in cands})
    columns: dict[int, dict[str, tuple[str, str]]] = {}
    for rel, name, typ, cat in await _all(conn, COLUMNS_SQL, {"rels": rels}):
        columns.setdefault(rel, {})[name] = (typ, cat)
    checks: dict[tuple[int, int], list[str]] = {}
    for rel, attnum, definition in await _all(conn, CHECKS_SQL, {"rels": rels}):
        checks.setdefault((rel, attnum), []).extend(_quoted_literals(definition))
    stats: dict[tuple[str, str, str], list[str]] = {}
    for schema, table, col, mcv, hist in await _all(
        conn,
        STATS_SQL,
        {
            "schemas": [c.schema for c in cands],
            "tables": [c.table for c in cands],
            "columns": [c.column for c in cands],
        },
    ):
        seen = stats.setdefault((schema, table, col), [])
        seen.extend(v for v in [*(mcv or []), *(hist or [])] if v not in seen)

    chosen: dict[int, TableQueue] = {}
    samples = 0
    for c in cands:
        if c.oid in chosen:  # a table's first job-like status column wins
            continue
        where = f"{c.schema}.{c.table}"
        values, complete = [], False
        if c.enum_labels is not None:
            values, source, complete = list(c.enum_labels), f"the labels of enum {c.type}", True
        elif checks.get((c.oid, c.attnum)):
            values, source, complete = checks[(c.oid, c.attnum)], "its CHECK constraint", True
        elif (c.schema, c.table, c.column) in stats:
            values, source = stats[(c.schema, c.table, c.column)], "planner statistics"
        elif c.readable and c.column_readable:
            if samples >= SAMPLES_MAX:
                found.notes.append(
                    f"{where}: not sampled (already {SAMPLES_MAX} tables without statistics "
                    f"sampled); ANALYZE {where} and run discover again"
                )
                continue
            samples += 1
            try:
                values = await _sample(conn, c.schema, c.table, c.column)
            except (psycopg.errors.QueryCanceled, psycopg.errors.InsufficientPrivilege) as e:
                found.notes.append(f"{where}: could not sample column {c.column}: {_err(e)}")
                continue
            source = f"a sample of {SAMPLE_ROWS} rows (the table has no statistics yet)"
        else:
            cols = columns.get(c.oid, {})
            if _pick(cols, CREATED_NAMES, "timestamp") and _pick(cols, UPDATED_NAMES, "timestamp"):
                # shaped like a queue, but its values are hidden from this role
                found.unreadable.append((c.schema, c.table))
                found.notes.append(
                    f"{where} has a status column ({c.column}) and timestamps, but the role "
                    "can read neither the table nor its statistics: grant SELECT (see the "
                    "checks) and run discover again"
                )
            continue
        default = _default_literal(c.default)
        if default is not None and default not in values and not complete:
            values = [*values, default]
            source += " and the column default"
        statuses, unmapped = map_values(values)
        if not job_like(statuses, unmapped, c.table):
            continue
        cols = columns.get(c.oid, {})
        created = _pick(cols, CREATED_NAMES, "timestamp")
        updated = _pick(cols, UPDATED_NAMES, "timestamp")
        if created is None or updated is None:
            missing = " and ".join(
                w for w, col in (("created-at", created), ("updated-at", updated)) if col is None
            )
            found.notes.append(
                f"{where} looks like a job queue (column {c.column}: "
                f"{', '.join(_q(v) for v in values)}) but has no {missing} timestamp column "
                f"(looked for {', '.join(CREATED_NAMES if created is None else UPDATED_NAMES)}):"
                " not configured"
            )
            continue
        assumed = []
        if not complete:
            # a text column takes any value: the runbook's name for a role not seen (yet)
            # costs nothing when absent and counts the jobs when the app writes it
            for role in ("processing", "completed", "failed"):
                if not statuses[role]:
                    statuses[role] = [role]
                    assumed.append(role)
        q = TableQueue(
            schema=c.schema,
            table=c.table,
            status_column=c.column,
            status_type=c.type,
            values_from=source,
            statuses=statuses,
            unmapped=unmapped,
            assumed=assumed,
            created_at=created,
            updated_at=updated,
            retry_count=_pick(cols, RETRY_NAMES, "integer"),
            readable=c.readable,
        )
        lower = {n.lower() for n in cols}
        if lower & {"max_attempts", "max_retries", "max_retry"}:
            q.notes.append(
                "the table has a per-row retry limit column; the exporter counts a failed job "
                "as retries-exhausted at one max_retries per queue (runbook 000: 3): set it"
            )
        if "." in c.schema or "." in c.table:
            found.notes.append(
                f"{where!r} looks like a job queue but its name holds a '.': skipped"
            )
            continue
        chosen[c.oid] = q
    found.queues = sorted(chosen.values(), key=lambda q: (q.schema, q.table))
    await attach_dead_letter_tables(conn, found)
    _unique_labels(found.queues)


async def attach_dead_letter_tables(conn: psycopg.AsyncConnection, found: Discovery) -> None:
    """Tables named like dead-letter tables become the dead_letter_table of their queue: the
    queue of the same schema whose table name is the DLQ's base name, else the only queue of
    the schema whose name ends with `_<base>` (dead_letter_jobs -> processing_jobs)."""
    rows = await _all(conn, DLQ_TABLES_SQL, {"limit": CANDIDATES_MAX})
    queues = found.queues
    for schema, table, readable in rows:
        base = dlq_base(table)
        if base is None:
            continue
        same_schema = [q for q in queues if q.schema == schema and q.table != table]
        match = [q for q in same_schema if q.table.lower() == base.lower()]
        if not match:
            match = [q for q in same_schema if q.table.lower().endswith(f"_{base.lower()}")]
        if len(match) != 1 or match[0].dead_letter_table is not None:
            if not any(q.schema == schema and q.table == table for q in queues):
                found.notes.append(
                    f"{schema}.{table} is named like a dead-letter table but matches no job "
                    "queue found: not configured"
                )
            continue
        match[0].dead_letter_table = (schema, table)
        match[0].dlq_readable = bool(readable)
    # a dead-letter table that itself looked like a queue is its queue's DLQ, not a queue
    dlqs = {q.dead_letter_table for q in queues if q.dead_letter_table}
    found.queues = [q for q in queues if (q.schema, q.table) not in dlqs]


def _unique_labels(queues: list[TableQueue]) -> None:
    """The `queue` label is the table name; tables of the same name in two schemas get
    `<schema>_<table>` (a label value: letters, digits, _ . : -)."""
    counts: dict[str, int] = {}
    for q in queues:
        counts[q.table] = counts.get(q.table, 0) + 1
    for q in queues:
        if counts[q.table] > 1 or not re.match(LABEL_VALUE_RE, q.table):
            q.name = label_value(f"{q.schema}_{q.table}")


def label_value(text: str) -> str:
    """`text` made a valid label value (LABEL_VALUE_RE): other characters become _."""
    out = re.sub(r"[^A-Za-z0-9_.:-]", "_", text)
    if not re.match(r"[A-Za-z_]", out[:1]):
        out = f"_{out}"
    return out[:63]


PGMQ_META_SQL = "SELECT queue_name::text FROM pgmq.meta ORDER BY queue_name LIMIT %(limit)s"


async def find_pgmq(conn: psycopg.AsyncConnection, found: Discovery) -> None:
    exists, readable, _ = await relation(conn, "pgmq.meta")
    if not exists:
        return
    if not readable:
        found.pgmq = PgmqQueues([], {}, False, ["pgmq.meta"])
        return
    names = [n for (n,) in await _all(conn, PGMQ_META_SQL, {"limit": PGMQ_WILDCARD_MAX + 1})]
    truncated = len(names) > PGMQ_WILDCARD_MAX
    names = names[:PGMQ_WILDCARD_MAX]
    present = set(names)
    dead_letter_of = {}
    for n in names:
        base = dlq_base(n)
        if base is not None and base in present and base not in dead_letter_of:
            dead_letter_of[base] = n
    unreadable = []
    for n in names[:PGMQ_NAMED_MAX]:
        for prefix in ("q", "a"):
            rel = f"pgmq.{prefix}_{n}"
            exists, readable, _ = await relation(conn, rel)
            if exists and not readable:
                unreadable.append(rel)
    found.pgmq = PgmqQueues(names, dead_letter_of, truncated, unreadable)


def extensions() -> list[Extension]:
    return [
        Extension("cron", "pg_cron", ("cron.job", "cron.job_run_details")),
        Extension("pgnet", "pg_net", ("net._http_response", "net.http_request_queue")),
    ]


async def find_extension(conn: psycopg.AsyncConnection, ext: Extension) -> None:
    """Present when its first table exists (pg_net's queue table is optional for us)."""
    exists, _, _ = await relation(conn, ext.tables[0])
    if not exists:
        return
    ext.found = True
    for rel in ext.tables:
        exists, readable, rows = await relation(conn, rel)
        if exists and not readable:
            ext.unreadable.append(rel)
        if exists and rows >= 0:
            ext.notes.append(f"{rel}: about {rows:.0f} rows (planner estimate)")


async def inspect(conn: psycopg.AsyncConnection) -> Discovery:
    db, user, version = await _one(
        conn,
        "SELECT current_database()::text, current_user::text, current_setting('server_version')",
    )
    found = Discovery(db, user, version)
    await find_table_queues(conn, found)
    await find_pgmq(conn, found)
    for ext in extensions():
        await find_extension(conn, ext)
        found.extensions.append(ext)
    return found


# --- what the exporter can take -----------------------------------------------------------


def accepts_pgmq() -> bool:
    """Whether this exporter's configuration takes a `pgmq:` queue item (PLAN13's shape),
    found by validating one rather than by a version number."""
    try:
        parse_config("targets: [{name: t, dsn: 'host=localhost', queues: [{pgmq: q}]}]")
    except ConfigError:
        return False
    return True


def has_collector(name: str) -> bool:
    return name in sources.collector_names()


# --- rendering ----------------------------------------------------------------------------

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*$")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf"}


def scalar(value: object) -> str:
    """A YAML scalar: plain when unambiguous, else double-quoted with every character the
    config reader refuses (controls, surrogates) escaped."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _YAML_WORDS:
        return text
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif unicodedata.category(ch) in ("Cc", "Cs", "Cn", "Co") or ch in "\u2028\u2029":
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def flow_list(values: list[str]) -> str:
    return "[" + ", ".join(scalar(v) for v in values) + "]"


def one_line(text: str) -> str:
    """Text from the database made safe for a comment: one line, no control characters."""
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)


def _q(value: str) -> str:
    return one_line(repr(value))


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {describe_error(e)}"


class Writer:
    """Lines of YAML with comments; `data` is what the YAML says, to check the text against."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def comment(self, indent: int, text: str = "") -> None:
        pad = " " * indent
        self.lines.append(f"{pad}# {one_line(text)}".rstrip())

    def line(self, indent: int, text: str, comment: str | None = None) -> None:
        tail = f"  # {one_line(comment)}" if comment else ""
        self.lines.append(" " * indent + text + tail)

    def blank(self) -> None:
        self.lines.append("")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def target_dsn(dsn: str) -> tuple[str, list[str]]:
    """The DSN to write (every password-like parameter removed) and what was removed."""
    from psycopg.conninfo import make_conninfo

    params = parse_dsn(dsn)
    removed = [k for k in params if looks_secret(k)]
    for k in removed:
        if params[k]:
            register_secret(params[k])
        del params[k]
    return make_conninfo("", **params), removed


@dataclass
class Rendered:
    text: str
    data: dict
    monitored: int  # queues and collectors the configuration monitors
    commented: int  # items left as comments because this exporter cannot take them yet


def table_item(q: TableQueue) -> dict:
    item: dict[str, Any] = {"table": q.qualified}
    if q.name:
        item["name"] = q.name
    item["status_column"] = q.status_column
    item["statuses"] = {r: q.statuses[r] for r in ROLES if q.statuses[r] or r == "dead"}
    item["created_at_column"] = q.created_at
    item["updated_at_column"] = q.updated_at
    item["retry_count_column"] = q.retry_count
    if q.dead_letter_table:
        item["dead_letter_table"] = ".".join(q.dead_letter_table)
    return item


def pgmq_items(p: PgmqQueues) -> list[dict]:
    """The pgmq queue items of PLAN13: one per queue up to PGMQ_NAMED_MAX (a queue that is
    another's dead-letter queue is named as its `dead_letter_queue` instead), else one
    `pgmq: "*"` following up to the number found."""
    if len(p.names) > PGMQ_NAMED_MAX:
        return [{"pgmq": "*", "max_queues": min(len(p.names), PGMQ_WILDCARD_MAX)}]
    dlqs = set(p.dead_letter_of.values())
    items = []
    for n in p.names:
        if n in dlqs:
            continue
        item: dict[str, Any] = {"pgmq": n}
        if n in p.dead_letter_of:
            item["dead_letter_queue"] = p.dead_letter_of[n]
        items.append(item)
    return items


def _write_item(w: Writer, indent: int, item: dict, comments: dict[str, str], live: bool) -> None:
    """One queue item (a mapping), each key on its line; `live` False writes it commented."""
    lines: list[tuple[str, str | None]] = []
    for i, (key, value) in enumerate(item.items()):
        head = "- " if i == 0 else "  "
        if isinstance(value, dict):
            lines.append((f"{head}{key}:", comments.get(key)))
            for k, v in value.items():
                shown = flow_list(v) if isinstance(v, list) else scalar(v)
                lines.append((f"    {k}: {shown}", comments.get(f"{key}.{k}")))
        else:
            shown = "null" if value is None else scalar(value)
            lines.append((f"{head}{key}: {shown}", comments.get(key)))
    for text, comment in lines:
        if live:
            w.line(indent, text, comment)
        else:
            w.comment(indent, text + (f"  # {comment}" if comment else ""))


def render(
    found: Discovery,
    dsn: str,
    name: str,
    checks: list[str] | None = None,
    pgmq_live: bool | None = None,
) -> Rendered:
    """The configuration text with its comments. `checks` are the doctor's lines (comments);
    `pgmq_live` whether pgmq items are configuration or comments (None: ask accepts_pgmq)."""
    w = Writer()
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    w.comment(0, f"runbook-exporter configuration written by `runbook-exporter discover`, {now}")
    w.comment(
        0,
        f'from database "{found.database}" as role "{found.user}" (PostgreSQL {found.version}).',
    )
    w.comment(0, "Review it, then: runbook-exporter --config.file=<this file> --check-config")
    safe, removed = target_dsn(dsn)
    monitored = commented = 0
    target: dict[str, Any] = {"name": name, "dsn": safe}
    w.line(0, "targets:")
    w.line(2, f"- name: {scalar(name)}")
    if removed:
        w.comment(
            4,
            f"the DSN given had a {' and '.join(removed)}: it is not written here; the exporter "
            f"reads the password from the environment variable {PASSWORD_ENV}",
        )
    w.line(4, f"dsn: {scalar(safe)}")
    if "password" in removed:
        target["password_env"] = PASSWORD_ENV
        w.line(4, f"password_env: {PASSWORD_ENV}")

    items: list[dict] = []
    if pgmq_live is None:
        pgmq_live = accepts_pgmq()
    pgmq_live = pgmq_live and found.pgmq is not None
    if pgmq_live and found.pgmq is not None:
        # a pgmq queue's label is its name: a table queue of the same name takes a longer one
        taken = {str(i["pgmq"]) for i in pgmq_items(found.pgmq)}
        for q in found.queues:
            if (q.name or q.table) in taken:
                q.name = label_value(f"{q.schema}_{q.table}")
    if found.queues or found.pgmq is not None:
        w.line(4, "queues:")
    for q in found.queues:
        item = table_item(q)
        items.append(item)
        monitored += 1
        w.comment(
            6, f"{q.qualified}: a job queue, by its column {q.status_column} ({q.status_type})"
        )
        w.comment(6, f"  status values from {q.values_from}:")
        for role in ROLES:
            for v in q.statuses[role]:
                if role not in q.assumed:
                    w.comment(6, f"    {_q(v)} -> {role}")
        if q.assumed:
            w.comment(
                6,
                f"  no value seen for {', '.join(q.assumed)}: runbook 000's name for it is kept "
                "(it matches nothing until the app writes it)",
            )
        if not q.statuses["dead"]:
            w.comment(6, "  no dead status seen: dead: [] (a value here would be counted as dead)")
        if q.unmapped:
            why = [
                f"{_q(v)} (a deliberate stop: neither completed, failed nor dead)"
                if normalise(v) in NOT_MAPPED_ON_PURPOSE
                else _q(v)
                for v in q.unmapped
            ]
            w.comment(
                6,
                "  not mapped, so not counted (add them to a role if they matter): "
                + ", ".join(why),
            )
        if q.retry_count is None:
            w.comment(
                6,
                f"  no retry-count column ({', '.join(RETRY_NAMES[:4])}, ...): "
                "retries_exhausted stays 0",
            )
        for note in q.notes:
            w.comment(6, f"  {note}")
        comments = {}
        if q.dead_letter_table:
            comments["dead_letter_table"] = "inferred from its name"
        _write_item(w, 6, item, comments, live=True)
    if found.pgmq is not None:
        p = found.pgmq
        live = pgmq_live
        what = f"{len(p.names)}{'+' if p.truncated else ''} queue(s) in pgmq.meta"
        w.comment(
            6,
            f"pgmq: {what}"
            + (f": {', '.join(p.names)}" if p.names and len(p.names) <= PGMQ_NAMED_MAX else ""),
        )
        if len(p.names) > PGMQ_NAMED_MAX:
            w.comment(
                6,
                f'  more than {PGMQ_NAMED_MAX}: one `pgmq: "*"` item follows them all (up to '
                "max_queues); name a queue in its own item to give it its own thresholds",
            )
            if p.dead_letter_of:
                pairs = ", ".join(f"{d} for {q}" for q, d in sorted(p.dead_letter_of.items()))
                w.comment(
                    6,
                    f"  dead-letter queues by their names (configure by name to use them): {pairs}",
                )
        if not live:
            w.comment(
                6,
                "  this runbook-exporter cannot monitor pgmq queues yet: the items are commented "
                "out (a version with pgmq support takes them as they are)",
            )
        for item in pgmq_items(p) if p.names else []:
            comments = {"dead_letter_queue": "inferred from its name"}
            _write_item(w, 6, item, comments, live)
            if live:
                items.append(item)
                monitored += 1
            else:
                commented += 1
    if items:
        target["queues"] = items
    elif "queues" not in target and (found.queues or found.pgmq is not None):
        # only commented items: an empty list keeps `queues:` valid
        w.lines[w.lines.index("    queues:")] = "    queues: []"
        target["queues"] = []

    on = [e for e in found.extensions if e.found and has_collector(e.collector)]
    off = [e for e in found.extensions if e.found and not has_collector(e.collector)]
    if on:
        w.line(4, "collectors:")
        target["collectors"] = {}
        for e in on:
            w.comment(6, f"{e.title}: {', '.join(e.tables)} found")
            for note in e.notes:
                w.comment(6, f"  {note}")
            w.line(6, f"{e.collector}:")
            w.line(8, "enabled: true")
            target["collectors"][e.collector] = {"enabled": True}
            monitored += 1
    for e in off:
        w.comment(4, f"{e.title}: {', '.join(e.tables)} found; this runbook-exporter has no")
        w.comment(4, f"{e.collector} collector yet. A version that has one takes:")
        w.comment(4, f"collectors: {{{e.collector}: {{enabled: true}}}}")
        commented += 1
    if found.notes:
        w.blank()
        w.comment(0, "Seen but not configured:")
        for note in found.notes:
            w.comment(0, f"  - {note}")
    if checks:
        w.blank()
        w.comment(0, "Checks (the doctor's, on this database and this configuration):")
        for line in checks:
            w.comment(0, line)
    return Rendered(w.text(), {"targets": [target]}, monitored, commented)


# --- privileges and the doctor --------------------------------------------------------------


async def grants(conn: psycopg.AsyncConnection, found: Discovery) -> list[str]:
    """GRANT statements for relations the configuration reads that the role cannot."""
    rels: list[tuple[str, str]] = list(found.unreadable)
    for q in found.queues:
        if not q.readable:
            rels.append((q.schema, q.table))
        if q.dead_letter_table and not q.dlq_readable:
            rels.append(q.dead_letter_table)
    named = [*(found.pgmq.unreadable if found.pgmq else [])]
    for e in found.extensions:
        if e.found:
            named.extend(e.unreadable)
    rels.extend((schema, table) for schema, table in (n.split(".", 1) for n in named))
    if not rels:
        return []
    # quoted as PostgreSQL prints names: bare when it can be
    rows = await _all(
        conn,
        "SELECT quote_ident(s) || '.' || quote_ident(t), quote_ident(current_user)"
        " FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS r(s, t, i) ORDER BY i",
        ([s for s, _ in rels], [t for _, t in rels]),
    )
    return [f"GRANT SELECT ON {r} TO {role};" for r, role in rows]


async def doctor_lines(conn: psycopg.AsyncConnection, config_text: str) -> tuple[list[str], int]:
    """The doctor's checks of the generated target on this session (pg_monitor, every
    collector's checks such as pg_stat_statements, each queue's privileges and indexes), as
    text lines, and its number of findings."""
    from exporter.doctor import Report, check_target

    config = parse_config(config_text, "discover")
    report = Report()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            await check_target(conn, config.targets[0], report)
        except psycopg.Error as e:
            report.error(f"check aborted: {_err(e)}")
        except Exception as e:  # a check that cannot run here must not cost the configuration
            report.error(f"check aborted: {type(e).__name__}: {redact(str(e))}")
    return [line.rstrip() for line in buf.getvalue().splitlines() if line.strip()], report.findings


# --- the command --------------------------------------------------------------------------


def _fail(message: str) -> int:
    print(f"error: {redact(message)}", file=sys.stderr)
    return 2


def _connection_target(dsn: str) -> Target:
    return Target.model_validate({"name": "discover", "dsn": dsn})


async def _discover(dsn: str, name: str | None) -> tuple[Rendered, list[str]] | str:
    """The configuration and the lines for stderr, or the one-line error."""
    try:
        target = _connection_target(dsn)
    except ValidationError as e:
        msg = "; ".join(str(err["msg"]).removeprefix("Value error, ") for err in e.errors())
        return f"--dsn: {msg}"
    pgmq_live = accepts_pgmq()  # asked once: both renderings must agree
    try:
        conn = await open_connection(target, application_name=APPLICATION_NAME)
    except ConfigError as e:
        return str(e)
    except Exception as e:
        return f"cannot connect to {target.safe_dsn()}: {describe_error(e)}"
    try:
        async with conn:
            found = await inspect(conn)
            label = name if name is not None else label_value(found.database)
            first = render(found, dsn, label, pgmq_live=pgmq_live)
            problem = _check(first)
            if problem is not None:
                return problem
            checks, _ = await doctor_lines(conn, first.text)
            fixes = await grants(conn, found)
    except psycopg.Error as e:
        return f"inspecting the database failed: {_err(e)}"
    if fixes:
        checks = [*checks, "  FINDING  the role cannot read relations the configuration names:"]
        checks += [f"             {g}" for g in fixes]
    out = render(found, dsn, label, checks, pgmq_live=pgmq_live)
    return out, checks


def _check(rendered: Rendered) -> str | None:
    """Why the generated text is not what it means to say, or None: its YAML must read back
    as the data it was written from, and the configuration must validate."""
    if yaml.safe_load(rendered.text) != rendered.data:
        return "the generated configuration does not read back as written (a bug: please report)"
    try:
        parse_config(rendered.text, "discover")
    except ConfigError as e:
        return f"the generated configuration is not valid (a bug: please report): {e}"
    return None


def write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent or Path("."), prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def run_discover(dsn: str, name: str | None, output: str | None, force: bool = False) -> int:
    if name is not None and not re.match(LABEL_VALUE_RE, name):
        return _fail(
            f"--name {json.dumps(name)}: a target name is a label value: a letter or _, then "
            "letters, digits, _ . : - (at most 63)"
        )
    out_path = Path(output) if output else None
    if out_path is not None and out_path.exists() and not force:
        return _fail(f"--output {out_path}: the file exists; give --force to replace it")
    try:
        result = asyncio.run(_discover(dsn, name))
    except KeyboardInterrupt:
        return _fail("interrupted")
    except Exception as e:  # a bug: one line, never a traceback (nor the DSN)
        return _fail(f"discover failed (a bug: please report): {_err(e)}")
    if isinstance(result, str):
        return _fail(result)
    rendered, checks = result
    problem = _check(rendered)
    if problem is not None:
        return _fail(problem)
    text = rendered.text
    if redact(text) != text:  # the net under target_dsn: no secret is ever written
        return _fail(
            "the DSN's password also appears elsewhere in the configuration (a database, role "
            "or table name?): refusing to print it"
        )
    if out_path is not None:
        try:
            write_atomically(out_path, text)
        except OSError as e:
            return _fail(f"--output {out_path}: {e.strerror}")
    else:
        sys.stdout.write(text)
    for line in checks:
        print(redact(line), file=sys.stderr)
    what = f"{rendered.monitored} item(s) to monitor"
    if rendered.commented:
        what += f", {rendered.commented} left as comments (not supported by this version)"
    where = f" to {out_path}" if out_path is not None else ""
    print(f"discover: wrote the configuration{where}: {what}", file=sys.stderr)
    return 0 if rendered.monitored else 1
