"""What `runbook-exporter discover` reads from the database: the catalog, planner statistics,
pgmq.meta, and -- for a table without statistics only -- a bounded sample of a status column.
Every statement costs O(catalog) or is bounded by a LIMIT (docs/configuration.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from exporter.configtypes import LABEL_VALUE_RE
from exporter.db import describe_error, savepoint
from exporter.discover.presets import FoundLibrary, find_libraries
from exporter.discover.statuses import (
    CREATED_NAMES,
    QUEUE_NAME_HINT,
    RETRY_NAMES,
    TIMESTAMP_TYPES,
    UPDATED_NAMES,
    dlq_base,
    job_like,
    label_value,
    map_values,
)

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
    # job libraries found by their presets (presets.py), and the tables they own
    libraries: list[FoundLibrary] = field(default_factory=list)
    claimed: set[tuple[str, str]] = field(default_factory=set)
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


async def all_rows(conn: psycopg.AsyncConnection, query: Any, params: Any = None) -> list[tuple]:
    cur = await conn.execute(query, params, prepare=False)
    return await cur.fetchall()


async def one_row(conn: psycopg.AsyncConnection, query: Any, params: Any = None) -> Any:
    cur = await conn.execute(query, params, prepare=False)
    return await cur.fetchone()


async def relation(conn: psycopg.AsyncConnection, qualified: str) -> tuple[bool, bool, float]:
    """(exists, readable, estimated rows) of a relation, from the catalog."""
    quoted = sql.Identifier(*qualified.split(".", 1)).as_string(conn)
    exists, readable, rows = await one_row(conn, RELATION_SQL, (quoted,))
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
    return [v for (v,) in await all_rows(conn, q)]


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


async def find_table_queues(conn: psycopg.AsyncConnection, found: Discovery) -> None:
    rows = await all_rows(
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
    # a job library's own tables are its preset's, not hand-rolled queues
    cands = [c for c in (_Candidate(*r) for r in rows) if (c.schema, c.table) not in found.claimed]
    if not cands:
        return
    rels = sorted({c.oid for c in cands})
    columns: dict[int, dict[str, tuple[str, str]]] = {}
    for rel, name, typ, cat in await all_rows(conn, COLUMNS_SQL, {"rels": rels}):
        columns.setdefault(rel, {})[name] = (typ, cat)
    checks: dict[tuple[int, int], list[str]] = {}
    for rel, attnum, definition in await all_rows(conn, CHECKS_SQL, {"rels": rels}):
        checks.setdefault((rel, attnum), []).extend(_quoted_literals(definition))
    stats: dict[tuple[str, str, str], list[str]] = {}
    for schema, table, col, mcv, hist in await all_rows(
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
        if "." in c.schema or "." in c.table:  # `table: schema.name` cannot say it
            found.notes.append(f"{shown(where)}: a name holding a '.' is not looked at")
            continue
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
                async with savepoint(conn):  # the inspection is one transaction: keep it usable
                    values = await _sample(conn, c.schema, c.table, c.column)
            except (psycopg.errors.QueryCanceled, psycopg.errors.InsufficientPrivilege) as e:
                found.notes.append(f"{where}: could not sample column {c.column}: {error_text(e)}")
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
                f"{', '.join(shown(v) for v in values)}) but has no {missing} timestamp column "
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
        chosen[c.oid] = q
    found.queues = sorted(chosen.values(), key=lambda q: (q.schema, q.table))
    await attach_dead_letter_tables(conn, found)
    _unique_labels(found.queues)


async def attach_dead_letter_tables(conn: psycopg.AsyncConnection, found: Discovery) -> None:
    """Tables named like dead-letter tables become the dead_letter_table of their queue: the
    queue of the same schema whose table name is the DLQ's base name, else the only queue of
    the schema whose name ends with `_<base>` (dead_letter_jobs -> processing_jobs)."""
    rows = await all_rows(conn, DLQ_TABLES_SQL, {"limit": CANDIDATES_MAX})
    queues = found.queues
    for schema, table, readable in rows:
        base = dlq_base(table)
        if base is None or "." in schema or "." in table:
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


PGMQ_META_SQL = "SELECT queue_name::text FROM pgmq.meta ORDER BY queue_name LIMIT %(limit)s"


async def find_pgmq(conn: psycopg.AsyncConnection, found: Discovery) -> None:
    exists, readable, _ = await relation(conn, "pgmq.meta")
    if not exists:
        return
    if not readable:
        found.pgmq = PgmqQueues([], {}, False, ["pgmq.meta"])
        return
    names = [n for (n,) in await all_rows(conn, PGMQ_META_SQL, {"limit": PGMQ_WILDCARD_MAX + 1})]
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
    db, user, version = await one_row(
        conn,
        "SELECT current_database()::text, current_user::text, current_setting('server_version')",
    )
    found = Discovery(db, user, version)
    found.libraries, found.claimed = await find_libraries(conn)
    await find_table_queues(conn, found)
    await find_pgmq(conn, found)
    for ext in extensions():
        await find_extension(conn, ext)
        found.extensions.append(ext)
    return found


def one_line(text: str) -> str:
    """Text from the database made safe for a comment: one line, no control characters."""
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)


def shown(value: str) -> str:
    return one_line(repr(value))


def error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {describe_error(e)}"
