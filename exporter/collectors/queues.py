"""Job queues kept in a PostgreSQL table (runbooks 000 and 003): depth per status role, oldest
pending job, stuck and retries-exhausted jobs, dead letters, recently finished jobs.

Every query costs O(active jobs), not O(table): the active roles (pending, processing, failed,
dead) are read in one query that a partial index on the status column serves, recently
finished jobs in one query that a partial index on updated_at serves, and completed jobs --
the rows that grow to millions -- are estimated from planner statistics unless the queue asks
for an exact count. `runbook-exporter doctor` prints the indexes a queue lacks; docs/queues.md
explains the queries and has the measured plans.

Status values that no role maps are not counted (no status="other"): only a scan of every row
outside the known values could count them, and an unmapped terminal status such as
'cancelled' grows as fast as 'completed'. The doctor lists unmapped values it sees in the
planner statistics instead.

The table and its columns are checked in the catalog once per connection. A queue whose table
or column is missing, or whose query fails, loses its own series only: the target's other
queues are still served, `runbook_queue_up{queue}` is 0 for it, and the collector's run counts as
failed (`runbook_collector_success` 0, so RunbookCollectorFailing fires) with a message naming
the config path, e.g. `targets[0].queues[1].table: table "public.jobz" does not exist`. Failing
queues are checked again on every run, so they recover as soon as the table appears.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import psycopg
from prometheus_client.core import Metric
from psycopg import sql

from exporter.config import Queue, Target
from exporter.db import savepoint
from exporter.metrics import spec
from exporter.scheduler import PartialFailure
from exporter.sources import Collector

SRC = "collectors/queues.py"
TQ = ("target", "queue")

JOBS = spec(
    "runbook_queue_jobs",
    "gauge",
    "Jobs in the queue by status role (pending, processing, failed, dead; completed only with "
    "count_terminal: exact), counted exactly.",
    (*TQ, "status"),
    SRC,
)
JOBS_ESTIMATED = spec(
    "runbook_queue_jobs_estimated",
    "gauge",
    "Completed jobs estimated from planner statistics (count_terminal: estimate); as fresh as "
    "the table's last ANALYZE, scaled by its current size.",
    (*TQ, "status"),
    SRC,
)
OLDEST_PENDING = spec(
    "runbook_queue_oldest_pending_age_seconds",
    "gauge",
    "Age (now - created_at) of the oldest pending job; 0 when none is pending.",
    TQ,
    SRC,
)
STUCK = spec(
    "runbook_queue_stuck_jobs",
    "gauge",
    "Processing jobs whose updated_at is older than the queue's stuck_after.",
    TQ,
    SRC,
)
RETRIES_EXHAUSTED = spec(
    "runbook_queue_retries_exhausted_jobs",
    "gauge",
    "Failed jobs with retry_count >= max_retries: no automatic retry left, they need a person "
    "(0 when the queue has no retry_count_column).",
    TQ,
    SRC,
)
DEAD_LETTER = spec(
    "runbook_queue_dead_letter_jobs",
    "gauge",
    "Dead-lettered jobs: rows with a dead status plus the rows of the dead_letter_table; absent "
    "when the queue has neither.",
    TQ,
    SRC,
)
RECENT = spec(
    "runbook_queue_recent_jobs",
    "gauge",
    "Jobs that reached the completed or failed role within the queue's recent_window (by "
    "updated_at).",
    (*TQ, "outcome"),
    SRC,
)

QUEUE_UP = spec(
    "runbook_queue_up",
    "gauge",
    "1 when the queue's last collection succeeded; 0 when its table, a column or a privilege is "
    "missing or its query failed (its other series are then absent).",
    TQ,
    SRC,
)

TIMESTAMP_TYPES = ("timestamp with time zone", "timestamp without time zone")


class QueueConfigError(Exception):
    """The database does not match a queue's configuration; the message names the config path."""


# --- the catalog check ------------------------------------------------------------------

