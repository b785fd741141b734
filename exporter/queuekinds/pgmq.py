"""pgmq queues (Supabase Queues): the `pgmq:` kind.

pgmq keeps each queue in two tables of the `pgmq` schema, named after the queue lowercased:
`pgmq.q_<name>` (msg_id, read_ct, enqueued_at, last_read_at from pgmq 1.10, vt, message,
headers) and the archive `pgmq.a_<name>` (the same plus archived_at, indexed), listed in
`pgmq.meta` (queue_name, is_partitioned, is_unlogged, created_at). Schema followed: pgmq 1.13.1.

pgmq has no status column; a message's role follows from its visibility time and read count
(docs/queues.md, "pgmq"), counted in one pass over the queue table -- O(messages in the queue),
never O(archive):

    pending     vt <= now() and read_ct = 0     visible, never read
    failed      vt <= now() and read_ct > 0     visible again after a read: awaiting retry
    processing  vt >  now() and read_ct > 0     invisible after a read
    scheduled   vt >  now() and read_ct = 0     sent with a delay, not yet visible

Retries exhausted: read_ct > max_reads (in any role). Stuck: processing and last read more than
stuck_after ago (without last_read_at: invisible for more than stuck_after from now). Completed:
the archive's rows, estimated from planner statistics; recent completed: archive rows within
recent_window (the archived_at index), or with `completed_by: delete` the growth of the queue
table's n_tup_del over the window. Recent failed: messages that became visible again after a
read within the window, plus dead letters sent within it. Dead letters: the messages of the
dead_letter_queue.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from exporter.config import PgmqQueue
from exporter.queuekinds.base import (
    Member,
    Query,
    QueueConfigError,
    QueueKind,
    Reading,
    TableInfo,
    estimate_rows,
    run,
    table_info,
    unreadable,
)

if TYPE_CHECKING:
    from exporter.doctor import Report

log = logging.getLogger("exporter.queuekinds.pgmq")

SCHEMA = "pgmq"
TIMESTAMPTZ = "timestamp with time zone"
# the columns the queries read, and the type pgmq gives them
QUEUE_COLUMNS = {"read_ct": "N", "enqueued_at": "D", "vt": "D"}
ARCHIVE_COLUMNS = {"archived_at": "D"}
# how many samples of the delete counter a queue keeps per window (bounded whatever the
# interval and window)
MAX_DELETE_SAMPLES = 1000

SCHEMA_SQL = """
SELECT n.oid IS NOT NULL,
       COALESCE(has_schema_privilege(n.oid, 'USAGE'), false),
       (SELECT has_table_privilege(c.oid, 'SELECT') FROM pg_class c
        WHERE c.relnamespace = n.oid AND c.relname = 'meta')
FROM (SELECT NULL) AS one
LEFT JOIN pg_namespace n ON n.nspname = 'pgmq'
"""
# pgmq.format_table_name: lower(prefix || '_' || queue_name), in PostgreSQL's lower()
META_SQL = """
SELECT queue_name::text, is_partitioned, is_unlogged,
       lower('q_' || queue_name), lower('a_' || queue_name)
