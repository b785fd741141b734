"""Job queues kept in a PostgreSQL table (runbooks 000 and 003): the `table:` kind.

Every query costs O(active jobs), not O(table): pending and processing jobs are read in one
query that a partial index on the status column serves; failed and dead jobs -- which pile up
for as long as nobody clears them -- are counted exactly by a second query that a small
deduplicated partial index `(status, retry_count)` answers alone (an index-only scan, no table
rows read); recently finished jobs are one range of a partial index on updated_at; completed
jobs -- the rows that grow to millions -- are estimated from planner statistics unless the queue
asks for an exact count. The recommended indexes are covering (INCLUDE the columns the query
reads), so with the visibility map kept current by autovacuum none of the queries reads the
table itself. `runbook-exporter doctor` prints the indexes a queue lacks (its table
checks are in exporter/doctor.py); docs/queues.md explains the queries and has the measured
plans.

Status values that no role maps are not counted (no status="other"): only a scan of every row
outside the known values could count them, and an unmapped terminal status such as
'cancelled' grows as fast as 'completed'. The doctor lists unmapped values it sees in the
planner statistics instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from exporter.config import Queue, Target
from exporter.queuekinds.base import (
    Member,
    Query,
    QueueKind,
    Reading,
    TableInfo,
    estimate_rows,
    explain_plan,
    ident,
    queue_path,
    relation_problem,
    run,
    table_info,
)

TIMESTAMP_TYPES = ("timestamp with time zone", "timestamp without time zone")


def queue_problems(
    path: str, queue: Queue, info: TableInfo | None, dlq: TableInfo | None
) -> list[str]:
    """What in the catalog keeps the queue's queries from working, one message per problem."""
    problems: list[str] = []
    problem = relation_problem(path, "table", queue.table, info)
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
        problem = relation_problem(path, "dead_letter_table", queue.dead_letter_table, dlq)
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


def active_statuses(queue: Queue) -> list[str]:
    """The statuses of jobs still to run or running: few, whatever the table's age."""
    s = queue.statuses
    return [*s.pending, *s.processing]


def failed_statuses(queue: Queue) -> list[str]:
    """The statuses of jobs that stay until someone clears them: they accumulate."""
    s = queue.statuses
    return [*s.failed, *s.dead]


def finished_statuses(queue: Queue) -> list[str]:
    return [*queue.statuses.completed, *queue.statuses.failed]


def active_query(queue: Queue) -> Query:
    """Per pending or processing status: count, oldest created_at, stale updated_at.

    Served by a partial index on the status column over these statuses only (runbook 000's
    own index does); the recommended one INCLUDEs created_at and updated_at so the scan needs
    no table row. Python sums the statuses into roles (stale only counts for processing,
    oldest only for pending).
    """
    status = sql.Identifier(queue.status_column)
    text = sql.SQL(
        "SELECT {status}::text, count(*),"
        " GREATEST(EXTRACT(EPOCH FROM now() - min({created})), 0)::float8,"
        " count(*) FILTER (WHERE {updated} < now() - make_interval(secs => %(stuck_after)s))"
        " FROM {table} WHERE {cond} GROUP BY {status}"
    ).format(
        status=status,
        created=sql.Identifier(queue.created_at_column),
        updated=sql.Identifier(queue.updated_at_column),
        table=ident(queue.table),
        cond=_in(status, "a", active_statuses(queue)),
    )
    params: dict[str, Any] = {
        "stuck_after": float(queue.stuck_after),
        **_params("a", active_statuses(queue)),
    }
    include = (queue.created_at_column, queue.updated_at_column)
    return Query(
        "active",
        text,
        params,
        queue.status_column,
        active_statuses(queue),
        index_include=include,
    )


@dataclass(frozen=True)
class FailedPart:
    """One count of the failed query: the jobs of one failed status with retries left or
    exhausted (`capped`: exact up to exact_count_limit), or of one dead status (exact)."""

    role: str  # failed or dead
    exhausted: bool  # failed jobs out of retries (QueueRetriesExhausted counts these)
    cond: sql.Composable  # the WHERE of its rows
    capped: bool