CATALOG_SQL = """
SELECT c.relkind::text,
       has_any_column_privilege(c.oid, 'SELECT'),
       a.attname::text,
       format_type(a.atttypid, NULL),
       t.typcategory::text,
       has_column_privilege(c.oid, a.attnum, 'SELECT'),
       CASE WHEN t.typtype = 'e' THEN
           ARRAY(SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid)
       END
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_type t ON t.oid = a.atttypid
WHERE n.nspname = %s AND c.relname = %s
"""
SELECTABLE = {"r": "table", "p": "partitioned table", "v": "view", "m": "view", "f": "table"}


@dataclass(frozen=True)
class Column:
    type: str  # format_type, e.g. "timestamp with time zone"
    category: str  # pg_type.typcategory: S string, E enum, N numeric, D date/time
    readable: bool
    enum_labels: tuple[str, ...] | None


@dataclass
class TableInfo:
    relkind: str
    readable: bool
    columns: dict[str, Column] = field(default_factory=dict)


async def table_info(conn: psycopg.AsyncConnection, qualified: str) -> TableInfo | None:
    """The relation's kind, privileges and columns from the catalog; None when it is missing."""
    schema, name = qualified.split(".", 1)
    cur = await conn.execute(CATALOG_SQL, (schema, name), prepare=False)
    rows = await cur.fetchall()
    if not rows:
        return None
    info = TableInfo(rows[0][0], bool(rows[0][1]))
    for _, _, col, typ, cat, readable, labels in rows:
        if col is not None:
            info.columns[col] = Column(typ, cat, bool(readable), tuple(labels) if labels else None)
    return info


def queue_path(target: Target, queue: Queue) -> str:
    """The queue's path in the config file (targets[0].queues[1]) for error messages."""
    if queue._path:
        return queue._path
    # a Target built outside a Config (tests, the API): name it by target name instead
    return f"target {target.name}: queues[{target.queues.index(queue)}]"


def _relation_problem(path: str, key: str, name: str, info: TableInfo | None) -> str | None:
    """Why the relation `name` (config key `key`) cannot be read, or None when it can."""
    if info is None:
        return f'{path}.{key}: table "{name}" does not exist'
    if info.relkind not in SELECTABLE:
        return f'{path}.{key}: "{name}" is not a table or view'
    if not info.readable:
        return f'{path}.{key}: permission denied: cannot SELECT from "{name}"'
    return None


def queue_problems(
    path: str, queue: Queue, info: TableInfo | None, dlq: TableInfo | None
) -> list[str]:
    """What in the catalog keeps the queue's queries from working, one message per problem."""
    problems: list[str] = []
    problem = _relation_problem(path, "table", queue.table, info)
    if problem is not None:
        problems.append(problem)
    elif info is not None:
        wanted: list[tuple[str, str, tuple[str, ...], str]] = [
            ("status_column", queue.status_column, ("S", "E"), "text, varchar or an enum"),
            ("created_at_column", queue.created_at_column, ("D",), "timestamptz or timestamp"),
            ("updated_at_column", queue.updated_at_column, ("D",), "timestamptz or timestamp"),
        ]
        if queue.retry_count_column is not None:
            wanted.append(("retry_count_column", queue.retry_count_column, ("N",), "an integer"))
        for key, col, cats, expected in wanted:
            c = info.columns.get(col)
            if c is None:
                problems.append(
                    f'{path}.{key}: column "{col}" does not exist in table "{queue.table}"'
                )
            elif c.category not in cats or (cats == ("D",) and c.type not in TIMESTAMP_TYPES):
                problems.append(
                    f'{path}.{key}: column "{col}" of table "{queue.table}" has type {c.type},'
                    f" expected {expected}"
                )
            elif not c.readable:
                problems.append(
                    f'{path}.{key}: permission denied: cannot SELECT column "{col}"'
                    f' of "{queue.table}"'
                )
        status = info.columns.get(queue.status_column)
        if status is not None and status.enum_labels is not None:
            # an unknown enum label would make every query fail with "invalid input value"
            for role, value in sorted((r, v) for v, r in queue.statuses.role_of().items()):
                if value not in status.enum_labels:
                    problems.append(
                        f"{path}.statuses.{role}: {value!r} is not a value of the enum type"
                        f' {status.type} of column "{queue.status_column}"'
                    )
    if queue.dead_letter_table is not None:
        problem = _relation_problem(path, "dead_letter_table", queue.dead_letter_table, dlq)
        if problem is not None:
            problems.append(problem)
    return problems