FROM pgmq.meta
"""


@dataclass(frozen=True)
class QueueTables:
    """Where one pgmq queue lives, as the catalog check found it."""

    name: str
    queue: str  # pgmq.q_<name>
    archive: str  # pgmq.a_<name>
    partitioned: bool
    unlogged: bool
    last_read_at: bool = False  # pgmq >= 1.10


def _qualified(table: str) -> sql.Identifier:
    return sql.Identifier(SCHEMA, table.split(".", 1)[1])


# --- the queries ------------------------------------------------------------------------


def state_query(t: QueueTables, q: PgmqQueue) -> Query:
    """Every role's count, the oldest pending age, stuck, exhausted and recently failed
    messages: one pass over the queue table."""
    if t.last_read_at:
        stale = sql.SQL("last_read_at < now() - make_interval(secs => %(stuck_after)s)")
    else:  # no read time: held invisible for longer than stuck_after from now
        stale = sql.SQL("vt > now() + make_interval(secs => %(stuck_after)s)")
    text = sql.SQL(
        "SELECT count(*) FILTER (WHERE vt <= now() AND read_ct = 0),"
        " count(*) FILTER (WHERE vt > now() AND read_ct > 0),"
        " count(*) FILTER (WHERE vt <= now() AND read_ct > 0),"
        " count(*) FILTER (WHERE vt > now() AND read_ct = 0),"
        " COALESCE(GREATEST(EXTRACT(EPOCH FROM now() - min(enqueued_at)"
        " FILTER (WHERE vt <= now() AND read_ct = 0)), 0), 0)::float8,"
        " count(*) FILTER (WHERE vt > now() AND read_ct > 0 AND {stale}),"
        " count(*) FILTER (WHERE read_ct > %(max_reads)s),"
        " count(*) FILTER (WHERE read_ct > 0 AND vt <= now()"
        " AND vt > now() - make_interval(secs => %(window)s))"
        " FROM {table}"
    ).format(stale=stale, table=_qualified(t.queue))
    params = {
        "stuck_after": float(q.stuck_after),
        "max_reads": q.max_reads,
        "window": float(q.recent_window),
    }
    return Query("state", text, params, None)


def archived_query(t: QueueTables, q: PgmqQueue) -> Query:
    """Messages archived within recent_window: a range of pgmq's archived_at index."""
    text = sql.SQL(
        "SELECT count(*) FROM {} WHERE archived_at >= now() - make_interval(secs => %(window)s)"
    ).format(_qualified(t.archive))
    return Query("archived", text, {"window": float(q.recent_window)}, "archived_at")


def archive_estimate_query(t: QueueTables) -> Query:
    """The archive's rows: EXPLAINed for the planner's estimate, never run."""
    return Query(
        "archive_estimate", sql.SQL("SELECT 1 FROM {}").format(_qualified(t.archive)), {}, None
    )


def deletes_query(t: QueueTables) -> Query:
    """Rows ever deleted from the queue table (pgmq.delete, pop and archive all delete), summed
    over its partitions: the statistics counter, O(partitions)."""
    text = sql.SQL(
        "SELECT COALESCE(sum(s.n_tup_del), 0)::float8 FROM pg_stat_all_tables s"
        " WHERE s.relid = %(rel)s::regclass"  # pg_partition_tree is empty for a plain table
        " OR s.relid IN (SELECT relid FROM pg_partition_tree(%(rel)s::regclass))"
    )
    rel = f'{SCHEMA}."{t.queue.split(".", 1)[1]}"'
    return Query("deletes", sql.Composed([text]), {"rel": rel}, None)


def dead_letter_query(dlq: QueueTables, q: PgmqQueue) -> Query:
    """The dead-letter queue's messages, and those sent to it within recent_window."""
    text = sql.SQL(
        "SELECT count(*), count(*) FILTER"
        " (WHERE enqueued_at >= now() - make_interval(secs => %(window)s)) FROM {}"
    ).format(_qualified(dlq.queue))
    return Query("dead_letter", text, {"window": float(q.recent_window)}, None)


def metrics_query(t: QueueTables) -> Query:
    """What pgmq.metrics(name) reads (its documented behaviour), for the bench: every message
    counted, visible ones too, the oldest and newest enqueued_at, and the id sequence."""
    seq = t.queue.split(".", 1)[1] + "_msg_id_seq"
    text = sql.SQL(
        "SELECT s.queue_length, s.visible, s.newest, s.oldest,"
        " (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {seq})"
        " FROM (SELECT count(*) AS queue_length,"
        " count(*) FILTER (WHERE vt <= now()) AS visible,"
        " EXTRACT(EPOCH FROM now() - max(enqueued_at))::int AS newest,"
        " EXTRACT(EPOCH FROM now() - min(enqueued_at))::int AS oldest FROM {table}) s"
    ).format(seq=sql.Identifier(SCHEMA, seq), table=_qualified(t.queue))
    return Query("pgmq.metrics", text, {}, None)


def queries(t: QueueTables, q: PgmqQueue, dlq: QueueTables | None = None) -> list[Query]:
    """Every query a scrape of the queue runs (the estimate is only EXPLAINed)."""
    out = [state_query(t, q)]
    if q.completed_by == "archive":
        out += [archived_query(t, q), archive_estimate_query(t)]
    else:
        out.append(deletes_query(t))
    if dlq is not None:
        out.append(dead_letter_query(dlq, q))
    return out


# --- the catalog check ------------------------------------------------------------------