def failed_parts(queue: Queue) -> tuple[list[FailedPart], dict[str, Any]]:
    """The failed query's counts in order, and the parameters their conditions use."""
    status = sql.Identifier(queue.status_column)
    params: dict[str, Any] = {}
    parts: list[FailedPart] = []
    for i, value in enumerate(queue.statuses.failed):
        params[f"f{i}"] = value
        is_failed = sql.SQL("{} = {}").format(status, sql.Placeholder(f"f{i}"))
        if queue.retry_count_column is None:
            parts.append(FailedPart("failed", False, is_failed, True))
            continue
        params["max_retries"] = queue.max_retries
        retry = sql.Identifier(queue.retry_count_column)
        for exhausted, op in ((True, ">="), (False, "<")):
            cond = sql.SQL("{} AND {} {} %(max_retries)s").format(is_failed, retry, sql.SQL(op))
            parts.append(FailedPart("failed", exhausted, cond, True))
    for i, value in enumerate(queue.statuses.dead):
        params[f"d{i}"] = value
        cond = sql.SQL("{} = {}").format(status, sql.Placeholder(f"d{i}"))
        parts.append(FailedPart("dead", False, cond, False))
    return parts, params


def failed_query(queue: Queue) -> Query | None:
    """The failed and dead jobs, one count per status (failed ones split by retries left).

    These rows pile up for as long as nobody clears them, so counting them all on every run
    would make the query O(history). Three things keep it flat:

    - The recommended index `(status, retry_count) WHERE status IN (failed, dead)` holds every
      column the counts read: PostgreSQL answers from the index alone (an index-only scan,
      no table row read while the visibility map is current), and a B-tree stores a repeated
      key once with a list of row pointers (deduplication, PostgreSQL 13+): over a thousand
      failed jobs per 8 kB page.
    - Failed jobs are counted exactly up to `exact_count_limit` (default 1000) per status and
      retries left or exhausted (`LIMIT`); a count that reaches it is replaced by the
      planner's estimate (never below the limit). QueueRetriesExhausted compares the exhausted
      count with a threshold the config keeps below the limit, so it fires exactly as with
      a full count; no alert reads the failed total.
    - Dead jobs are counted in full: QueueDeadLetterGrowing compares the count with its own
      minimum over the last hour, which an estimate (fixed between two ANALYZEs) cannot
      follow. They are meant to be cleared (runbook 003: daily).

    None when the queue maps no failed or dead status.
    """
    parts, params = failed_parts(queue)
    if not parts:
        return None
    table = ident(queue.table)
    counts = []
    for part in parts:
        if part.capped:
            counts.append(
                sql.SQL(
                    "(SELECT count(*) FROM (SELECT 1 FROM {} WHERE {} LIMIT %(cap)s) capped)"
                ).format(table, part.cond)
            )
        else:
            counts.append(sql.SQL("(SELECT count(*) FROM {} WHERE {})").format(table, part.cond))
    params["cap"] = queue.exact_count_limit
    text = sql.SQL("SELECT {}").format(sql.SQL(", ").join(counts))
    keys = (queue.retry_count_column,) if queue.retry_count_column else ()
    return Query(
        "failed",
        text,
        params,
        queue.status_column,
        failed_statuses(queue),
        index_keys=keys,
        index_only=True,
    )


# planner estimates of the counts past the limit are reused this long: they change only with
# ANALYZE and the table's size, and re-planning them every run would cost more than the
# capped counts themselves
ESTIMATE_TTL = 60.0


@dataclass
class Estimates:
    """The planner's estimates of the failed counts past the limit, by part, and when they
    were made (time.monotonic); kept per queue between runs (TableKind)."""

    rows: dict[int, float] = field(default_factory=dict)
    made_at: float = -ESTIMATE_TTL


def estimates_query(queue: Queue, parts: list[FailedPart], params: dict[str, Any]) -> Query:
    """The rows of every capped count, one branch each, for one EXPLAIN: the Append node's
    children carry each branch's estimate."""
    table = ident(queue.table)
    branches = [
        sql.SQL("SELECT 1 FROM {} WHERE {}").format(table, part.cond)
        for part in parts
        if part.capped
    ]
    return Query("failed estimates", sql.SQL(" UNION ALL ").join(branches), params, None)


async def capped_estimates(
    conn: psycopg.AsyncConnection, queue: Queue, parts: list[FailedPart], params: dict[str, Any]
) -> dict[int, float]:
    """The planner's row estimate of each capped part (by index in `parts`)."""
    plan = await explain_plan(conn, estimates_query(queue, parts, params))
    capped = [i for i, part in enumerate(parts) if part.capped]
    if plan is None:
        return {}
    # one branch: its scan is the top node; several: an Append with a child per branch
    nodes = plan.get("Plans", []) if len(capped) > 1 else [plan]
    if plan["Node Type"] != "Append" and len(capped) > 1:
        return {}
    return {i: float(node["Plan Rows"]) for i, node in zip(capped, nodes, strict=False)}


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
        table=ident(queue.table),
        updated=updated,
        cond=_in(status, "t", finished_statuses(queue)),
    )
    params = {
        "window": float(queue.recent_window),
        **_params("c", s.completed),
        **_params("f", s.failed),
        **_params("t", finished_statuses(queue)),
    }
    # not covering: it reads the window's rows only, and an INCLUDE (status) would make an
    # index as large as the table's finished history much larger still (docs/queues.md)
    return Query("recent", text, params, queue.updated_at_column, finished_statuses(queue))