async def check_queue(
    conn: psycopg.AsyncConnection, target: Target, queue: Queue
) -> tuple[TableInfo | None, list[str]]:
    """The queue's table as the catalog has it (None when missing) and its problems."""
    info = await table_info(conn, queue.table)
    dlq = await table_info(conn, queue.dead_letter_table) if queue.dead_letter_table else None
    return info, queue_problems(queue_path(target, queue), queue, info, dlq)


# --- the queries ------------------------------------------------------------------------


def _ident(qualified: str) -> sql.Identifier:
    return sql.Identifier(*qualified.split(".", 1))


def _in(column: sql.Composable, prefix: str, values: list[str]) -> sql.Composable:
    """`column IN (%(p0)s, ...)`: untyped parameters take the column's type (text, varchar or
    an enum), and planned with their values they let the planner prove a partial index's
    `status IN (...)` predicate."""
    if not values:
        return sql.SQL("false")
    marks = sql.SQL(", ").join(sql.Placeholder(f"{prefix}{i}") for i in range(len(values)))
    return sql.SQL("{} IN ({})").format(column, marks)


def _params(prefix: str, values: list[str]) -> dict[str, Any]:
    return {f"{prefix}{i}": v for i, v in enumerate(values)}


@dataclass(frozen=True)
class Query:
    name: str  # short name used by the doctor, the bench and docs/queues.md
    text: sql.Composed
    params: dict[str, Any]
    index_column: str | None  # the column an index must bound for the query to be O(active)
    # the status values of that index's predicate (WHERE status IN (...)); [] when no index
    index_statuses: list[str] = field(default_factory=list)


def active_statuses(queue: Queue) -> list[str]:
    s = queue.statuses
    return [*s.pending, *s.processing, *s.failed, *s.dead]


def finished_statuses(queue: Queue) -> list[str]:
    return [*queue.statuses.completed, *queue.statuses.failed]


def active_query(queue: Queue) -> Query:
    """Per active status: count, oldest created_at, stale updated_at, retries exhausted.

    One pass over the rows of the active statuses, served by a partial index on the status
    column; Python then sums the statuses into roles (stale only counts for processing,
    exhausted only for failed, oldest only for pending).
    """
    status = sql.Identifier(queue.status_column)
    retry = (
        sql.SQL("count(*) FILTER (WHERE {} >= %(max_retries)s)").format(
            sql.Identifier(queue.retry_count_column)
        )
        if queue.retry_count_column
        else sql.SQL("0")
    )
    text = sql.SQL(
        "SELECT {status}::text, count(*),"
        " GREATEST(EXTRACT(EPOCH FROM now() - min({created})), 0)::float8,"
        " count(*) FILTER (WHERE {updated} < now() - make_interval(secs => %(stuck_after)s)),"
        " {retry}"
        " FROM {table} WHERE {cond} GROUP BY {status}"
    ).format(
        status=status,
        created=sql.Identifier(queue.created_at_column),
        updated=sql.Identifier(queue.updated_at_column),
        retry=retry,
        table=_ident(queue.table),
        cond=_in(status, "a", active_statuses(queue)),
    )
    params: dict[str, Any] = {
        "stuck_after": float(queue.stuck_after),
        **_params("a", active_statuses(queue)),
    }
    if queue.retry_count_column:
        params["max_retries"] = queue.max_retries
    return Query("active", text, params, queue.status_column, active_statuses(queue))