async def schema_problem(conn: psycopg.AsyncConnection, where: str) -> str | None:
    """Why pgmq.meta cannot be read (`where` is the config path and key), or None."""
    cur = await conn.execute(SCHEMA_SQL, prepare=False)
    exists, usage, meta = await cur.fetchone()  # type: ignore[misc]
    if not exists:
        return f'{where}: schema "pgmq" does not exist in this database (is pgmq installed?)'
    if not usage:
        return f'{where}: permission denied for schema "pgmq"'
    if meta is None:
        return f'{where}: table "pgmq.meta" does not exist'
    if not meta:
        return f'{where}: permission denied: cannot SELECT from "pgmq.meta"'
    return None


async def list_queues(conn: psycopg.AsyncConnection) -> dict[str, tuple[bool, bool, str, str]]:
    """pgmq.meta: queue name -> (partitioned, unlogged, queue table, archive table)."""
    cur = await conn.execute(META_SQL, prepare=False)
    return {r[0]: (bool(r[1]), bool(r[2]), r[3], r[4]) for r in await cur.fetchall()}


def column_problems(where: str, table: str, info: TableInfo, wanted: dict[str, str]) -> list[str]:
    out = []
    for col, category in wanted.items():
        c = info.columns.get(col)
        if c is None:
            out.append(f'{where}: column "{col}" does not exist in table "{table}"')
        elif c.category != category or (category == "D" and c.type != TIMESTAMPTZ):
            out.append(f'{where}: column "{col}" of table "{table}" has type {c.type}')
        elif not c.readable:
            out.append(f'{where}: permission denied: cannot SELECT column "{col}" of "{table}"')
    return out


async def find_queue(
    conn: psycopg.AsyncConnection,
    where: str,
    name: str,
    meta: dict[str, tuple[bool, bool, str, str]],
    archive: bool,
) -> tuple[QueueTables | None, list[str]]:
    """The queue's tables, checked in the catalog, and what keeps them from being read."""
    if name not in meta:
        return None, [f'{where}: queue "{name}" does not exist in pgmq.meta']
    partitioned, unlogged, qt, at = meta[name]
    queue, problems = f"{SCHEMA}.{qt}", []
    info = await table_info(conn, queue)
    problem = unreadable(where, queue, info)
    if problem is not None or info is None:
        return None, [problem or f'{where}: table "{queue}" does not exist']
    problems += column_problems(where, queue, info, QUEUE_COLUMNS)
    tables = QueueTables(
        name, queue, f"{SCHEMA}.{at}", partitioned, unlogged, "last_read_at" in info.columns
    )
    if archive:
        ainfo = await table_info(conn, tables.archive)
        problem = unreadable(where, tables.archive, ainfo)
        if problem is not None:
            problems.append(problem)
        elif ainfo is not None:
            problems += column_problems(where, tables.archive, ainfo, ARCHIVE_COLUMNS)
    return tables, problems