def completed_query(queue: Queue) -> Query:
    """The completed rows: counted when count_terminal is exact (O(table) by nature), or the
    planner's row estimate of this query (EXPLAIN, no execution) when it is estimate."""
    status = sql.Identifier(queue.status_column)
    what = sql.SQL("1") if queue.count_terminal == "estimate" else sql.SQL("count(*)")
    text = sql.SQL("SELECT {} FROM {} WHERE {}").format(
        what, ident(queue.table), _in(status, "c", queue.statuses.completed)
    )
    return Query("completed", text, _params("c", queue.statuses.completed), None)


def dead_letter_query(queue: Queue) -> Query | None:
    if queue.dead_letter_table is None:
        return None
    text = sql.SQL("SELECT count(*) FROM {}").format(ident(queue.dead_letter_table))
    return Query("dead_letter", text, {}, None)


def queries(queue: Queue) -> list[Query]:
    """Every query a scrape of the queue runs, in order (for the doctor and the bench)."""
    out = [active_query(queue)]
    failed = failed_query(queue)
    if failed is not None:
        out.append(failed)
    out.append(recent_query(queue))
    if queue.count_terminal != "off" and queue.statuses.completed:
        out.append(completed_query(queue))
    dlq = dead_letter_query(queue)
    if dlq is not None:
        out.append(dlq)
    return out


async def measure(
    conn: psycopg.AsyncConnection, q: Queue, estimates: Estimates | None = None
) -> Reading:
    """The queue's reading: the active and failed queries summed into roles, the recent
    query, the completed count or estimate and the dead letters. `estimates` keeps the
    planner's estimates of failed counts past the limit between runs (ESTIMATE_TTL)."""
    s = q.statuses
    role = s.role_of()
    totals = dict.fromkeys(("pending", "processing", "failed", "dead"), 0.0)
    oldest = stuck = exhausted = 0.0
    for status, count, age, stale in await run(conn, active_query(q)):
        r = role.get(status)
        if r is None:  # cannot happen: the WHERE only selects mapped values
            continue
        totals[r] += count
        if r == "pending":
            oldest = max(oldest, float(age or 0))
        elif r == "processing":
            stuck += stale
    failed_q = failed_query(q)
    estimated = False
    if failed_q is not None:
        parts, params = failed_parts(q)
        (counts,) = await run(conn, failed_q)
        over = [p.capped and c >= q.exact_count_limit for p, c in zip(parts, counts, strict=True)]
        estimated = any(over)
        if estimated:
            estimates = estimates or Estimates()
            if time.monotonic() - estimates.made_at >= ESTIMATE_TTL:
                estimates.rows = await capped_estimates(conn, q, parts, params)
                estimates.made_at = time.monotonic()
        for i, (part, count) in enumerate(zip(parts, counts, strict=True)):
            if over[i] and estimates is not None:
                count = max(count, round(estimates.rows.get(i, 0.0)))
            totals[part.role] += count
            if part.exhausted:
                exhausted += count
    jobs = {r: totals[r] for r in ("pending", "processing", "failed")}
    if s.dead:
        jobs["dead"] = totals["dead"]
    done, failed = (await run(conn, recent_query(q)))[0]
    reading = Reading(jobs, oldest, stuck, exhausted, {"completed": done, "failed": failed})
    reading.failed_estimated = estimated if s.failed else None
    if q.count_terminal == "exact" and s.completed:
        jobs["completed"] = (await run(conn, completed_query(q)))[0][0]
    elif q.count_terminal == "estimate" and s.completed:
        reading.completed_estimate = await estimate_rows(conn, completed_query(q))
    dlq = dead_letter_query(q)
    if dlq is not None or s.dead:
        reading.dead_letter = totals["dead"] + ((await run(conn, dlq))[0][0] if dlq else 0)
    return reading


class TableKind(QueueKind):
    """A `table:` item: one jobs table, one queue. Its doctor checks are in
    exporter/doctor.py (they predate the kinds)."""

    key = "table"
    item: Queue

    async def check(self, conn: psycopg.AsyncConnection, member: Member) -> list[str]:
        _, problems = await check_queue(conn, self.target, self.item)
        return problems

    def __init__(self, target: Target, item: Queue) -> None:
        super().__init__(target, item)
        self.estimates = Estimates()

    async def measure(self, conn: psycopg.AsyncConnection, member: Member) -> Reading:
        return await measure(conn, self.item, self.estimates)