def recent_query(queue: Queue) -> Query:
    """Jobs that reached completed / failed within recent_window: a range of updated_at over
    the finished statuses, served by a partial index on updated_at."""
    status = sql.Identifier(queue.status_column)
    updated = sql.Identifier(queue.updated_at_column)
    s = queue.statuses
    text = sql.SQL(
        "SELECT count(*) FILTER (WHERE {done}), count(*) FILTER (WHERE {failed})"
        " FROM {table}"
        " WHERE {updated} >= now() - make_interval(secs => %(window)s) AND {cond}"
    ).format(
        done=_in(status, "c", s.completed),
        failed=_in(status, "f", s.failed),
        table=_ident(queue.table),
        updated=updated,
        cond=_in(status, "t", finished_statuses(queue)),
    )
    params = {
        "window": float(queue.recent_window),
        **_params("c", s.completed),
        **_params("f", s.failed),
        **_params("t", finished_statuses(queue)),
    }
    return Query("recent", text, params, queue.updated_at_column, finished_statuses(queue))


def completed_query(queue: Queue) -> Query:
    """The completed rows: counted when count_terminal is exact (O(table) by nature), or the
    planner's row estimate of this query (EXPLAIN, no execution) when it is estimate."""
    status = sql.Identifier(queue.status_column)
    what = sql.SQL("1") if queue.count_terminal == "estimate" else sql.SQL("count(*)")
    text = sql.SQL("SELECT {} FROM {} WHERE {}").format(
        what, _ident(queue.table), _in(status, "c", queue.statuses.completed)
    )
    return Query("completed", text, _params("c", queue.statuses.completed), None)


def dead_letter_query(queue: Queue) -> Query | None:
    if queue.dead_letter_table is None:
        return None
    text = sql.SQL("SELECT count(*) FROM {}").format(_ident(queue.dead_letter_table))
    return Query("dead_letter", text, {}, None)


def queries(queue: Queue) -> list[Query]:
    """Every query a scrape of the queue runs, in order (for the doctor and the bench)."""
    out = [active_query(queue), recent_query(queue)]
    if queue.count_terminal != "off" and queue.statuses.completed:
        out.append(completed_query(queue))
    dlq = dead_letter_query(queue)
    if dlq is not None:
        out.append(dlq)
    return out


async def run(conn: psycopg.AsyncConnection, query: Query) -> list[tuple]:
    # prepare=False: a prepared statement may get a generic plan, and with parameters as
    # placeholders the planner cannot prove a partial index's predicate; planned with the
    # values every time, it can (planning these statements costs well under a millisecond)
    cur = await conn.execute(query.text, query.params, prepare=False)
    return await cur.fetchall()


async def explain_plan(conn: psycopg.AsyncConnection, query: Query) -> dict | None:
    """The query's plan (EXPLAIN without executing it): the top node of EXPLAIN (FORMAT JSON),
    None when there is none."""
    explain = sql.SQL("EXPLAIN (FORMAT JSON) ") + query.text
    cur = await conn.execute(explain, query.params, prepare=False)
    row = await cur.fetchone()
    plan = row[0] if row else None
    if isinstance(plan, str):  # a json column psycopg did not load (custom loaders)
        import json

        plan = json.loads(plan)
    return plan[0]["Plan"] if plan else None


async def estimate_rows(conn: psycopg.AsyncConnection, query: Query) -> float:
    """The planner's row estimate: reltuples/relpages from the last ANALYZE scaled to the
    table's current size, times the selectivity of the status values (most common values)."""
    plan = await explain_plan(conn, query)
    return float(plan["Plan Rows"]) if plan else 0.0


# --- the collector ----------------------------------------------------------------------


_SCHEMA_ERRORS = (
    psycopg.errors.UndefinedTable,
    psycopg.errors.UndefinedColumn,
    psycopg.errors.InsufficientPrivilege,
    psycopg.errors.InvalidTextRepresentation,  # a status value the enum does not have
)