class WindowGrowth:
    """The growth of an ever-rising counter (n_tup_del) over a sliding window, from samples
    taken run by run: the current value minus the newest sample at least one window old (the
    oldest one while the exporter has run for less than a window). None on the first sample:
    there is nothing to compare with yet. A counter that went down (statistics reset) starts
    over. Samples are kept at least window / MAX_DELETE_SAMPLES apart, so at most about
    MAX_DELETE_SAMPLES are kept whatever the interval."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.samples: deque[tuple[float, float]] = deque()

    def update(self, now: float, value: float) -> float | None:
        samples = self.samples
        if samples and value < samples[-1][1]:
            samples.clear()
        while len(samples) > 1 and samples[1][0] <= now - self.window:
            samples.popleft()
        base = samples[0][1] if samples else None
        if not samples or now - samples[-1][0] >= self.window / MAX_DELETE_SAMPLES:
            samples.append((now, value))
        return None if base is None else value - base


# --- the kind ---------------------------------------------------------------------------


class PgmqKind(QueueKind):
    """A `pgmq:` item: one named queue, or every queue in pgmq.meta not configured by name."""

    key = "pgmq"
    item: PgmqQueue

    def __init__(self, target: Any, item: PgmqQueue) -> None:
        super().__init__(target, item)
        # what the last catalog check found, per queue name (the queries need the tables)
        self.tables: dict[str, tuple[QueueTables, QueueTables | None]] = {}
        # (monotonic time, n_tup_del) samples per queue for completed_by: delete
        self._deletes: dict[str, WindowGrowth] = {}
        self._left_out: int | None = None  # queues a wildcard left out, as last logged

    def excluded(self) -> set[str]:
        """What a wildcard skips: queues configured by name, their dead-letter queues, and
        names another item of the target already uses as its label."""
        out: set[str] = set()
        for q in self.target.queues:
            if isinstance(q, PgmqQueue) and not q.wildcard:
                out |= {q.pgmq, *([q.dead_letter_queue] if q.dead_letter_queue else [])}
            if q.label is not None:
                out.add(q.label)
        return out

    async def members(self, conn: psycopg.AsyncConnection) -> list[Member]:
        q = self.item
        if not q.wildcard:
            return [Member(q.label or q.pgmq, q, q.pgmq)]
        problem = await schema_problem(conn, f"{self.path}.pgmq")
        if problem is not None:
            raise QueueConfigError(problem)
        names = sorted(n for n in await list_queues(conn) if n not in self.excluded())
        taken, left = names[: q.max_queues], len(names) - q.max_queues
        if max(left, 0) != self._left_out:
            self._left_out = max(left, 0)
            if left > 0:
                log.warning(
                    "pgmq queues left out: more than max_queues in pgmq.meta",
                    extra={
                        "target": self.target.name,
                        "item": self.path,
                        "left_out": left,
                        "max_queues": q.max_queues,
                        "first_left_out": names[q.max_queues],
                    },
                )
        return [Member(n, q, n, dynamic=True) for n in taken]

    def where(self, member: Member) -> str:
        if member.dynamic:
            return f'{self.path}.pgmq (queue "{member.ref}")'
        return f"{self.path}.pgmq"

    async def check(self, conn: psycopg.AsyncConnection, member: Member) -> list[str]:
        where = self.where(member)
        problem = await schema_problem(conn, where)
        if problem is not None:
            return [problem]
        meta = await list_queues(conn)
        archive = self.item.completed_by == "archive"
        tables, problems = await find_queue(conn, where, member.ref, meta, archive)
        dlq = None
        if self.item.dead_letter_queue is not None:
            dlq, found = await find_queue(
                conn, f"{self.path}.dead_letter_queue", self.item.dead_letter_queue, meta, False
            )
            problems += found
        if tables is not None and not problems:
            self.tables[member.ref] = (tables, dlq)
        return problems

    async def deleted_within(self, conn: psycopg.AsyncConnection, t: QueueTables) -> float | None:
        """Rows deleted from the queue table within recent_window (see WindowGrowth)."""
        (value,) = (await run(conn, deletes_query(t)))[0]
        growth = self._deletes.setdefault(t.name, WindowGrowth(self.item.recent_window))
        return growth.update(time.monotonic(), float(value))

    async def measure(self, conn: psycopg.AsyncConnection, member: Member) -> Reading:
        q = self.item
        t, dlq = self.tables[member.ref]
        (pending, processing, failed, scheduled, oldest, stuck, exhausted, retried) = (
            await run(conn, state_query(t, q))
        )[0]
        jobs = {
            "pending": pending,
            "processing": processing,
            "failed": failed,
            "scheduled": scheduled,
        }
        reading = Reading(jobs, float(oldest), stuck, exhausted, None)
        if q.completed_by == "archive":
            (done,) = (await run(conn, archived_query(t, q)))[0]
            reading.completed_estimate = await estimate_rows(conn, archive_estimate_query(t))
        else:
            done = await self.deleted_within(conn, t)
        dead_recent = 0
        if dlq is not None:
            reading.dead_letter, dead_recent = (await run(conn, dead_letter_query(dlq, q)))[0]
        if done is not None:
            reading.recent = {"completed": done, "failed": retried + dead_recent}
        return reading

    # --- doctor -------------------------------------------------------------------------

    async def doctor(self, conn: psycopg.AsyncConnection, report: Report) -> None:
        """pgmq installed and readable, the queue(s) in pgmq.meta with readable tables, the
        archive's archived_at index, the dead-letter queue; each fix printed as SQL."""
        role = await _one(conn, "SELECT quote_ident(current_user)")
        where = f"{self.path}.pgmq"
        problem = await schema_problem(conn, where)
        if problem is not None:
            report.finding(problem, indent=2, fix=_schema_fix(problem, role))
            return
        meta = await list_queues(conn)
        members = await self.members(conn)
        if self.item.wildcard:
            report.ok(
                f"pgmq.meta lists {len(meta)} queue(s); {len(members)} not configured by name "
                "are collected",
                indent=2,
            )
            if self._left_out:
                report.note(
                    f"{self._left_out} more queue(s) left out by max_queues "
                    f"({self.item.max_queues}): raise it or configure them by name",
                    indent=2,
                )
        for m in members:
            problems = await self.check(conn, m)
            for p in problems:
                report.finding(p, indent=2, fix=await _grant_fix(conn, p, role))
            if problems:
                continue
            t, dlq = self.tables[m.ref]
            how = ", ".join(
                w for w, on in (("partitioned", t.partitioned), ("unlogged", t.unlogged)) if on
            )
            report.ok(
                f"pgmq queue {m.ref}: {t.queue}, archive {t.archive}{f' ({how})' if how else ''}",
                indent=2,
            )
            if not t.last_read_at:
                report.note(
                    f"{t.queue} has no last_read_at (pgmq before 1.10): a processing message "
                    "counts as stuck when it stays invisible for more than stuck_after from now",
                    indent=2,
                )
            if t.unlogged:
                report.note("the queue table is unlogged: a crash or failover empties it", indent=2)
            if self.item.completed_by == "archive":
                await _check_archive_index(conn, t, report)
            else:
                report.note(
                    "completed_by: delete: throughput is the growth of the queue table's "
                    "n_tup_del (deleted, popped or archived messages), from the second run on",
                    indent=2,
                )
            if dlq is not None:
                (n, _) = (await run(conn, dead_letter_query(dlq, self.item)))[0]
                report.note(
                    f"dead-letter queue {dlq.name} holds {n} message(s); it is counted in full "
                    "every run, so keep it cleared (runbook 003: daily)",
                    indent=2,
                )


ARCHIVE_INDEX_SQL = """
SELECT EXISTS (
    SELECT FROM pg_index i
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
    WHERE i.indrelid = to_regclass(%s) AND a.attname = 'archived_at' AND i.indisvalid)
"""


async def _one(conn: psycopg.AsyncConnection, query: Any, params: Any = None) -> Any:
    cur = await conn.execute(query, params, prepare=False)
    row = await cur.fetchone()
    return row[0] if row else None


async def _check_archive_index(
    conn: psycopg.AsyncConnection, t: QueueTables, report: Report
) -> None:
    rel = f"pgmq.{await _one(conn, 'SELECT quote_ident(%s)', (t.archive.split('.', 1)[1],))}"
    if await _one(conn, ARCHIVE_INDEX_SQL, (rel,)):
        report.ok(f"recent completed: an index on {t.archive} (archived_at) bounds it", indent=2)
        return
    how = "CREATE INDEX" if t.partitioned else "CREATE INDEX CONCURRENTLY"
    report.finding(
        f"no index on {t.archive} (archived_at), which pgmq creates: counting recently "
        "archived messages reads the whole archive",
        indent=2,
        fix=f"{how} ON {rel} (archived_at);",
    )


def _schema_fix(problem: str, role: str) -> str | None:
    if "does not exist in this database" in problem:
        return "CREATE EXTENSION pgmq;  -- or point the target's DSN at the database that has it"
    if "schema" in problem:
        return f"GRANT USAGE ON SCHEMA pgmq TO {role};"
    if "permission denied" in problem:
        return f"GRANT SELECT ON pgmq.meta TO {role};"
    return None


async def _grant_fix(conn: psycopg.AsyncConnection, problem: str, role: str) -> str | None:
    """The GRANT for a permission problem about a pgmq table."""
    m = re.search(r'cannot SELECT (?:column "[^"]+" of|from) "pgmq\.([^"]+)"', problem)
    if m is None:
        return None
    table = f"pgmq.{await _one(conn, 'SELECT quote_ident(%s)', (m.group(1),))}"
    return (
        f"GRANT SELECT ON {table} TO {role};\n"
        f"-- or every queue at once: GRANT SELECT ON ALL TABLES IN SCHEMA pgmq TO {role};"
    )