async def collect_queue(conn: psycopg.AsyncConnection, target: Target, q: Queue) -> list[Metric]:
    t, label, s = target.name, q.label, q.statuses
    role = s.role_of()
    jobs = JOBS.family()
    totals = dict.fromkeys(("pending", "processing", "failed", "dead"), 0)
    oldest = stuck = exhausted = 0.0
    for status, count, age, stale, spent in await run(conn, active_query(q)):
        r = role.get(status)
        if r is None:  # cannot happen: the WHERE only selects mapped values
            continue
        totals[r] += count
        if r == "pending":
            oldest = max(oldest, float(age or 0))
        elif r == "processing":
            stuck += stale
        elif r == "failed":
            exhausted += spent
    for r in ("pending", "processing", "failed"):
        jobs.add_metric([t, label, r], totals[r])
    if s.dead:
        jobs.add_metric([t, label, "dead"], totals["dead"])
    out: list[Metric] = [
        OLDEST_PENDING.one(oldest, t, label),
        STUCK.one(stuck, t, label),
        RETRIES_EXHAUSTED.one(exhausted, t, label),
    ]

    done, failed = (await run(conn, recent_query(q)))[0]
    recent = RECENT.family()
    recent.add_metric([t, label, "completed"], done)
    recent.add_metric([t, label, "failed"], failed)
    out.append(recent)

    if q.count_terminal == "exact" and s.completed:
        jobs.add_metric([t, label, "completed"], (await run(conn, completed_query(q)))[0][0])
    elif q.count_terminal == "estimate" and s.completed:
        est = await estimate_rows(conn, completed_query(q))
        out.append(JOBS_ESTIMATED.one(est, t, label, "completed"))
    out.append(jobs)

    dlq = dead_letter_query(q)
    if dlq is not None or s.dead:
        dead = totals["dead"] + ((await run(conn, dlq))[0][0] if dlq is not None else 0)
        out.append(DEAD_LETTER.one(dead, t, label))
    return out


# errors that concern one queue and leave the connection usable; anything else (the
# connection broke) fails the whole run so the target reconnects
_QUEUE_ERRORS = (
    *_SCHEMA_ERRORS,
    psycopg.errors.QueryCanceled,  # statement_timeout on this queue's table
    psycopg.errors.LockNotAvailable,
)


class Queues(Collector):
    name = "queues"
    first_run = 30

    def __init__(self, target: Target, settings) -> None:
        super().__init__(target, settings)
        # queues whose catalog check passed on a connection; a new connection checks again
        self._checked: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()

    async def collect_checked(self, conn: psycopg.AsyncConnection, q: Queue) -> list[Metric]:
        """One queue, checked in the catalog first when this connection has not checked it
        yet."""
        target = self.target
        checked = self._checked.setdefault(conn, set())
        if q.label not in checked:
            _, found = await check_queue(conn, target, q)
            if found:
                raise QueueConfigError("; ".join(found))
            checked.add(q.label)
        try:
            async with savepoint(conn):  # the check below runs in the same transaction
                return await collect_queue(conn, target, q)
        except _SCHEMA_ERRORS as e:
            # the table changed since the check (dropped, renamed, grant revoked): check again
            # so the error names the config path rather than the SQL
            checked.discard(q.label)
            _, found = await check_queue(conn, target, q)
            if found:
                raise QueueConfigError("; ".join(found)) from None
            raise QueueConfigError(f"{queue_path(target, q)}: {e}") from e

    async def collect(self, conn: psycopg.AsyncConnection) -> list[Metric]:
        target = self.target
        out: list[Metric] = []
        up = QUEUE_UP.family()
        problems: list[str] = []
        for q in target.queues:
            try:
                async with savepoint(conn):  # a failed queue leaves the others their transaction
                    out.extend(await self.collect_checked(conn, q))
                up.add_metric([target.name, q.label], 1)
            except QueueConfigError as e:
                problems.append(str(e))
                up.add_metric([target.name, q.label], 0)
            except _QUEUE_ERRORS as e:
                if conn.broken or conn.closed:
                    raise
                problems.append(f"{queue_path(target, q)}: {type(e).__name__}: {e}".strip())
                up.add_metric([target.name, q.label], 0)
        out.append(up)
        if problems:
            raise PartialFailure("; ".join(problems), out)
        return out
